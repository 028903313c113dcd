"""TabNASSampler: the rejection-corrected policy gradient and the TabNAS toy."""

from __future__ import annotations

import itertools

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from lightning_nas.samplers import NoFeasibleArchitectureError, TabNASSampler
from lightning_nas.samplers._tabnas import _truncated_log_prob

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The TabNAS toy: an MLP 2 -> l1 -> l2 -> 1 with biases, l1, l2 in {2, 3, 4}, at most 25
# parameters. Feasible: 2-2, 2-3, 2-4, 3-2, 3-3 (25), 4-2 (25); infeasible: 3-4, 4-3, 4-4.
# The paper's reward is not available; this quality table (ours) has the paper's property:
# bigger is never worse, 4-2 is the best feasible net, and the penalised controller misses it.
SIZES = [2, 3, 4]
QUALITY = {
    (2, 2): 0.50, (2, 3): 0.60, (2, 4): 0.76,
    (3, 2): 0.68, (3, 3): 0.73, (3, 4): 0.90,
    (4, 2): 0.80, (4, 3): 0.84, (4, 4): 0.90,
}  # fmt: skip
LIMIT = 25
SPACE = {"l1": CategoricalDistribution(SIZES), "l2": CategoricalDistribution(SIZES)}
N_TRIALS = 200


def n_params(arch: dict) -> int:
    return 3 * arch["l1"] + arch["l1"] * arch["l2"] + 2 * arch["l2"] + 1


def params_limit(arch: dict) -> float:
    return n_params(arch) - LIMIT


FEASIBLE = [(a, b) for a, b in itertools.product(SIZES, SIZES) if n_params({"l1": a, "l2": b}) <= LIMIT]


def test_toy_has_the_stated_property() -> None:
    assert FEASIBLE == [(2, 2), (2, 3), (2, 4), (3, 2), (3, 3), (4, 2)]
    assert max(FEASIBLE, key=QUALITY.__getitem__) == (4, 2)
    assert max(QUALITY, key=QUALITY.__getitem__) not in FEASIBLE


def most_likely(sampler: TabNASSampler, feasible_only: bool) -> tuple[int, int]:
    policy = sampler.policy()
    nets = FEASIBLE if feasible_only else list(itertools.product(SIZES, SIZES))
    return max(nets, key=lambda n: policy["l1"][n[0]] * policy["l2"][n[1]])


def run_toy(seed: int, penalty: float | None, direction: str = "maximize") -> TabNASSampler:
    """``penalty=None``: TabNAS rejection; else reward shaping with that penalty weight."""
    constraint = params_limit if penalty is None else None
    sampler = TabNASSampler(SPACE, constraint, seed=seed)
    sign = 1.0 if direction == "maximize" else -1.0

    def objective(trial: optuna.Trial) -> float:
        arch = {name: trial.suggest_categorical(name, SIZES) for name in SPACE}
        excess = max(0.0, n_params(arch) / LIMIT - 1.0)
        if penalty is None:
            assert excess == 0.0, "TabNAS evaluated an infeasible net"
        return sign * (QUALITY[(arch["l1"], arch["l2"])] - (penalty or 0.0) * excess)

    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(objective, n_trials=N_TRIALS)
    return sampler


def test_tabnas_solves_the_toy() -> None:
    finals = [most_likely(run_toy(seed, None), feasible_only=True) for seed in range(20)]
    assert finals.count((4, 2)) >= 19, finals


@pytest.mark.parametrize("penalty", [0.1, 1.0, 10.0])
def test_reward_shaping_misses_the_toy_optimum(penalty: float) -> None:
    finals = [most_likely(run_toy(seed, penalty), feasible_only=False) for seed in range(10)]
    assert finals.count((4, 2)) <= 3, finals


def test_minimize_direction() -> None:
    finals = [most_likely(run_toy(seed, None, direction="minimize"), feasible_only=True) for seed in range(3)]
    # Minimising the negated quality is the same problem, so the same answer is expected.
    assert finals == [(4, 2)] * 3


def test_monte_carlo_gradient_matches_the_exact_one() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    feasible = torch.tensor([float(n in FEASIBLE) for n in itertools.product(SIZES, SIZES)], dtype=torch.float64)
    x = SIZES.index(4) * 3 + SIZES.index(2)

    def log_pi_all() -> torch.Tensor:
        # log pi of the 9 nets, in itertools.product order.
        a, b = (torch.log_softmax(t, 0) for t in logits)
        return (a[:, None] + b[None, :]).reshape(-1)

    exact = log_pi_all()[x] - torch.logsumexp(log_pi_all()[feasible.bool()], 0)
    exact_grad = torch.autograd.grad(exact, logits)

    draws = torch.multinomial(log_pi_all().exp().detach(), 200_000, replacement=True)
    log_pi = log_pi_all()
    estimate = _truncated_log_prob(log_pi[x], log_pi[draws], feasible[draws])
    estimate_grad = torch.autograd.grad(estimate, logits)

    assert estimate.item() == pytest.approx(exact.item(), abs=0.01)
    for e, g in zip(exact_grad, estimate_grad):
        torch.testing.assert_close(g, e, atol=0.01, rtol=0.0)


def quality(trial: optuna.Trial) -> float:
    arch = {name: trial.suggest_categorical(name, SIZES) for name in SPACE}
    return QUALITY[(arch["l1"], arch["l2"])]


def test_infeasible_trials_are_neither_sampled_nor_rewarded() -> None:
    sampler = TabNASSampler(SPACE, params_limit, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # Trials from elsewhere: the first feasible one only initialises the baseline; an
    # infeasible one, however good, must not move the policy.
    for (l1, l2), value in [((2, 2), 0.5), ((4, 4), 100.0)]:
        study.add_trial(optuna.create_trial(params={"l1": l1, "l2": l2}, distributions=SPACE, value=value))
    study.optimize(quality, n_trials=1)
    assert sampler.policy() == {name: {s: pytest.approx(1 / 3) for s in SIZES} for name in SPACE}

    study.optimize(quality, n_trials=30)
    sampled = study.trials[2:]
    assert all((t.params["l1"], t.params["l2"]) in FEASIBLE for t in sampled)
    # Evaluated trials carry their constraint values; nothing infeasible reached the objective.
    assert all(t.constraints["0"] <= 0 for t in sampled)
    assert sampler.policy() != {name: {s: 1 / 3 for s in SIZES} for name in SPACE}


def test_unsatisfiable_constraint_fails_clearly() -> None:
    def tiny_budget(arch: dict) -> float:
        return n_params(arch) - 5

    sampler = TabNASSampler(SPACE, tiny_budget, max_tries=300, seed=0)
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(NoFeasibleArchitectureError, match=r"tiny_budget.*after 300 sampled"):
        study.optimize(lambda t: t.suggest_categorical("l1", SIZES), n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="explicit search_space"):
        TabNASSampler(None, params_limit)
    with pytest.raises(ValueError, match="baseline_decay"):
        TabNASSampler(SPACE, baseline_decay=1.0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=TabNASSampler(SPACE))
    with pytest.raises(ValueError, match="multi-objective"):
        study.optimize(lambda t: (t.suggest_categorical("l1", SIZES), 0.0), n_trials=1)
    assert TabNASSampler(SPACE).policy() == {}
