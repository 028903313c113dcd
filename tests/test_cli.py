"""The ``lightning-nas`` command: instant help with defaults, one-line errors, up-front argument checks."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_nas import cli
from lightning_nas.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_building_the_parser_imports_no_torch() -> None:
    probe = (
        "import sys; from lightning_nas.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'optuna', 'datasets') if m in sys.modules))"
    )
    result = _run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [[], ["compress"], ["demo"], ["dashboard"]])
def test_help_is_instant_plain_text_and_shows_defaults(command: list[str]) -> None:
    start = time.perf_counter()
    result = _run("-m", "lightning_nas.cli", *command, "--help")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 10  # an interpreter start on a busy machine; importing torch alone takes longer here
    assert "``" not in result.stdout and ":func:" not in result.stdout and ":class:" not in result.stdout
    if command == ["compress"]:
        for shown in ("(default: 30)", "(default: 0.0001)", "(default: instatune)", "--train", "--text-pair-column"):
            assert shown in result.stdout, shown


def test_every_option_has_help_and_its_default_is_shown() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = "".join(sub.format_help().split())  # wrapped lines, joined
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            shows_default = action.default in (None, False, argparse.SUPPRESS) or "default" in action.help
            assert shows_default or f"(default:{action.default})".replace(" ", "") in text, (name, action.dest)


def test_task_choices_come_from_the_task_registry() -> None:
    from lightning_nas.compress import TASKS

    parser = build_parser()
    args = parser.parse_args(["compress", "minilm"])
    # No --task: compress infers it from the model's config (see test_compress / test_causal_lm).
    assert args.task is None and {"sequence-classification", "causal-lm"} <= set(TASKS)
    assert parser.parse_args(["compress", "minilm", "--task", "causal-lm"]).task == "causal-lm"
    with pytest.raises(SystemExit):
        parser.parse_args(["compress", "minilm", "--task", "no-such-task"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--epochs", "0"], "argument --epochs: must be > 0, got 0"),
        (["demo", "--epochs", "-1"], "argument --epochs: must be > 0, got -1"),
        (["demo", "--width", "0"], "argument --width: must be > 0, got 0"),
        (["demo", "--width", "-4"], "argument --width: must be > 0, got -4"),
        (["demo", "--trials", "0"], "argument --trials: must be > 0, got 0"),
        (["demo", "--max-params", "0.5x"], "argument --max-params: expected a fraction, got '0.5x'"),
        (["compress", "minilm", "--max-params", "2"], "argument --max-params: must be a fraction in (0, 1], got 2"),
        (["compress", "minilm", "--importance-batches", "-1"], "argument --importance-batches: must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1] and "Traceback" not in err


def test_run_demo_checks_its_arguments_before_training(tmp_path) -> None:
    from lightning_nas.demo import run_demo

    for kwargs, message in [
        ({"epochs": 0}, "epochs must be > 0"),
        ({"n_trials": -1}, "n_trials must be > 0"),
        ({"width": 0}, "width must be > 0"),
        ({"max_params": 1.5}, r"max_params is a fraction in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_demo(str(tmp_path / "out"), **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="which is a file"):
        run_demo(str(tmp_path / "file" / "out"))
    assert not (tmp_path / "out").exists()


def test_errors_are_one_line_without_traceback_unless_debug(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nothing.db")
    assert main(["dashboard", missing]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == f"lightning-nas: error: no study storage at {missing}; pass a storage URL or the path of a nas.db file"
    )
    with pytest.raises(FileNotFoundError):
        main(["dashboard", missing, "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "dashboard", missing])


def test_an_unexpected_failure_exits_1_and_points_to_debug(monkeypatch, capsys) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(cli, "_demo", broken)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "lightning-nas: error: RuntimeError: something broke (rerun with --debug for the traceback)"


def test_the_command_line_script_reports_errors_the_same_way(tmp_path) -> None:
    result = _run("-m", "lightning_nas.cli", "compress", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"lightning-nas: error: {tmp_path} is not a Hugging Face model directory (no config.json)"
    ]
    assert not (tmp_path / "out").exists()
