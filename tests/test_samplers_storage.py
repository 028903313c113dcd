"""The samplers on persistent storage: resuming a study, and two worker processes at once."""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, RandomForestPredictor, TabNASSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 6 ** 4 = 1296 architectures, about a third of them within the parameter budget.
SPACE = {f"w{i}": IntDistribution(1, 6) for i in range(4)}
SAMPLERS = ["constrained-tpe", "tabnas", "predictor"]


def n_params(arch: dict) -> int:
    return sum(arch[f"w{i}"] * arch[f"w{i + 1}"] for i in range(3))


def params_limit(arch: dict) -> float:
    return n_params(arch) - 30


def objective(trial: optuna.Trial) -> float:
    arch = {name: trial.suggest_int(name, 1, 6) for name in SPACE}
    return float(sum(arch.values()) + 0.1 * arch["w0"])


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "constrained-tpe":
        return ConstrainedSampler(optuna.samplers.TPESampler(seed=seed), params_limit, SPACE, seed=seed)
    if name == "tabnas":
        return TabNASSampler(SPACE, params_limit, seed=seed)
    return PredictorSampler(
        SPACE,
        predictor=RandomForestPredictor(n_estimators=20, seed=seed),
        constraint=params_limit,
        n_candidates=200,
        n_startup_trials=5,
        seed=seed,
    )


def evaluated(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def check_feasible(study: optuna.Study) -> None:
    for t in evaluated(study):
        assert params_limit(t.params) <= 0
        assert t.constraints == {"0": params_limit(t.params)}


@pytest.mark.parametrize("name", SAMPLERS)
def test_resume_from_sqlite(name: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize", sampler=make_sampler(name, 0))
    study.optimize(objective, n_trials=12)

    # A new process would start exactly like this: a fresh sampler on the stored study.
    sampler = make_sampler(name, 1)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=sampler)
    resumed.optimize(objective, n_trials=12)

    assert len(evaluated(resumed)) == 24
    assert [t.number for t in resumed.trials] == list(range(len(resumed.trials)))
    check_feasible(resumed)
    if name == "tabnas":
        # The fresh controller replayed the stored history instead of starting uniform.
        assert any(abs(p - 1 / 6) > 0.01 for p in sampler.policy()["w0"].values())
    if name == "predictor":
        archs = [tuple(t.params.values()) for t in evaluated(resumed)]
        assert len(set(archs)) == len(archs)


def journal(path: Path) -> optuna.storages.JournalStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def worker(directory: Path, seed: int, n_trials: int, queue: multiprocessing.Queue) -> None:
    """One worker process: runs every sampler on its shared study (one process start only)."""
    done: dict[str, list[int]] = {}
    for name in SAMPLERS:
        storage = journal(directory / f"{name}.log")
        sampler = make_sampler(name, seed)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        numbers = done.setdefault(name, [])
        record = [lambda study, trial: numbers.append(trial.number)]
        study.optimize(objective, n_trials=n_trials, callbacks=record)
    queue.put(done)


def test_two_worker_processes_share_one_journal(tmp_path: Path) -> None:
    for name in SAMPLERS:
        optuna.create_study(storage=journal(tmp_path / f"{name}.log"), study_name=name, direction="maximize")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=worker, args=(tmp_path, seed, 10, queue)) for seed in (1, 2)]
    for w in workers:
        w.start()
    reported = [queue.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    for name in SAMPLERS:
        study = optuna.load_study(study_name=name, storage=journal(tmp_path / f"{name}.log"))
        numbers = [t.number for t in study.trials]
        assert numbers == list(range(len(numbers))), name  # nothing lost or numbered twice
        complete = {t.number for t in evaluated(study)}
        assert len(complete) == 20, name
        # Each evaluated trial was run by exactly one of the two workers.
        first, second = (set(r[name]) for r in reported)
        assert first.isdisjoint(second) and first | second == complete, name
        check_feasible(study)
