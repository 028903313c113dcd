"""Joint NAS + hyperparameter search: real Trainer.fit runs inside real Optuna studies."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import optuna
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from lightning_nas import SearchSpace, Supernet
from lightning_nas.demo import DigitsClassifier, DigitsDataModule
from lightning_nas.hpo import INTERMEDIATE_VALUES, CostAwarePruner, JointObjective, at_arch, joint_search

SPACE = SearchSpace({"width": [4, 8], "hidden": [8, 16]})
HPARAMS = {"lr": FloatDistribution(1e-8, 1e-1, log=True), "batch_size": CategoricalDistribution([32, 64])}
# lr 1e-8 leaves the network at chance level while 3e-2 learns within the first epoch.
GOOD = {"width": 8, "hidden": 16, "lr": 3e-2, "batch_size": 64}
BAD = {**GOOD, "lr": 1e-8}
TRAIN = {"max_epochs": 2, "limit_train_batches": 8, "limit_val_batches": 1, "num_sanity_val_steps": 0}
QUICK = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0}


def build(arch: dict[str, int], hparams: dict[str, Any]) -> tuple[DigitsClassifier, DigitsDataModule]:
    module = DigitsClassifier(lr=hparams["lr"], blocks=1, **arch)
    return module, DigitsDataModule(batch_size=hparams["batch_size"])


def build_failing_at_width_4(arch: dict[str, int], hparams: dict[str, Any]) -> Any:
    if arch["width"] == 4:
        raise RuntimeError("width 4 is broken")
    return build(arch, hparams)


def test_median_pruner_stops_a_bad_trial_during_fit() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    early_stopping = EarlyStopping(monitor="val_acc", mode="max", patience=5)
    trainer_kwargs = {**TRAIN, "callbacks": [early_stopping]}
    study.optimize(JointObjective(build, SPACE, HPARAMS, trainer_kwargs=trainer_kwargs), n_trials=2)
    assert early_stopping.best_score == -torch.inf  # each trial trained with its own copy
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == [0, 1]
    assert bad.state == TrialState.PRUNED
    assert sorted(bad.intermediate_values) == [0]  # stopped after its first validation, not at the end
    assert bad.intermediate_values[0] < good.intermediate_values[0]


def test_objective_in_a_sqlite_study_records_arch_and_hparams(tmp_path) -> None:
    network = DigitsClassifier(width=8, hidden=16, blocks=2).model
    space = Supernet(network, example_input=torch.zeros(1, 1, 8, 8)).space.select(["stem.0", "fc"])

    def suggest(trial: optuna.Trial) -> dict[str, Any]:  # a conditional hyperparameter
        hparams = {"decay": trial.suggest_categorical("decay", [False, True])}
        if hparams["decay"]:
            hparams["weight_decay"] = trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
        return hparams

    def build_subnet(arch: dict[str, int], hparams: dict[str, Any]) -> Any:
        module = DigitsClassifier(weight_decay=hparams.get("weight_decay", 0.0), width=8, hidden=16, blocks=2)
        return at_arch(module, arch, submodule="model"), DigitsDataModule()

    storage = f"sqlite:///{tmp_path / 'joint.db'}"
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    study.enqueue_trial({"stem.0": 2, "fc": 4, "decay": True, "weight_decay": 1e-3})
    objective = JointObjective(build_subnet, space, suggest, objectives=("params",), trainer_kwargs=QUICK)
    with pytest.warns(UserWarning, match="MedianPruner cannot prune"):
        study.optimize(objective, n_trials=2)
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    first = trials[0]
    assert first.user_attrs["arch"] == {"stem.0": 2, "fc": 4}
    assert first.user_attrs["hparams"] == {"decay": True, "weight_decay": 1e-3}
    expected = Supernet(DigitsClassifier(width=8, hidden=16, blocks=2).model, example_input=torch.zeros(1, 1, 8, 8))
    assert first.values[1] == first.user_attrs["params"] == expected.num_params({"stem.0": 2, "fc": 4})
    for trial in trials:
        assert space.validate(trial.user_attrs["arch"]) == trial.user_attrs["arch"]
        assert trial.user_attrs["hparams"] == {k: v for k, v in trial.params.items() if k not in space}
        assert len(trial.user_attrs[INTERMEDIATE_VALUES]) == 1


def test_multi_objective_search_prunes_against_cheaper_trials_only(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(storage=storage, study_name="mo", directions=["maximize", "minimize"])
    small_bad = {**BAD, "width": 4, "hidden": 8}
    for params in (GOOD, small_bad, BAD):
        study.enqueue_trial(params)
    result = joint_search(
        build,
        SPACE,
        HPARAMS,
        n_trials=3,
        objectives=("params",),
        pruner=CostAwarePruner(n_min_trials=1),
        trainer_kwargs=TRAIN,
        storage=storage,
        study_name="mo",
    )
    good, small, bad = result.study.trials
    assert result.study.metric_names == ["val_acc", "params"]
    assert good.state == TrialState.COMPLETE and good.values[1] == good.user_attrs["params"]
    # The small network is as bad, but nothing cheaper has finished: it may be on the front.
    assert small.state == TrialState.COMPLETE
    assert small.user_attrs[INTERMEDIATE_VALUES]["0"] < good.user_attrs[INTERMEDIATE_VALUES]["0"]
    assert bad.state == TrialState.PRUNED
    assert list(bad.user_attrs[INTERMEDIATE_VALUES]) == ["0"]
    assert {t.number for t in result.front} <= {good.number, small.number}


def test_cost_aware_pruner_compares_with_peers_of_no_higher_cost() -> None:
    study = optuna.create_study(direction="minimize", pruner=CostAwarePruner(n_min_trials=2, costs=("flops",)))
    for loss, flops in ((1.0, 100), (1.2, 100), (0.1, 500)):
        study.add_trial(create_trial(value=loss, intermediate_values={0: loss}, user_attrs={"flops": flops}))

    def running(loss: float, flops: float) -> optuna.trial.FrozenTrial:
        trial = study.ask()
        trial.set_user_attr("flops", flops)
        trial.report(loss, 0)
        return study.trials[-1]

    assert study.pruner.prune(study, running(1.5, 100))  # worse than the median of its two peers
    assert not study.pruner.prune(study, running(1.05, 100))
    assert not study.pruner.prune(study, running(1.5, 50))  # nothing cheaper to compare with
    assert study.pruner.prune(study, running(float("nan"), 50))
    assert CostAwarePruner(n_min_trials=2, cost_tolerance=0.2, costs=("flops",)).prune(study, running(1.5, 90))
    assert CostAwarePruner(n_min_trials=2, percentile=10, costs=("flops",)).prune(study, running(1.05, 100))
    assert not CostAwarePruner(n_min_trials=2, n_warmup_steps=1, costs=("flops",)).prune(study, running(1.5, 100))
    # The 0.1 of the expensive trial lowers the median only for trials at least as expensive.
    assert study.pruner.prune(study, running(1.05, 500))
    with pytest.raises(ValueError, match="needs the names of the costs"):
        CostAwarePruner().prune(study, running(1.0, 100))


def test_over_budget_trials_are_pruned_before_training() -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(GOOD)
    study.optimize(JointObjective(build, SPACE, HPARAMS, limits={"params": 1000}, trainer_kwargs=TRAIN), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and not trial.intermediate_values
    assert trial.user_attrs["constraints"]["max_params"] == trial.user_attrs["params"] - 1000 > 0
    assert trial.constraints == trial.user_attrs["constraints"]


def test_failed_trials_are_recorded_and_resume_tops_up(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'resume.db'}"
    study = optuna.create_study(storage=storage, study_name="resume", direction="maximize")
    for params in ({**GOOD, "width": 4}, GOOD, {**GOOD, "lr": 1e-2}):
        study.enqueue_trial(params)
    run = dict(n_trials=2, trainer_kwargs=QUICK, storage=storage, study_name="resume")
    joint_search(build_failing_at_width_4, SPACE, HPARAMS, **run)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.WAITING]
    result = joint_search(build_failing_at_width_4, SPACE, HPARAMS, **{**run, "n_trials": 3})
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[2].params["lr"] == 1e-2  # the third enqueued trial ran, not a repeat
    assert result.best.number in (1, 2)
    joint_search(build_failing_at_width_4, SPACE, HPARAMS, **run)  # a smaller target runs nothing
    assert len(study.trials) == 3


def test_bad_configuration_fails_before_any_trial() -> None:
    with pytest.raises(ValueError, match=r"\['width'\] have the names of architecture dimensions"):
        JointObjective(build, SPACE, {"width": IntDistribution(1, 4)})
    with pytest.raises(TypeError, match="hyperparameter 'lr'"):
        JointObjective(build, SPACE, {"lr": 0.1})
    with pytest.raises(ValueError, match="percentile must lie in"):
        CostAwarePruner(percentile=120)
    with pytest.raises(ValueError, match="unknown costs"):
        JointObjective(build, SPACE, HPARAMS, objectives=("memory",))
    with pytest.raises(ValueError, match="HyperbandPruner cannot prune a multi-objective study"):
        joint_search(build, SPACE, HPARAMS, objectives=("params",), pruner=optuna.pruners.HyperbandPruner())


def _trainer_kwargs_recording_worker(trial: optuna.Trial) -> dict[str, Any]:
    trial.set_user_attr("worker", os.getpid())
    return QUICK


def _worker(path: str, seed: int, start: Any) -> None:
    torch.set_num_threads(1)
    storage = JournalStorage(JournalFileBackend(path))
    start.wait()  # both processes have imported everything: they really search side by side
    joint_search(
        build,
        SPACE,
        HPARAMS,
        n_trials=6,
        trainer_kwargs=_trainer_kwargs_recording_worker,
        storage=storage,
        study_name="parallel",
        seed=seed,
    )


def test_two_worker_processes_share_one_journal_storage(tmp_path) -> None:
    path = str(tmp_path / "journal.log")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_worker, args=(path, seed, start)) for seed in (0, 1)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=120)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]
    trials = optuna.load_study(study_name="parallel", storage=JournalStorage(JournalFileBackend(path))).trials
    # Workers that ask at the same moment may each start one more trial than the target.
    assert 6 <= len(trials) <= 7
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(set(t.user_attrs) >= {"arch", "hparams", "params", "worker"} for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
