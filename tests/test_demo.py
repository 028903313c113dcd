"""The README's main job, end to end, at a tiny size."""

from __future__ import annotations

import optuna
import pytest

from lightning_nas.cli import main
from lightning_nas.export import load_module
from lightning_nas.samplers import is_rejection


def test_demo_command_trains_searches_exports_and_reloads(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--trials", "5", "--width", "8"]) == 0
    printed = capsys.readouterr().out
    for expected in ("Search space", "Pareto front", "exported best", f"optuna-dashboard sqlite:///{out / 'nas.db'}"):
        assert expected in printed
    study = optuna.load_study(study_name="digits-demo", storage=f"sqlite:///{out / 'nas.db'}")
    assert len([t for t in study.trials if not is_rejection(t)]) == 5
    exported = load_module(out / "best_subnet")
    full_params = study.trials[0].user_attrs["params"]  # trial 0 is the full network
    assert sum(p.numel() for p in exported.parameters()) <= 0.25 * full_params


def test_demo_resumes_from_its_directory_and_refuses_another_network(tmp_path, capsys) -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_nas.demo import run_demo

    out = tmp_path / "demo"
    run_demo(str(out), epochs=1, n_trials=3, width=4)
    last = out / "checkpoints" / "last.ckpt"
    assert last.exists()
    stamp = last.stat().st_mtime_ns
    run_demo(str(out), epochs=1, n_trials=4, width=4)  # resumed: training is done, the search tops up
    assert last.stat().st_mtime_ns == stamp
    study = optuna.load_study(study_name="digits-demo", storage=f"sqlite:///{out / 'nas.db'}")
    assert len([t for t in study.trials if not is_rejection(t)]) == 4
    with pytest.raises(MisconfigurationException, match=r"searches something else \(dimension 'stem.0'"):
        run_demo(str(out), epochs=1, n_trials=4, width=8)
    assert last.stat().st_mtime_ns == stamp  # refused before training
