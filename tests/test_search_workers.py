"""Searches shared by workers, resumed safely: budgets, copies of known architectures, dead workers,
studies of another search, bad storages and metrics. Real SQLite / journal files, real processes."""

from __future__ import annotations

import math
import socket
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from lightning_nas import Supernet
from lightning_nas.search import (
    SEARCH_ATTR,
    check_search_study,
    limits_from,
    one_shot_search,
    open_storage,
    search_descriptor,
)
from tests.models import MLP


def _net(**space) -> Supernet:
    return Supernet(MLP(), example_input=torch.randn(2, 10), space=space or None)


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_known_architectures_are_copied_never_evaluated_twice(tmp_path) -> None:
    net = _net()  # 16 architectures
    evaluated: list[tuple] = []

    def evaluate(arch):
        evaluated.append(tuple(sorted(arch.items())))
        return arch["fc1"] / 64 + arch["fc2"] / 480

    storage = open_storage(tmp_path / "s.log")
    one_shot_search(net, evaluate, n_trials=12, storage=storage, objectives=())
    one_shot_search(net, evaluate, n_trials=30, storage=storage, objectives=())  # resumed
    assert len(evaluated) == len(set(evaluated))
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    assert len(_complete(study)) == 30
    copies = [t for t in _complete(study) if "copy_of" in t.user_attrs]
    assert copies  # TPE converges: it proposes the best architectures again
    by_number = {t.number: t for t in study.trials}
    for copy in copies:
        original = by_number[copy.user_attrs["copy_of"]]
        assert "copy_of" not in original.user_attrs
        assert original.user_attrs["arch"] == copy.user_attrs["arch"] and original.values == copy.values
    assert {t.number for t in one_shot_search(net, evaluate, n_trials=30, storage=storage, objectives=()).front} & {
        t.number for t in copies
    } == set()


def test_the_search_stops_when_every_architecture_is_known(tmp_path) -> None:
    net = _net()  # 16 architectures
    evaluated = []
    sampler = optuna.samplers.RandomSampler(seed=0)
    result = one_shot_search(net, lambda a: evaluated.append(a) or 1.0, n_trials=500, sampler=sampler)
    assert len(evaluated) == 16 and len(result.study.trials) < 500


def test_a_space_of_one_architecture_is_evaluated_once() -> None:
    net = _net(fc1=64, fc2=48)
    calls = []
    result = one_shot_search(net, lambda arch: calls.append(arch) or 0.5, n_trials=10)
    assert calls == [{"fc1": 64, "fc2": 48}]
    assert len(result.study.trials) == 1


def test_a_metric_that_is_always_nan_stops_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"the metric 'acc' was not finite in 5 consecutive trials"):
        one_shot_search(_net(), lambda arch: math.nan, n_trials=50, metric_name="acc")


def test_resume_into_another_search_fails_naming_the_difference(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    one_shot_search(_net(fc1=[16, 32]), lambda arch: 1.0, n_trials=2, storage=storage)
    before = optuna.load_study(study_name="one-shot-search", storage=storage)
    n_before = len(before.trials)
    with pytest.raises(ValueError, match=r"searches something else \(dimension 'fc1': \[16, 32\] there, \[48, 64\]"):
        one_shot_search(_net(fc1=[48, 64]), lambda arch: 1.0, n_trials=4, storage=storage)
    with pytest.raises(
        ValueError, match=r"already exists with objectives \['metric', 'params'\]; this search has \['acc', 'params'\]"
    ):
        one_shot_search(_net(fc1=[16, 32]), lambda arch: 1.0, n_trials=4, storage=storage, metric_name="acc")
    with pytest.raises(ValueError, match=r"searches something else \(limits: \{\} there, \{'params': 500.0\} here"):
        one_shot_search(_net(fc1=[16, 32]), lambda arch: 1.0, n_trials=4, storage=storage, max_params=500)
    # Another supernet with the same space: caught by its fingerprint.
    other = Supernet(torch.nn.Sequential(MLP()), example_input=torch.randn(2, 10), space={"0.fc1": [16, 32]})
    descriptor = search_descriptor(other, "metric", "maximize", ("params",), {})
    descriptor["space"] = before.user_attrs[SEARCH_ATTR]["space"]
    with pytest.raises(ValueError, match=r"searches something else \(supernet: "):
        check_search_study(storage, "one-shot-search", descriptor)
    # Nothing was added by the refused searches.
    assert len(optuna.load_study(study_name="one-shot-search", storage=storage).trials) == n_before


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: limits_from(max_params="0.5"), TypeError, r"max_params must be a number, got '0.5' \(str\)"),
        (lambda: limits_from(max_flops=-1), ValueError, r"max_flops must be positive, got -1"),
        (
            lambda: one_shot_search(_net(), lambda a: 1.0, direction="up"),
            ValueError,
            r"direction must be 'maximize' or 'minimize', got 'up'",
        ),
        (lambda: open_storage("/no/such/dir/x.db"), ValueError, r"the directory /no/such/dir does not exist"),
        (lambda: open_storage("/no/such/dir/x.log"), ValueError, r"the directory /no/such/dir does not exist"),
        (
            lambda: open_storage("postgresql://user:secret@127.0.0.1:1/db"),
            ValueError,
            r"^cannot open the study database postgresql://user:\*\*\*@127.0.0.1:1/db: ",
        ),
    ],
)
def test_bad_search_inputs_get_one_line_errors(call, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_trial_of_a_dead_worker_is_failed_and_retried_on_resume(tmp_path) -> None:
    net = _net()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    one_shot_search(net, lambda arch: 1.0, n_trials=3, storage=storage, objectives=())
    # A worker that died mid-trial (its process exited without finishing the trial).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    trial = study.ask()
    arch = net.space.suggest(trial)
    trial.set_user_attr("arch", arch)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}:1")
    evaluated = []
    one_shot_search(net, lambda a: evaluated.append(a) or 1.0, n_trials=6, storage=storage, objectives=())
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    killed = study.trials[trial.number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert len(_complete(study)) == 6
