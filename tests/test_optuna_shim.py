"""Pins the Optuna internals that ``lightning_nas._optuna`` wraps: an Optuna upgrade that changes one
of them fails here, by name, instead of somewhere inside a sampler."""

from __future__ import annotations

import copy
import itertools
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler
from optuna.trial import TrialState, create_trial

import lightning_nas
from lightning_nas import _optuna as shim


class _RecordingSampler(RandomSampler):
    """Writes through the shim from inside ``sample_relative``, as the project's samplers do."""

    def __init__(self, probe: dict[str, Any]) -> None:
        super().__init__(seed=0)
        self.probe = probe

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return {"x": IntDistribution(0, 3)}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        if not search_space:
            return {}
        shim.set_trial_system_attr(study, trial, "constraints", [-1.0, 0.5])
        shim.set_trial_system_attr(study, trial, "lightning_nas:probe", {"a": 1})
        before = len(shim.cached_trials(study))
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0}, distributions=search_space))
        self.probe["stale"] = len(shim.cached_trials(study)) - before
        shim.invalidate_trial_cache(study)
        self.probe["fresh"] = len(shim.cached_trials(study)) - before
        self.probe["complete"] = len(shim.cached_trials(study, (TrialState.COMPLETE,)))
        return {"x": 2}


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_trial_attributes_and_trial_cache(storage: str, tmp_path: Path) -> None:
    url = None if storage == "memory" else f"sqlite:///{tmp_path / 'study.db'}"
    probe: dict[str, Any] = {}
    study = optuna.create_study(storage=url, sampler=_RecordingSampler(probe))
    study.optimize(lambda t: float(t.suggest_int("x", 0, 3)), n_trials=2)
    evaluated = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.params["x"] for t in evaluated] == [2, 2]
    # The list form is what FrozenTrial.constraints (and optuna-dashboard) read.
    assert all(t.constraints == {"0": -1.0, "1": 0.5} for t in evaluated)
    assert all(t.system_attrs["lightning_nas:probe"] == {"a": 1} for t in evaluated)
    # Within one ask the cache hides a trial added meanwhile until it is invalidated.
    assert probe == {"stale": 0, "fresh": 1, "complete": 1}


def test_contains_takes_external_values() -> None:
    ints = IntDistribution(8, 64, step=8)
    assert [shim.contains(ints, v) for v in (8, 24, 64, 20, 72, 0)] == [True, True, True, False, False, False]
    floats = FloatDistribution(0.0, 1.0, step=0.25)
    assert [shim.contains(floats, v) for v in (0.0, 0.75, 0.3, 1.5)] == [True, True, False, False]
    assert shim.contains(FloatDistribution(1e-4, 1.0, log=True), 0.01)
    choices = CategoricalDistribution(["relu", "gelu", 3])
    assert [shim.contains(choices, v) for v in ("gelu", 3, "tanh")] == [True, True, False]
    assert not shim.contains(ints, "wide")


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def test_non_domination_rank_matches_definition() -> None:
    rng = np.random.default_rng(0)
    losses = rng.integers(0, 5, size=(40, 3)).astype(float)  # ties and duplicates on purpose
    ranks = shim.non_domination_rank(losses)
    # Rank r = 0 for non-dominated points; otherwise 1 + the highest rank among its dominators.
    expected = np.full(len(losses), -1)
    remaining = set(range(len(losses)))
    level = 0
    while remaining:
        front = {i for i in remaining if not any(_dominates(losses[j], losses[i]) for j in remaining)}
        for i in front:
            expected[i] = level
        remaining -= front
        level += 1
    np.testing.assert_array_equal(ranks, expected)
    assert shim.non_domination_rank(np.empty((0, 2))).shape == (0,)


def _box_union_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Inclusion-exclusion over the boxes [p, reference]: exact, exponential, fine for 6 points."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(reference - corner, 0.0, None)))
    return total


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_hypervolume_is_the_exact_dominated_volume(n_objectives: int) -> None:
    rng = np.random.default_rng(n_objectives)
    points = rng.uniform(0.0, 1.0, size=(6, n_objectives))
    reference = np.full(n_objectives, 1.2)
    expected = _box_union_volume(points, reference)
    assert shim.hypervolume(points, reference) == pytest.approx(expected, rel=1e-9)
    front = points[shim.non_domination_rank(points) == 0]
    assert shim.hypervolume(front, reference, assume_pareto=True) == pytest.approx(expected, rel=1e-9)


def test_search_space_transform_is_the_unit_cube_with_one_hot() -> None:
    space = {
        "act": CategoricalDistribution(["relu", "gelu", "silu"]),
        "depth": IntDistribution(1, 4),
        "width": IntDistribution(8, 64, step=8),
    }
    transform = shim.SearchSpaceTransform(space, transform_0_1=True)
    assert transform.bounds.shape == (5, 2)  # 3 one-hot columns + 2 numeric
    np.testing.assert_array_equal(transform.bounds, np.tile([0.0, 1.0], (5, 1)))
    arch = {"act": "gelu", "depth": 3, "width": 40}
    encoded = transform.transform(arch)
    assert encoded.shape == (5,) and np.all((encoded >= 0) & (encoded <= 1))
    np.testing.assert_array_equal(encoded[:3], [0.0, 1.0, 0.0])
    assert transform.untransform(encoded) == arch
    # Any point of the cube maps to a value on each distribution's grid.
    for row in np.random.default_rng(0).uniform(size=(50, 5)):
        params = transform.untransform(row)
        assert all(shim.contains(space[name], value) for name, value in params.items())
        assert type(params["width"]) is int


def test_lazy_random_state() -> None:
    a, b = shim.LazyRandomState(3), shim.LazyRandomState(3)
    assert isinstance(a.rng, np.random.RandomState)
    assert a.rng.randint(1 << 30) == b.rng.randint(1 << 30)
    copied = copy.deepcopy(a)
    assert copied.rng.randint(1 << 30) == a.rng.randint(1 << 30)  # a copy continues the same stream
    # Unseeded: nothing is drawn at construction, so deep copies made before use do not share a
    # stream (samplers are deep-copied per worker process).
    lazy = shim.LazyRandomState()
    first, second = copy.deepcopy(lazy), copy.deepcopy(lazy)
    assert first.rng.randint(1 << 30, size=4).tolist() != second.rng.randint(1 << 30, size=4).tolist()


def test_experimental_class_and_function() -> None:
    @shim.experimental("median 34 queries vs TPE 43.5")
    class Thing:
        """A thing.

        Args:
            x: a value.
        """

        def __init__(self, x: int) -> None:
            self.x = x

    @shim.experimental("tau 0.46 vs #params 0.53")
    def score(x: int) -> int:
        """Score ``x``."""
        return 2 * x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Thing(4).x == 4
        assert score(5) == 10
    assert [w.category for w in caught] == [optuna.exceptions.ExperimentalWarning] * 2
    assert "median 34 queries vs TPE 43.5" in str(caught[0].message)
    assert "Thing is experimental" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller
    assert "tau 0.46 vs #params 0.53" in str(caught[1].message)
    assert "Experimental" in Thing.__doc__ and "median 34 queries vs TPE 43.5" in Thing.__doc__
    assert "        Experimental" in Thing.__doc__  # indented like the docstring's body
    assert score.__name__ == "score" and "tau 0.46" in score.__doc__
    with pytest.raises(ValueError, match="measured figure"):
        shim.experimental("  ")


_PRIVATE_OPTUNA = re.compile(
    r"from optuna(\.\w+)*\._\w+|optuna(\.\w+)*\._\w+|\._storage\b|_thread_local|\._trial_id\b"
    r"|\._get_trials\(|\._contains\(|_raise_error_if_multi_objective|_is_multi_objective"
)


def test_no_private_optuna_use_outside_the_shim() -> None:
    package = Path(lightning_nas.__file__).parent
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "_optuna.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _PRIVATE_OPTUNA.search(line)
    ]
    assert offenders == []


def test_features_without_a_measured_benefit_are_marked_experimental() -> None:
    from lightning_nas.proxies import PROXIES, compute_proxy
    from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, TabNASSampler

    space = {"w": IntDistribution(1, 4)}

    def experimental_warnings(make: Any) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make()
        return [str(w.message) for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]

    assert any("34 queries" in m for m in experimental_warnings(lambda: PredictorSampler(space)))
    assert experimental_warnings(lambda: TabNASSampler(space)) == []
    assert experimental_warnings(lambda: ConstrainedSampler(RandomSampler(), lambda a: 0.0, space)) == []

    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    zero_cost = ["sigeo", "zico", "synflow", "snip", "grad_norm", "naswot", "jacob_cov", "fisher"]
    baselines = ["params", "flops"]
    measured = {name: experimental_warnings(lambda name=name: compute_proxy(name, model, batches)) for name in PROXIES}
    assert all(measured[name] == [] for name in baselines)
    for name in zero_cost:
        assert any("Spearman" in m and "#params reaches +0.70" in m for m in measured[name]), name
        assert "benchmarks/proxy_quality.py" in PROXIES[name].__doc__
