from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from lightning_nas import Depth, Kernel, SearchSpace, Width


def test_max_min_sample_size() -> None:
    space = SearchSpace({"a": [32, 8, 16], "b": [1, 2, 3]})
    assert space.max_arch() == {"a": 32, "b": 3}
    assert space.min_arch() == {"a": 8, "b": 1}
    assert space.size == 9
    samples = {tuple(space.sample(seed).values()) for seed in range(200)}
    assert len(samples) == 9  # every architecture is reachable


def test_distributions_keep_order_when_evenly_spaced() -> None:
    dists = SearchSpace({"even": [16, 32, 48], "uneven": [3, 5, 9], "fixed": [4]}).distributions()
    assert dists["even"] == IntDistribution(16, 48, step=16)
    assert dists["uneven"] == CategoricalDistribution((3, 5, 9))
    assert dists["fixed"] == IntDistribution(4, 4)


def test_suggest_round_trips_through_a_real_study(tmp_path) -> None:
    space = SearchSpace({"w": [8, 16, 32], "k": [3, 5]})
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: float(space.suggest(t)["w"]), n_trials=15)
    reloaded = optuna.load_study(study_name="s", storage=storage)
    best = space.arch_from_params(reloaded.best_trial.params)
    assert best == space.validate(best)
    assert all(space.validate(space.arch_from_params(t.params)) for t in reloaded.trials)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"w": 8, "zzz": 1}, "unknown dimensions"),
        ({}, "misses dimensions"),
        ({"w": 12}, "not allowed"),
    ],
)
def test_validate_names_the_problem(arch, message) -> None:
    with pytest.raises(ValueError, match=message):
        SearchSpace({"w": [8, 16]}).validate(arch)


def test_restrict_and_bad_spaces() -> None:
    space = SearchSpace([Width(["fc:out"], [8, 16, 32], name="w")])
    assert space.restrict({"w": [8, 16]})["w"].choices == (8, 16)
    assert space.restrict({"w": 16}).max_arch() == {"w": 16}
    with pytest.raises(ValueError, match="cannot restrict dimension 'w'"):
        space.restrict({"w": [64]})  # beyond the model's size
    with pytest.raises(KeyError, match="no dimension 'x'"):
        space.restrict({"x": [1]})
    with pytest.raises(ValueError, match="no allowed values"):
        SearchSpace({"w": []})
    with pytest.raises(ValueError, match="must lie in"):
        Width(["fc:out"], [8, 64], size=32)
    with pytest.raises(ValueError, match="odd"):
        Kernel(["conv"], [3, 4])
    with pytest.raises(ValueError, match="must lie in"):
        Depth("blocks", [0, 1], choices=[1, 3])


def test_dimension_equality_and_repr() -> None:
    a = Width(["fc:out"], [8, 16], name="w")
    assert a == Width(["fc:out"], [16, 8], name="w")
    assert a != Width(["fc:in"], [8, 16], name="w")
    assert "Width(" in repr(a) and "fc:out" in repr(a)


def test_sample_where_draws_only_matching_architectures() -> None:
    space = SearchSpace({"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]})
    rng = random.Random(0)
    draws = [space.sample(rng, where=lambda arch: arch["a"] * arch["b"] <= 4) for _ in range(200)]
    assert all(arch["a"] * arch["b"] <= 4 for arch in draws)
    assert len({tuple(arch.values()) for arch in draws}) == 8  # every matching arch turns up
    with pytest.raises(ValueError, match="no architecture satisfying"):
        space.sample(rng, where=lambda arch: False, max_draws=50)


def test_depth_size_is_the_number_of_blocks() -> None:
    assert Depth("blocks", [0, 1, 2], choices=[1, 3], size=3).size == 3
    with pytest.raises(ValueError, match="size=5 but 3 skippable blocks"):
        Depth("blocks", [0, 1, 2], choices=[1, 3], size=5)
