"""The README's main job, end to end, at a tiny size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from lightning_nas.cli import main
from lightning_nas.export import load_module
from lightning_nas.samplers import is_rejection


def test_demo_command_trains_searches_exports_and_reloads(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--trials", "5", "--width", "8"]) == 0
    printed = capsys.readouterr().out
    for expected in ("Search space", "Pareto front", "exported best", f"lightning-nas dashboard {out / 'nas.db'}"):
        assert expected in printed
    hint = next(line for line in printed.splitlines() if line.startswith("Open the study: "))
    executable = hint.removeprefix("Open the study: ").split(" dashboard ")[0]
    assert Path(executable).is_file()  # the printed command runs without activating the environment
    study = optuna.load_study(study_name="digits-demo", storage=f"sqlite:///{out / 'nas.db'}")
    assert len([t for t in study.trials if not is_rejection(t)]) == 5
    exported = load_module(out / "best_subnet")
    full_params = study.trials[0].user_attrs["params"]  # trial 0 is the full network
    assert sum(p.numel() for p in exported.parameters()) <= 0.25 * full_params

    # Every load instruction the demo prints runs verbatim in a fresh interpreter, in another directory.
    lines = printed.split("Load it in Python")[1].split("\n")[1:]
    snippets = [line.strip() for line in lines[: lines.index(next(x for x in lines if not x.startswith("  ")))]]
    assert len(snippets) == 2
    check = "\nassert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)\nprint('loaded')"
    for snippet in snippets:
        run = subprocess.run(
            [sys.executable, "-c", snippet + "\nimport torch" + check],
            capture_output=True,
            text=True,
            cwd=tmp_path.parent,
            timeout=300,
        )
        assert run.returncode == 0 and run.stdout.strip() == "loaded", (snippet, run.stderr[-2000:])


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
