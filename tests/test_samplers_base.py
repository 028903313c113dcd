"""The behaviour the three architecture samplers share through their base class, on real studies."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, TabNASSampler
from lightning_nas.samplers._base import _ArchSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"w1": IntDistribution(1, 8), "w2": IntDistribution(1, 8)}


def budget(arch: dict) -> list[float]:
    return [arch["w1"] * arch["w2"] - 12.0, arch["w1"] - 6.0]


MAKERS: dict[str, Callable[..., BaseSampler]] = {
    "constrained": lambda **kw: ConstrainedSampler(optuna.samplers.RandomSampler(seed=1), budget, SPACE, **kw),
    "tabnas": lambda **kw: TabNASSampler(SPACE, budget, n_mc_samples=8, **kw),
    "predictor": lambda **kw: PredictorSampler(SPACE, constraint=budget, n_startup_trials=3, n_candidates=16, **kw),
}


def objective(trial: optuna.Trial) -> float:
    return float(trial.suggest_int("w1", 1, 8) + trial.suggest_int("w2", 1, 8))


def run(sampler: BaseSampler, n_trials: int = 6) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_accepted_architectures_carry_their_constraint_values(name: str) -> None:
    sampler = MAKERS[name](seed=0)
    assert isinstance(sampler, _ArchSampler)
    study = run(sampler)
    evaluated = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(evaluated) == 6
    for t in evaluated:
        values = budget(t.params)
        assert all(v <= 0 for v in values)
        assert t.system_attrs["constraints"] == values
        if name != "predictor":  # it filters candidates itself and rejects none one by one
            assert isinstance(t.system_attrs["lightning_nas:n_rejected"], int)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_seeded_runs_repeat_and_reseeding_changes_them(name: str) -> None:
    def archs(sampler: BaseSampler) -> list[tuple[int, int]]:
        study = run(sampler, n_trials=8)
        return [(t.params["w1"], t.params["w2"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]

    assert archs(MAKERS[name](seed=3)) == archs(MAKERS[name](seed=3))
    runs = []
    for _ in range(3):
        reseeded = MAKERS[name](seed=3)
        reseeded.reseed_rng()
        runs.append(archs(reseeded))
    # Three reseeded runs of 8 draws from 26 feasible archs coinciding would be a broken reseed.
    assert len({tuple(r) for r in runs}) > 1


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_constrained_dimension_is_never_sampled_alone(name: str) -> None:
    study = optuna.create_study(sampler=MAKERS[name](seed=0))

    def other_range(trial: optuna.Trial) -> float:
        trial.suggest_int("w1", 1, 8)
        # The jointly sampled w2 (<= 8) is outside this range, so Optuna would sample it alone.
        return float(trial.suggest_int("w2", 20, 30))

    with pytest.raises(ValueError, match=rf"{type(study.sampler).__name__}: .*'w2'.*declares"):
        study.optimize(other_range, n_trials=1)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_parameters_outside_the_space_come_from_the_fallback(name: str) -> None:
    def with_lr(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return objective(trial) - lr

    study = optuna.create_study(direction="maximize", sampler=MAKERS[name](seed=0))
    study.optimize(with_lr, n_trials=4)
    lrs = [t.params["lr"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 4


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("max_tries", [0, -3, 2.5, True])
def test_max_tries_is_checked_by_every_sampler(name: str, max_tries: object) -> None:
    with pytest.raises(ValueError, match="max_tries"):
        MAKERS[name](max_tries=max_tries)


@pytest.mark.parametrize("cls", [TabNASSampler, PredictorSampler])
def test_a_constraint_needs_a_declared_space(cls: type[BaseSampler]) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}: a constraint needs an explicit search_space"):
        cls(None, constraint=budget)
