"""Searches shared by workers, resumed safely: budgets, copies of known architectures, dead workers,
studies of another search, bad storages and metrics. Real SQLite / journal files, real processes."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
            r"^cannot open the study database postgresql://user:\*\*\*@127.0.0.1:1/db: .*[Cc]onnection",
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


# Worker processes on one study -------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
SLOW = "tests.slow_models.SlowDigitsClassifier"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A trained supernet checkpoint small enough for worker processes to start and evaluate fast."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_nas.callbacks import OneShotSearch, SupernetCallback
    from lightning_nas.demo import DigitsClassifier, DigitsDataModule

    out = tmp_path_factory.mktemp("ckpt")
    search = OneShotSearch(metric="val_acc", n_trials=1, export_dir=False, calibration_batches=1, study_name="fit")
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        default_root_dir=out,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SupernetCallback(module="model"), search, ModelCheckpoint(dirpath=out, save_last=True)],
    )
    trainer.fit(DigitsClassifier(width=4, hidden=8, blocks=1), DigitsDataModule(batch_size=256))
    return out / "last.ckpt"


def _workers(checkpoint: Path, storage: str, study: str, n_trials: int, count: int, *extra: str) -> list:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lightning_nas.cli", "search", str(checkpoint), "--storage", storage]
    command += ["--study", study, "--n-trials", str(n_trials), "--heartbeat-interval", "1", "--grace-period", "3"]
    command += ["--objectives", "params", *extra]
    return [
        subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(count)
    ]


def _finish(workers: list, timeout: float = 600) -> None:
    for worker in workers:
        output, _ = worker.communicate(timeout=timeout)
        assert worker.returncode in (0, -signal.SIGKILL), output[-2000:]


def _check_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` COMPLETE trials, nothing left running, no architecture evaluated twice."""
    complete = _complete(study)
    assert len(complete) == n_trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    evaluated = [t for t in complete if "copy_of" not in t.user_attrs]
    keys = [tuple(sorted(t.user_attrs["arch"].items())) for t in evaluated]
    assert len(keys) == len(set(keys))
    return complete


def test_four_workers_share_one_postgresql_study(tiny_checkpoint, postgres_url) -> None:
    # A slow validation_step, so that the 40 trials take longer than a worker takes to start.
    _finish(_workers(tiny_checkpoint, postgres_url, "four", 40, 4, "--model-class", SLOW))
    study = optuna.load_study(study_name="four", storage=postgres_url)
    complete = _check_study(study, 40)
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) >= 2  # the work was shared
    # The max/min anchors were enqueued once for the study, not once per worker.
    anchors = [t for t in study.trials if t.system_attrs.get("fixed_params")]
    assert len(anchors) == 2


def _kill_one_mid_trial(workers: list, storage: str, study_name: str) -> int:
    """SIGKILL a worker while it evaluates a trial; returns that trial's number."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        except KeyError:
            time.sleep(0.2)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get("worker", "")
            victim = next((w for w in workers if f":{w.pid}:" in worker), None)
            if victim is not None and "arch" in trial.user_attrs:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                return trial.number
        time.sleep(0.1)
    raise AssertionError("no worker started a trial")


@pytest.mark.parametrize("backend", ["postgresql", "journal"])
def test_a_killed_worker_trial_is_failed_and_retried(backend, tiny_checkpoint, tmp_path, request) -> None:
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else str(tmp_path / "study.log")
    study_name = f"kill-{backend}"
    workers = _workers(tiny_checkpoint, storage, study_name, 12, 3, "--model-class", SLOW)
    killed = _kill_one_mid_trial(workers, storage, study_name)
    _finish(workers)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    assert study.trials[killed].state == TrialState.FAIL
    retries = [t for t in study.trials if killed in t.system_attrs.get("retry_history", ())]
    assert retries and retries[-1].state == TrialState.COMPLETE
    assert retries[0].params == study.trials[killed].params
    _check_study(study, 12)


def test_a_checkpoint_alone_rebuilds_the_supernet(tiny_checkpoint, tmp_path) -> None:
    from lightning_nas.callbacks import load_supernet_checkpoint
    from lightning_nas.demo import DigitsClassifier

    module, callback, data = load_supernet_checkpoint(tiny_checkpoint)
    assert type(module) is DigitsClassifier and module.hparams["width"] == 4
    saved = next(state for key, state in data["callbacks"].items() if key.startswith("SupernetCallback"))
    assert callback.supernet.space.to_dict() == saved["supernet"]["space"]
    for key, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, data["state_dict"][key], msg=key)
    # The rebuilt supernet extracts working sub-networks from the trained weights.
    x = torch.rand(3, 1, 8, 8)
    module.eval()
    with callback.supernet.use(callback.supernet.min_arch()), torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(callback.supernet.extract(callback.supernet.min_arch()).eval()(x), expected)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"^cannot read checkpoint .*truncated.ckpt: ") as info:
        load_supernet_checkpoint(truncated)
    assert "\n" not in str(info.value)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({**data, "callbacks": {"x": socket.socket}}, pickled)  # an arbitrary object: pickle only
    with pytest.raises(ValueError, match=r"^cannot read checkpoint .*pickled.ckpt: "):
        load_supernet_checkpoint(pickled)
