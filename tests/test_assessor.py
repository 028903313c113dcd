"""SemiSupervisedAssessor: fit/predict contract, determinism, learning, and a real PredictorSampler study."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from scipy.stats import kendalltau

from lightning_nas.samplers import Predictor, PredictorSampler, SemiSupervisedAssessor

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPS = ["a", "b", "c", "d"]
SPACE = {f"op{i}": CategoricalDistribution(OPS) for i in range(5)}
ALL_ARCHS = [dict(zip(SPACE, ops)) for ops in itertools.product(OPS, repeat=len(SPACE))]
CODES = np.array([[OPS.index(a[name]) for name in SPACE] for a in ALL_ARCHS])
# One-hot of every dimension: the generic encoding PredictorSampler uses by default.
X_ALL = np.eye(len(OPS))[CODES].reshape(len(CODES), -1)
CENTRE = np.array([3, 1, 2, 0, 3])


def smooth_target(codes: np.ndarray) -> np.ndarray:
    """Decays with the Hamming distance to one architecture: smooth on the similarity graph."""
    return np.exp(-0.5 * (codes != CENTRE).sum(axis=-1))


def fast(**kwargs) -> SemiSupervisedAssessor:
    return SemiSupervisedAssessor(**{"pretrain_epochs": 30, "epochs": 80, "max_nodes": 600, **kwargs})


def split(n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(X_ALL))
    return order[:n_train], order[n_train:]


def test_is_a_predictor_with_the_forest_contract() -> None:
    train, test = split(40)
    y = smooth_target(CODES)
    assessor = fast(seed=0)
    assert isinstance(assessor, Predictor)
    assert assessor.fit(X_ALL[train], y[train]) is assessor
    mean, std = assessor.predict(X_ALL[test[:50]], return_std=True)
    assert mean.shape == std.shape == (50,)
    assert np.all(np.isfinite(mean)) and np.all(std >= 0) and np.any(std > 0)
    # Labelled rows may be queried too (they are graph nodes), and in any order.
    both = assessor.predict(np.vstack([X_ALL[train[:3]], X_ALL[test[:2]]]))
    assert both.shape == (5,)


def test_deterministic_for_a_seed() -> None:
    train, test = split(30)
    y = smooth_target(CODES)
    runs = [fast(seed=s).fit(X_ALL[train], y[train]).predict(X_ALL[test[:200]]) for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_learns_a_graph_smooth_target_better_than_a_constant() -> None:
    train, test = split(40)
    y = smooth_target(CODES)
    # max_nodes below the query size: part of the rows are predicted inductively.
    assessor = fast(seed=0).fit(X_ALL[train], y[train])
    pred = assessor.predict(X_ALL[test])
    constant = np.full_like(pred, y[train].mean())
    mse, mse_constant = np.mean((pred - y[test]) ** 2), np.mean((constant - y[test]) ** 2)
    assert mse < 0.5 * mse_constant, (mse, mse_constant)
    assert kendalltau(pred, y[test]).statistic > 0.5


def test_a_pool_of_unlabelled_architectures_is_used() -> None:
    train, test = split(40)
    y = smooth_target(CODES)
    # The query alone is one row; the pool supplies the graph's unlabelled nodes.
    alone = fast(seed=0).fit(X_ALL[train], y[train]).predict(X_ALL[test[:1]])
    pooled = fast(seed=0, pool=X_ALL[test]).fit(X_ALL[train], y[train])
    assert not np.allclose(alone, pooled.predict(X_ALL[test[:1]]))
    pred = pooled.predict(X_ALL[test])
    assert kendalltau(pred, y[test]).statistic > 0.5


def test_input_checks() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        SemiSupervisedAssessor().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="shape"):
        SemiSupervisedAssessor().fit(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        SemiSupervisedAssessor().fit(np.zeros((2, 2)), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="pool has 3 features but X has 2"):
        SemiSupervisedAssessor(pool=np.zeros((4, 3))).fit(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"predict expects X of shape \(q, 2\)"):
        SemiSupervisedAssessor().fit(np.zeros((2, 2)), np.zeros(2)).predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="n_neighbors"):
        SemiSupervisedAssessor(n_neighbors=0)


def test_guides_a_real_predictor_sampler_study() -> None:
    y_all = smooth_target(CODES)
    best = float(y_all.max())

    def objective(trial: optuna.Trial) -> float:
        code = np.array([OPS.index(trial.suggest_categorical(name, OPS)) for name in SPACE])
        value = float(smooth_target(code))
        if value >= best:
            trial.study.stop()
        return value

    found = []
    for seed in range(2):
        sampler = PredictorSampler(
            SPACE,
            predictor=fast(seed=seed, pretrain_epochs=15, epochs=30, max_nodes=300),
            n_startup_trials=10,
            n_candidates=200,
            seed=seed,
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=30)
        found.append(len(study.trials) if study.best_value >= best else None)
    # One optimum among 1024 architectures: random search needs ~512 queries on average.
    assert all(n is not None for n in found), found


def test_degenerate_inputs() -> None:
    # Constant targets: nothing to rank, every prediction is that constant.
    pred = fast(seed=0, epochs=5, pretrain_epochs=0).fit(X_ALL[:5], np.full(5, 0.7)).predict(X_ALL[5:9])
    np.testing.assert_allclose(pred, 0.7)
    # One labelled node and no room for others: the queries are all predicted inductively.
    tiny = fast(seed=0, epochs=5, max_nodes=1).fit(X_ALL[:1], np.ones(1)).predict(X_ALL[1:4])
    assert np.all(np.isfinite(tiny))
