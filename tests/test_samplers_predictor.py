"""RandomForestPredictor and PredictorSampler inside real Optuna studies."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from scipy.stats import kendalltau

from lightning_nas._optuna import non_domination_rank
from lightning_nas.samplers import NoFeasibleArchitectureError, PredictorSampler, RandomForestPredictor
from lightning_nas.samplers._predictor_sampler import _best_multi_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPS = ["a", "b", "c", "d"]
SPACE = {f"op{i}": CategoricalDistribution(OPS) for i in range(5)}
WEIGHTS = np.random.default_rng(123).normal(size=(5, len(OPS)))
ALL_ARCHS = [dict(zip(SPACE, ops)) for ops in itertools.product(OPS, repeat=len(SPACE))]


def accuracy(arch: dict) -> float:
    index = [OPS.index(arch[name]) for name in SPACE]
    # Additive effects plus one interaction between the first two dimensions.
    return float(WEIGHTS[np.arange(len(SPACE)), index].sum() + 0.5 * (index[0] == index[1]))


def cost(arch: dict) -> float:
    return float(sum(OPS.index(arch[name]) ** 2 for name in SPACE))


def cost_limit(arch: dict) -> float:
    return cost(arch) - 12.0


BEST = max(accuracy(a) for a in ALL_ARCHS)


def fast_sampler(**kwargs) -> PredictorSampler:
    seed = kwargs.pop("seed", 0)
    return PredictorSampler(
        predictor=RandomForestPredictor(n_estimators=20, seed=seed),
        n_candidates=200,
        seed=seed,
        **kwargs,
    )


def suggest(trial: optuna.Trial) -> dict:
    return {name: trial.suggest_categorical(name, OPS) for name in SPACE}


def queries_to_best(sampler: optuna.samplers.BaseSampler, cap: int = 60) -> int | None:
    def objective(trial: optuna.Trial) -> float:
        value = accuracy(suggest(trial))
        if value >= BEST:
            trial.study.stop()
        return value

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=cap)
    return len(study.trials) if study.best_value >= BEST else None


def test_predictor_ranks_unseen_architectures() -> None:
    X = np.eye(len(OPS))[[[OPS.index(a[n]) for n in SPACE] for a in ALL_ARCHS]].reshape(len(ALL_ARCHS), -1)
    y = np.array([accuracy(a) for a in ALL_ARCHS])
    train = np.random.default_rng(0).permutation(len(y))[:100]
    test = np.setdiff1d(np.arange(len(y)), train)
    predictor = RandomForestPredictor(seed=0).fit(X[train], y[train])
    mean, std = predictor.predict(X[test], return_std=True)
    assert mean.shape == std.shape == (len(test),)
    assert np.all(std >= 0) and np.any(std > 0)
    np.testing.assert_allclose(mean, predictor.predict(X[test]))
    assert kendalltau(mean, y[test]).statistic > 0.6


def test_predictor_input_checks() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        RandomForestPredictor().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="shape"):
        RandomForestPredictor().fit(np.zeros((3, 2)), np.zeros(2))


def test_finds_the_optimum_much_faster_than_random() -> None:
    found = [queries_to_best(fast_sampler(search_space=SPACE, seed=s)) for s in range(3)]
    assert all(n is not None and n <= 40 for n in found), found
    # Random search needs ~512 queries on average for one optimum out of 1024 architectures.
    randoms = [queries_to_best(optuna.samplers.RandomSampler(seed=s)) for s in range(3)]
    assert sum(n is None for n in randoms) >= 2, randoms


def test_inferred_search_space_and_minimize() -> None:
    sampler = fast_sampler(n_startup_trials=5)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda t: -accuracy(suggest(t)), n_trials=40)
    assert -study.best_value >= sorted((accuracy(a) for a in ALL_ARCHS), reverse=True)[10]


def test_never_proposes_an_architecture_twice() -> None:
    space = {f"w{i}": IntDistribution(1, 3) for i in range(3)}
    sampler = fast_sampler(search_space=space, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum(t.suggest_int(n, 1, 3) for n in space), n_trials=27)
    archs = {tuple(t.params.values()) for t in study.trials}
    assert len(archs) == 27


def test_multi_objective_with_an_exactly_known_cost() -> None:
    fits = []

    class CountingPredictor(RandomForestPredictor):
        def fit(self, X: np.ndarray, y: np.ndarray) -> CountingPredictor:
            fits.append(len(y))
            return super().fit(X, y)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = suggest(trial)
        return accuracy(arch), cost(arch)

    values = np.array([[-accuracy(a), cost(a)] for a in ALL_ARCHS])
    true_front = {i for i in np.flatnonzero(non_domination_rank(values) == 0)}

    def front_found(sampler: optuna.samplers.BaseSampler) -> int:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=40)
        keys = {tuple(t.params[n] for n in SPACE) for t in study.trials}
        return sum(tuple(ALL_ARCHS[i].values()) in keys for i in true_front)

    found = [
        front_found(
            PredictorSampler(
                SPACE,
                predictor=CountingPredictor(n_estimators=20, seed=s),
                known_objectives={1: cost},
                n_candidates=200,
                seed=s,
            )
        )
        for s in range(3)
    ]
    randoms = [front_found(optuna.samplers.RandomSampler(seed=s)) for s in range(3)]
    # Only accuracy is predicted: one fit per model-based trial, never one for the cost.
    assert len(fits) == 3 * (40 - 10)
    assert min(found) >= len(true_front) - 1, found
    assert sum(found) >= 2 * sum(randoms), (found, randoms)


def test_constraint_is_never_violated_and_recorded() -> None:
    sampler = fast_sampler(search_space=SPACE, constraint=cost_limit)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (accuracy(suggest(t)), cost(t.params)), n_trials=30)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert cost_limit(t.params) <= 0
        assert t.system_attrs["constraints"] == [cost_limit(t.params)]


def test_unsatisfiable_constraint_fails_clearly() -> None:
    def impossible(arch: dict) -> tuple[float, float]:
        return (-1.0, 1.0)

    sampler = PredictorSampler(SPACE, constraint=impossible, max_tries=200, seed=0)
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(NoFeasibleArchitectureError, match=r"impossible.*after 200 sampled"):
        study.optimize(lambda t: accuracy(suggest(t)), n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="explicit search_space"):
        PredictorSampler(constraint=cost_limit)
    with pytest.raises(TypeError, match="predictor"):
        PredictorSampler(SPACE, predictor=object())  # type: ignore[arg-type]
    study = optuna.create_study(sampler=PredictorSampler(SPACE, known_objectives={1: cost}))
    with pytest.raises(ValueError, match="known_objectives"):
        study.optimize(lambda t: accuracy(suggest(t)), n_trials=1)


def test_hypervolume_acquisition() -> None:
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    # The candidate that fills the gap of the front adds the most hypervolume.
    candidates = np.array([[0.9, 0.9], [0.4, 0.4], [0.1, 0.95]])
    assert _best_multi_objective(front, candidates) == 1
    # When every candidate is dominated, take the one closest to escaping domination.
    dominated = np.array([[2.0, 2.0], [1.05, 0.1], [3.0, 1.5]])
    assert _best_multi_objective(front, dominated) == 1
