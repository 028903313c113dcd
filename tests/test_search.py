"""One-shot search: real Trainer.fit, real SQLite studies, real exports on disk."""

from __future__ import annotations

import json
import math

import lightning as L
import optuna
import pytest
import torch
import torchmetrics
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from lightning_nas import Supernet
from lightning_nas.callbacks import OneShotSearch, SupernetCallback
from lightning_nas.demo import DigitsClassifier, DigitsDataModule
from lightning_nas.export import load_module, load_subnet
from lightning_nas.samplers import is_rejection
from lightning_nas.search import TorchmetricsEvaluator, one_shot_search
from tests.models import MLP


def _fit(tmp_path, search: OneShotSearch, **kwargs) -> tuple[L.Trainer, SupernetCallback]:
    supernet_callback = SupernetCallback(strategy="sandwich", module="model")
    options = dict(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    trainer = L.Trainer(callbacks=[supernet_callback, search], **options)
    trainer.fit(DigitsClassifier(width=8, hidden=16, blocks=2), DigitsDataModule(batch_size=128))
    return trainer, supernet_callback


def test_search_writes_a_study_that_optuna_reads_back(tmp_path) -> None:
    search = OneShotSearch(
        metric="val_acc", objectives=("params", "flops"), n_trials=8, max_params=0.5, calibration_batches=2
    )
    _, supernet_callback = _fit(tmp_path, search)
    supernet = supernet_callback.supernet
    limit = 0.5 * supernet.num_params(supernet.max_arch())

    study = optuna.load_study(study_name="one-shot-search", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    assert study.metric_names == ["val_acc", "params", "flops"]
    # Over-budget architectures were rejected by the default ConstrainedSampler before they became
    # trials of the objective; the rejections are recorded (as pruned, infeasible trials).
    rejected = [t for t in study.trials if is_rejection(t)]
    evaluated = [t for t in study.trials if not is_rejection(t)]
    assert len(evaluated) == 8
    assert all(t.state == TrialState.PRUNED and max(t.constraints.values()) > 0 for t in rejected)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for trial in evaluated:
        arch = trial.user_attrs["arch"]
        assert supernet.space.validate(arch) == arch
        assert trial.user_attrs["params"] == supernet.num_params(arch)
        assert trial.user_attrs["constraints"]["max_params"] == pytest.approx(trial.user_attrs["params"] - limit)
        if trial.state == TrialState.PRUNED:  # only the enqueued full network bypasses the sampler
            assert trial.number == 0 and trial.user_attrs["params"] > limit
    assert search.result.front
    assert all(t.user_attrs["params"] <= limit for t in search.result.front)  # hard constraint
    assert study.best_trials == [] or {t.number for t in study.best_trials} == {t.number for t in search.result.front}

    # The export is on disk, physically smaller, and reproduces the supernet's sub-network.
    best_arch = search.result.best_arch
    exported = load_subnet(search.export_path, supernet)  # the user's own classes, weights from safetensors
    assert sum(p.numel() for p in exported.parameters()) == supernet.num_params(best_arch) <= limit
    assert type(search.best_model) is type(exported)
    assert (search.export_path / "model.pt2").exists()
    program = load_module(search.export_path)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(program(x), exported(x))
    with torch.no_grad():
        torch.testing.assert_close(search.best_model(x), exported(x))
    # ... and attached to the study as Optuna artifacts, which optuna-dashboard offers: no pickle among them.
    files = {meta.filename for meta in get_all_artifact_meta(study)}
    assert files == {"model.safetensors", "model.pt2", "arch.json", "search.json"}
    manifest = json.loads((search.export_path / "arch.json").read_text())
    assert manifest["arch"] == best_arch
    assert manifest["verification"]["inputs"] == [
        "the example input",
        "input 0",
        "input 1",
        "random input 0",
        "random input 1",
    ]  # two real validation batches among them


def test_search_resumes_the_same_study(tmp_path) -> None:
    _fit(tmp_path, OneShotSearch(metric="val_acc", n_trials=4, export_dir=False, calibration_batches=1))
    _fit(tmp_path, OneShotSearch(metric="val_acc", n_trials=6, export_dir=False, calibration_batches=1))
    study = optuna.load_study(study_name="one-shot-search", storage=f"sqlite:///{tmp_path / 'nas.db'}")
    evaluated = [t for t in study.trials if not is_rejection(t)]
    assert len(evaluated) == 6  # topped up to n_trials, not 4 + 6


def test_torchmetrics_metric_without_logging(tmp_path) -> None:
    metric = torchmetrics.Accuracy(task="multiclass", num_classes=10)
    search = OneShotSearch(
        metric=metric,
        n_trials=3,
        export_dir=False,
        calibration_batches=1,
        storage=f"sqlite:///{tmp_path / 'other.db'}",
        study_name="tm",
    )
    _fit(tmp_path, search)
    study = optuna.load_study(study_name="tm", storage=f"sqlite:///{tmp_path / 'other.db'}")
    assert study.metric_names == ["multiclassaccuracy", "params"]
    assert all(0 <= t.values[0] <= 1 for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_metric_that_is_never_logged_fails_before_training(tmp_path) -> None:
    search = OneShotSearch(metric="val_accuracy", n_trials=2)
    with pytest.raises(MisconfigurationException, match=r"never logged it; logged metrics: \['val_acc', 'val_loss'\]"):
        _fit(tmp_path, search)


def test_unmeetable_budget_fails_before_training(tmp_path) -> None:
    search = OneShotSearch(metric="val_acc", max_params=10)
    with pytest.raises(MisconfigurationException, match="no architecture can meet max_params=10"):
        _fit(tmp_path, search)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown objectives or limits"):
        OneShotSearch(objectives=("accuracy",))
    with pytest.raises(ValueError, match="n_trials"):
        OneShotSearch(n_trials=0)


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path) -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))

    def flaky(arch):
        if arch["fc1"] == 32:
            raise RuntimeError("out of memory (simulated)")
        if arch["fc1"] == 48:
            return math.nan
        return arch["fc1"] / 64

    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = one_shot_search(net, flaky, n_trials=20, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    states = {t.state for t in study.trials}
    assert TrialState.FAIL in states and TrialState.COMPLETE in states
    assert len(study.trials) == 20
    assert result.best.user_attrs["arch"]["fc1"] in (16, 64)


def test_torchmetrics_evaluator_restores_batchnorm() -> None:
    data = DigitsDataModule()
    data.setup()
    module = DigitsClassifier(width=8, hidden=16, blocks=2)
    net = Supernet(module.model, example_input=torch.zeros(1, 1, 8, 8))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    evaluate = TorchmetricsEvaluator(
        net,
        torchmetrics.Accuracy(task="multiclass", num_classes=10),
        data.val_dataloader(),
        data.train_dataloader(),
        calibration_batches=2,
    )
    value = evaluate(net.min_arch())
    assert 0.0 <= value <= 1.0
    for key, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, before[key], msg=key)


def test_existing_study_with_other_objectives_is_refused(tmp_path) -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    one_shot_search(net, lambda arch: 1.0, n_trials=2, storage=storage)
    with pytest.raises(ValueError, match="already exists with objectives"):
        one_shot_search(net, lambda arch: 1.0, n_trials=2, storage=storage, objectives=("flops",))


def test_candidates_are_evaluated_first_once_per_study(tmp_path) -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    names = list(net.space)
    middle = {n: net.space[n].choices[len(net.space[n].choices) // 2] for n in names}
    other = {n: net.space[n].choices[1] for n in names}
    seen: list[dict] = []

    def evaluate(arch):
        seen.append(dict(arch))
        return float(sum(arch.values()))

    # The min anchor repeated as a candidate is evaluated once; the duplicate candidate too.
    candidates = [middle, net.min_arch(), other, middle]
    one_shot_search(net, evaluate, n_trials=4, storage=storage, candidates=candidates)
    assert seen == [net.max_arch(), net.min_arch(), middle, other]

    # Resuming does not enqueue them again: the sampler draws the new trials.
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    assert not study.get_trials(states=(TrialState.WAITING,))
    one_shot_search(net, evaluate, n_trials=6, storage=storage, candidates=[middle])
    study = optuna.load_study(study_name="one-shot-search", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in study.trials[:4]] == [net.max_arch(), net.min_arch(), middle, other]


def test_bad_candidates_are_named_before_any_trial(tmp_path) -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))
    storage = tmp_path / "s.db"
    name = next(iter(net.space))
    with pytest.raises(ValueError, match=rf"candidates: value 7 is not allowed for dimension '{name}'"):
        one_shot_search(net, lambda arch: 1.0, storage=storage, candidates=[{**net.max_arch(), name: 7}])
    with pytest.raises(ValueError, match="candidates: unknown dimensions"):
        one_shot_search(net, lambda arch: 1.0, storage=storage, candidates=[{"nope": 1}])
    with pytest.raises(TypeError, match="wrap it in a list"):
        one_shot_search(net, lambda arch: 1.0, storage=storage, candidates=net.max_arch())
    assert not storage.exists()
