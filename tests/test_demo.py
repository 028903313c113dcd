"""The README's main job, end to end, at a tiny size."""

from __future__ import annotations

from pathlib import Path

import optuna

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
