"""optuna-dashboard serves the studies the project writes (real server on loopback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
import torch

from lightning_nas import Supernet
from lightning_nas.cli import main
from lightning_nas.dashboard import resolve_storage
from lightning_nas.search import one_shot_search
from tests.models import MLP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_serves_a_search_study(tmp_path) -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))
    db = tmp_path / "nas.db"
    one_shot_search(net, lambda arch: arch["fc1"] / 64, n_trials=5, storage=f"sqlite:///{db}", study_name="mlp-search")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lightning_nas.cli", "dashboard", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180  # a cold start imports torch and optuna
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies", deadline))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["mlp-search"]
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline))
        assert detail["objective_names"] == ["metric", "params"]
        assert len(detail["trials"]) == 5
        assert any(attr["key"] == "arch" for attr in detail["trials"][0]["user_attrs"])
        assert b"<html" in _get(f"http://127.0.0.1:{port}/dashboard", deadline).lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_storage_paths_resolve_and_missing_ones_are_named(tmp_path, capsys) -> None:
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'nas.db'}")
    assert resolve_storage(str(tmp_path)) == f"sqlite:///{(tmp_path / 'nas.db').resolve()}"
    assert resolve_storage("postgresql://db/x") == "postgresql://db/x"
    with pytest.raises(FileNotFoundError, match="no study storage"):  # --debug: the exception itself
        main(["dashboard", str(tmp_path / "missing.db"), "--debug"])
    assert main(["dashboard", str(tmp_path / "missing.db")]) == 2  # the command: one line, no traceback
    error = capsys.readouterr().err
    assert "lightning-nas: error: no study storage" in error and "Traceback" not in error
