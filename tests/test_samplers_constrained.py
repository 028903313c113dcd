"""ConstrainedSampler inside real Optuna studies."""

from __future__ import annotations

import itertools
import math
import warnings

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from lightning_nas.samplers import ConstrainedSampler, NoFeasibleArchitectureError, _constrained

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "w1": IntDistribution(16, 128, step=16),
    "w2": IntDistribution(16, 128, step=16),
    "depth": IntDistribution(1, 4),
}
LIMIT = 5_000


def n_params(arch: dict) -> int:
    return arch["depth"] * arch["w1"] * arch["w2"] + arch["w2"] * 10


def params_limit(arch: dict) -> float:
    return n_params(arch) - LIMIT


def suggest(trial: optuna.Trial) -> dict:
    return {
        "w1": trial.suggest_int("w1", 16, 128, step=16),
        "w2": trial.suggest_int("w2", 16, 128, step=16),
        "depth": trial.suggest_int("depth", 1, 4),
    }


def accuracy(arch: dict) -> float:
    # Bigger is better, so the optimum sits on the constraint boundary.
    return math.log(n_params(arch)) + 0.01 * arch["w1"]


def objective(trial: optuna.Trial) -> float:
    return accuracy(suggest(trial))


ALL_ARCHS = [
    dict(zip(SPACE, values)) for values in itertools.product(range(16, 129, 16), range(16, 129, 16), range(1, 5))
]
FEASIBLE = [a for a in ALL_ARCHS if params_limit(a) <= 0]


def test_search_space_is_mostly_infeasible() -> None:
    # The tests below are only meaningful if the constraint rejects most of the space.
    assert 0.1 < len(FEASIBLE) / len(ALL_ARCHS) < 0.4


def check_study(study: optuna.Study) -> None:
    """Every evaluated trial is feasible and carries its constraint values, in both forms."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for t in complete:
        arch = {name: t.params[name] for name in SPACE}
        assert params_limit(arch) <= 0, arch
        # The list form that optuna-dashboard 0.21 displays ...
        assert t.system_attrs["constraints"] == [params_limit(arch)]
        # ... is what Optuna 5 reads as the trial's constraints.
        assert t.constraints == {"0": params_limit(arch)}
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert t.system_attrs["lightning_nas:rejected_by"] == "ConstrainedSampler"
        assert t.constraints["0"] > 0


@pytest.mark.parametrize(
    "make_base",
    [
        lambda: optuna.samplers.RandomSampler(seed=1),
        lambda: optuna.samplers.TPESampler(seed=1),
        lambda: optuna.samplers.TPESampler(seed=1, multivariate=True),
        lambda: optuna.samplers.NSGAIISampler(population_size=8, seed=1),
    ],
    ids=["random", "tpe", "tpe-multivariate", "nsga2"],
)
def test_never_returns_a_violating_architecture(make_base) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        base = make_base()
    sampler = ConstrainedSampler(base, params_limit, SPACE, seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=40)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 40
    check_study(study)


def run_tpe(n_trials: int = 80) -> tuple[optuna.Study, list[int]]:
    sampler = ConstrainedSampler(optuna.samplers.TPESampler(seed=0), params_limit, SPACE, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    return study, [t.system_attrs["lightning_nas:n_rejected"] for t in complete]


def test_tpe_learns_from_recorded_rejections(monkeypatch: pytest.MonkeyPatch) -> None:
    study, rejected = run_tpe()
    check_study(study)
    # It gets close to the best feasible architecture ...
    ranking = sorted((accuracy(a) for a in FEASIBLE), reverse=True)
    assert study.best_value >= ranking[4]
    # ... without ever needing the random fallback.
    assert max(rejected) < 16

    # Control: the same search with rejections kept invisible to TPE.
    monkeypatch.setattr(_constrained, "_record_rejection", lambda *args, **kwargs: None)
    _, rejected_blind = run_tpe()
    assert sum(rejected) < 0.5 * sum(rejected_blind)


def test_gp_sampler_does_not_stall() -> None:
    # GPSampler ignores pruned trials, so it cannot learn from rejections; the sampler has to
    # notice repeated proposals and fall back to rejection sampling.
    base = optuna.samplers.GPSampler(n_startup_trials=2, seed=0)
    sampler = ConstrainedSampler(base, params_limit, SPACE, patience=2, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=4)
    check_study(study)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4


def test_multi_objective_with_nsga2() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        base = optuna.samplers.NSGAIISampler(population_size=8, seed=0)
    sampler = ConstrainedSampler(base, params_limit, SPACE, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def two_objectives(trial: optuna.Trial) -> tuple[float, float]:
        arch = suggest(trial)
        return accuracy(arch), float(n_params(arch))

    study.optimize(two_objectives, n_trials=32)
    check_study(study)
    assert all(params_limit(t.params) <= 0 for t in study.best_trials)


def test_parameters_outside_the_space_pass_through() -> None:
    seen = []

    def constraint(params: dict) -> float:
        seen.append(set(params))
        return params_limit(params)

    sampler = ConstrainedSampler(optuna.samplers.TPESampler(seed=0), constraint, SPACE, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def with_lr(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return accuracy(suggest(trial)) - lr

    study.optimize(with_lr, n_trials=15)
    check_study(study)
    assert all(0 < t.params["lr"] < 0.1 for t in study.trials if t.state == TrialState.COMPLETE)
    assert all(names >= set(SPACE) for names in seen)


def test_unsatisfiable_constraint_fails_clearly() -> None:
    def below_smallest_network(arch: dict) -> float:
        return n_params(arch) - 10.0

    sampler = ConstrainedSampler(
        optuna.samplers.TPESampler(seed=0), below_smallest_network, SPACE, max_tries=50, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(NoFeasibleArchitectureError, match="below_smallest_network") as info:
        study.optimize(objective, n_trials=3)
    assert "after 50 sampled architectures" in str(info.value)
    # The study survives: the aborted trial is failed, not left running.
    assert study.get_trials(states=(TrialState.COMPLETE, TrialState.RUNNING)) == []
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 1
    # Only the base sampler's own proposals are recorded (at most ``patience`` of them).
    assert 0 < len(study.get_trials(states=(TrialState.PRUNED,))) <= 16


@pytest.mark.parametrize(
    "bad, error",
    [(lambda arch: float("nan"), ValueError), (lambda arch: "small", TypeError)],
    ids=["nan", "not-a-number"],
)
def test_invalid_constraint_values_are_reported(bad, error) -> None:
    sampler = ConstrainedSampler(optuna.samplers.RandomSampler(seed=0), bad, SPACE)
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(error, match="Constraint"):
        study.optimize(objective, n_trials=1)


def test_suggesting_a_declared_dimension_differently_is_an_error() -> None:
    sampler = ConstrainedSampler(optuna.samplers.RandomSampler(seed=0), params_limit, SPACE)
    study = optuna.create_study(sampler=sampler)

    def other_range(trial: optuna.Trial) -> float:
        # The jointly sampled w1 (<= 128) lies outside this range, so Optuna would sample w1
        # on its own, unchecked by the constraint.
        trial.suggest_int("w1", 200, 300)
        return 0.0

    with pytest.raises(ValueError, match="declares"):
        study.optimize(other_range, n_trials=1)


def test_constructor_validates_arguments() -> None:
    with pytest.raises(TypeError, match="BaseSampler"):
        ConstrainedSampler(object(), params_limit, SPACE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tries"):
        ConstrainedSampler(optuna.samplers.RandomSampler(), params_limit, SPACE, max_tries=0)
    with pytest.raises(TypeError, match="callable"):
        ConstrainedSampler(optuna.samplers.RandomSampler(), 3, SPACE)  # type: ignore[arg-type]


def test_all_samplers_take_the_projects_search_space() -> None:
    from lightning_nas import SearchSpace
    from lightning_nas.samplers import PredictorSampler, TabNASSampler

    # "heads" is not evenly spaced, so SearchSpace makes it categorical; the others are ints.
    space = SearchSpace({"hidden": [16, 32, 64, 128], "blocks": [1, 2, 3, 4], "heads": [1, 2, 8]})

    def budget(arch: dict) -> float:
        return arch["hidden"] * arch["blocks"] * arch["heads"] - 256

    samplers = [
        ConstrainedSampler(optuna.samplers.TPESampler(seed=0), budget, space),
        TabNASSampler(space, budget, seed=0),
        PredictorSampler(space, constraint=budget, n_startup_trials=4, n_candidates=64, seed=0),
    ]
    for sampler in samplers:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: float(sum(space.suggest(t).values())), n_trials=12)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == 12
        assert all(budget(space.arch_from_params(t.params)) <= 0 for t in complete)


def test_search_space_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="optuna distributions"):
        ConstrainedSampler(optuna.samplers.RandomSampler(), params_limit, {"w1": [16, 32]})
