"""Issue 12, item 9: every bad input a new user tried gets a one-line error naming the wrong thing, before any work.

One table, every case listed once. ``_HERE`` holds the cases no other test checks, run below on real components;
``_ELSEWHERE`` points each remaining case of the issue at the test (and, for tables, the row) that checks it, and
:func:`test_every_case_listed_elsewhere_is_still_checked_there` fails if that test or row disappears.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_nas import Supernet
from lightning_nas.callbacks import OneShotSearch
from lightning_nas.cli import main
from lightning_nas.export import export_subnet
from lightning_nas.search import one_shot_search
from tests.models import MLP


@dataclass(frozen=True)
class Case:
    """A bad input: ``call(tmp_path)`` must raise ``error`` whose one-line message matches ``message``."""

    id: str
    call: Callable[[Path], Any]
    error: type[BaseException]
    message: str
    nothing_done: Callable[[Path], bool] = lambda tmp_path: not any(tmp_path.iterdir())


def _net() -> Supernet:
    return Supernet(MLP(), example_input=torch.randn(2, 10))


_MADE: dict[Path, Any] = {}  # what a row's call built, by its work directory, for the row's "nothing done" check


def _set_arch(arch: dict) -> Callable[[Path], Any]:
    def call(tmp_path: Path) -> None:
        _MADE[tmp_path] = net = _net()
        net.set_arch(arch)

    return call


def _arch_unchanged(tmp_path: Path) -> bool:
    net = _MADE.pop(tmp_path)
    return net.arch == net.max_arch() and not any(tmp_path.iterdir())


def _nan_search(tmp_path: Path) -> None:
    one_shot_search(_net(), lambda arch: math.nan, n_trials=3)  # fewer trials than max_nan_trials=5


def _unlogged_metric(tmp_path: Path) -> None:
    import lightning as L

    from lightning_nas.callbacks import SupernetCallback
    from lightning_nas.demo import DigitsClassifier, DigitsDataModule

    search = OneShotSearch(metric="never_logged", n_trials=2, export_dir=False)
    _MADE[tmp_path] = trainer = L.Trainer(
        callbacks=[SupernetCallback(module="model"), search],
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,  # no sanity check: the first validation is the first chance to miss the metric
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DigitsClassifier(width=4, hidden=8, blocks=1), DigitsDataModule(batch_size=64))


def _only_the_first_epoch_ran(tmp_path: Path) -> bool:
    trainer = _MADE.pop(tmp_path)
    return trainer.global_step == 1 and trainer.current_epoch == 0  # of max_epochs=3, one batch each


def _dashboard_on(tmp_path: Path) -> int:
    (tmp_path / "notes.txt").write_text("not a database")
    code = main(["dashboard", str(tmp_path / "notes.txt")])
    if code != 2:
        raise AssertionError(f"exit status {code}")
    raise SystemExit(code)


_HERE = [
    # A width that is not an integer was truncated (5.9 -> 5): a sub-network nobody asked for.
    Case(
        "set_arch-not-an-integer",
        _set_arch({"fc2": 12, "fc1": 5.9}),  # the valid fc2 is not applied either
        ValueError,
        r"value 5.9 for dimension 'fc1' is not an integer",
        _arch_unchanged,
    ),
    Case(
        "set_arch-a-string",
        _set_arch({"fc1": "8"}),
        ValueError,
        r"value '8' for dimension 'fc1' is not an integer",
        _arch_unchanged,
    ),
    Case(
        "set_arch-a-bool",
        _set_arch({"fc1": True}),
        ValueError,
        r"value True for dimension 'fc1' is not an integer",
        _arch_unchanged,
    ),
    Case(
        "extract-not-an-integer",
        lambda tmp_path: _net().extract({"fc1": 5.9}),
        ValueError,
        r"value 5.9 for dimension 'fc1' is not an integer",
    ),
    Case(
        "export_subnet-not-an-integer",
        lambda tmp_path: export_subnet(_net(), tmp_path / "export", {"fc1": 5.9}),
        ValueError,
        r"value 5.9 for dimension 'fc1' is not an integer",
    ),
    Case(
        "metric-always-nan-in-fewer-trials-than-the-stop",
        _nan_search,
        ValueError,
        r"the metric 'metric' was not finite in 3 consecutive trials \(last: the metric of .* is nan\)",
    ),
    Case(
        "metric-never-logged-without-sanity-check",
        _unlogged_metric,
        MisconfigurationException,
        r"OneShotSearch\(metric='never_logged'\): validation_step never logged it; logged metrics: \[",
        _only_the_first_epoch_ran,
    ),
    Case(
        "supernet-empty-dimensions",
        lambda tmp_path: Supernet(MLP(), {}),
        ValueError,
        r"Supernet: `dimensions` is empty; pass at least one dimension, or None to find them",
    ),
    Case(
        "dashboard-on-a-file-that-is-no-database",
        _dashboard_on,
        SystemExit,
        r"^2$",
        lambda tmp_path: (tmp_path / "notes.txt").read_text() == "not a database",
    ),
]


@pytest.mark.parametrize("case", _HERE, ids=[c.id for c in _HERE])
def test_bad_input_fails_in_one_line_before_any_work(case: Case, tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(case.error, match=case.message) as info:
        case.call(work)
    assert "\n" not in str(info.value)
    assert case.nothing_done(work), f"{case.id}: work was done before the error: {sorted(work.rglob('*'))}"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if case.error is SystemExit:  # a CLI row: the one line is on stderr
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("lightning-nas: error: "), err
        assert "is not a SQLite study database" in lines[0]


def test_a_whole_width_of_another_type_is_still_accepted() -> None:
    import numpy as np

    net = _net()
    for value in (np.int64(32), 32.0, torch.tensor(32)):
        net.set_arch({"fc1": value})
        assert net.arch["fc1"] == 32 and type(net.arch["fc1"]) is int


def _table_of(test: str) -> list[tuple]:
    """The rows of the parametrised test ``module::function``."""
    import importlib

    module_name, function_name = test.split("::")
    function = getattr(importlib.import_module(module_name), function_name)
    return [row for mark in function.pytestmark if mark.name == "parametrize" for row in mark.args[1]]


# The cases of the issue that tables elsewhere check: (case, "module::test", text in its table row or source).
_ELSEWHERE = [
    ("set_arch-width-outside-the-layer", "tests.test_supernet::test_bad_space_and_arch_are_named", '"fc1": 65'),
    ("unknown-dimension", "tests.test_supernet::test_bad_space_and_arch_are_named", "unknown dimension 'bogus'"),
    (
        "candidates-not-in-the-choices",
        "tests.test_search::test_bad_candidates_are_named_before_any_trial",
        "is not allowed",
    ),
    ("demo-epochs-0", "tests.test_cli::test_bad_arguments_exit_2_with_one_line", "--epochs: must be > 0, got 0"),
    (
        "demo-epochs-negative",
        "tests.test_cli::test_bad_arguments_exit_2_with_one_line",
        "--epochs: must be > 0, got -1",
    ),
    ("demo-width-0", "tests.test_cli::test_bad_arguments_exit_2_with_one_line", "--width: must be > 0, got 0"),
    ("demo-width-negative", "tests.test_cli::test_bad_arguments_exit_2_with_one_line", "--width: must be > 0, got -4"),
    ("run_demo-arguments", "tests.test_cli::test_run_demo_checks_its_arguments_before_training", "epochs must be > 0"),
    ("demo-out-under-a-file", "tests.test_cli::test_run_demo_checks_its_arguments_before_training", "which is a file"),
    (
        "cli-no-traceback-unless-debug",
        "tests.test_cli::test_errors_are_one_line_without_traceback_unless_debug",
        "--debug",
    ),
    (
        "cli-script-one-line",
        "tests.test_cli::test_the_command_line_script_reports_errors_the_same_way",
        "returncode == 2",
    ),
    ("direction-up", "tests.test_search_workers::test_bad_search_inputs_get_one_line_errors", 'direction="up"'),
    (
        "max-params-a-string",
        "tests.test_search_workers::test_bad_search_inputs_get_one_line_errors",
        'max_params="0.5"',
    ),
    (
        "storage-dir-missing",
        "tests.test_search_workers::test_bad_search_inputs_get_one_line_errors",
        "/no/such/dir/x.db",
    ),
    ("storage-unreachable", "tests.test_search_workers::test_bad_search_inputs_get_one_line_errors", "127.0.0.1:1/db"),
    (
        "study-name-clash",
        "tests.test_search_workers::test_resume_into_another_search_fails_naming_the_difference",
        "searches something",
    ),
    (
        "demo-resume-other-width",
        "tests.test_demo::test_demo_resumes_from_its_directory_and_refuses_another_network",
        "width=8",
    ),
    (
        "truncated-last-ckpt",
        "tests.test_search_workers::test_a_checkpoint_alone_rebuilds_the_supernet",
        "truncated.ckpt",
    ),
    (
        "truncated-safetensors",
        "tests.test_export::test_damaged_files_give_a_one_line_error_naming_the_file",
        "safetensors",
    ),
    ("truncated-model-pt2", "tests.test_export::test_damaged_files_give_a_one_line_error_naming_the_file", "model.pt2"),
    (
        "export-of-another-width",
        "tests.test_export::test_files_that_match_a_rewritten_manifest_are_still_read_safely",
        "narrower",
    ),
    ("export-out-under-a-file", "tests.test_export::test_bad_output_directories_fail_before_any_work", "file.txt/out"),
    ("space-outside-the-model", "tests.test_callbacks::test_bad_space_fails_before_training", "global_step == 0"),
    (
        "space-of-one-architecture",
        "tests.test_search_workers::test_a_space_of_one_architecture_is_evaluated_once",
        "calls ==",
    ),
    (
        "metric-nan-in-many-trials",
        "tests.test_search_workers::test_a_metric_that_is_always_nan_stops_with_a_clear_error",
        "5 consecutive",
    ),
    ("unmeetable-budget", "tests.test_search::test_unmeetable_budget_fails_before_training", "max_params=10"),
    (
        "metric-never-logged",
        "tests.test_search::test_metric_that_is_never_logged_fails_before_training",
        "never logged",
    ),
    *(
        (f"data-file-{row[0]}", "tests.test_datasets::test_bad_data_gets_one_line_naming_file_and_column", row[0])
        for row in _table_of("tests.test_datasets::test_bad_data_gets_one_line_naming_file_and_column")
    ),
    *(
        (f"compress-{row[0]}", "tests.test_compress::test_compress_bad_input_is_one_line_before_any_work", row[0])
        for row in __import__("tests.test_compress", fromlist=["_BAD_INPUT"])._BAD_INPUT
    ),
]


@pytest.mark.parametrize(("case", "test", "text"), _ELSEWHERE, ids=[c[0] for c in _ELSEWHERE])
def test_every_case_listed_elsewhere_is_still_checked_there(case: str, test: str, text: str) -> None:
    import importlib

    module_name, function_name = test.split("::")
    function = getattr(importlib.import_module(module_name), function_name, None)
    assert function is not None, f"{case}: {test} is gone; move its case into _HERE"
    rows = [repr(mark.args) for mark in getattr(function, "pytestmark", []) if mark.name == "parametrize"]
    source = inspect.getsource(function)
    assert any(text in row for row in rows) or text in source, f"{case}: {test} no longer checks {text!r}"


def test_every_case_is_listed_once() -> None:
    ids = [c.id for c in _HERE] + [c[0] for c in _ELSEWHERE]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
