from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from optuna.study import StudyDirection
from optuna.trial import TrialState

from lightning_nas._optuna import cached_trials
from lightning_nas.samplers._base import _ArchSampler
from lightning_nas.samplers._constraint import ConstraintFunc, _Closest
from lightning_nas.samplers._space import SearchSpaceLike, _ArchSpace, _discrete_choices

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial


class TabNASSampler(_ArchSampler):
    r"""TabNAS controller: REINFORCE on a factorised policy with rejection of infeasible archs.

    The policy is one softmax per dimension, :math:`\pi_\theta(x) = \prod_d
    \mathrm{softmax}(\theta_d)[x_d]`. Architectures that violate the constraint are discarded
    the moment they are sampled: they are never evaluated and never rewarded. So the
    architectures that reach the objective follow the *truncated* policy

    .. math::

        p_V(x) = \frac{\pi_\theta(x)\,\mathbb{1}[x \in V]}{P(V)},\qquad
        P(V) = \sum_{z \in V} \pi_\theta(z) = \mathbb{E}_{z \sim \pi_\theta}\,\mathbb{1}[z \in V],

    where :math:`V` is the feasible set, and the controller maximises
    :math:`J(\theta) = \mathbb{E}_{x \sim p_V}[R(x)]`. By the score-function identity, for a
    feasible :math:`x`,

    .. math::

        \nabla_\theta J = \mathbb{E}_{x \sim p_V}\big[(R(x) - b)\,
        \nabla_\theta \log p_V(x)\big],\qquad
        \nabla_\theta \log p_V(x) = \nabla_\theta \log \pi_\theta(x)
        - \frac{\nabla_\theta P(V)}{P(V)},

    with :math:`\nabla_\theta P(V) = \mathbb{E}_{z \sim \pi_\theta}[\mathbb{1}[z \in V]
    \nabla_\theta \log \pi_\theta(z)]` (the baseline :math:`b` leaves the expectation unchanged
    because :math:`\mathbb{E}_{p_V}[\nabla \log p_V] = 0`). Both :math:`P(V)` and its gradient
    are estimated from ``n_mc_samples`` architectures drawn from :math:`\pi_\theta`, which costs
    only constraint evaluations: :math:`\hat P(V) = \frac1M \sum_j \mathbb{1}[z_j \in V]` and
    :math:`\widehat{\nabla P}(V) = \frac1M \sum_j \mathbb{1}[z_j \in V]\nabla\log\pi_\theta(z_j)`.
    Why the correction matters: since :math:`\mathbb{E}_{p_V}[\nabla \log \pi_\theta(x)] =
    \nabla \log P(V)`, plain REINFORCE on the filtered samples has expectation
    :math:`\nabla_\theta J + (J - b)\,\nabla_\theta \log P(V)`: whenever the baseline
    :math:`b` lags the mean feasible reward :math:`J` (early on, or with no baseline and
    positive rewards) it also pushes towards policies that make more architectures feasible,
    instead of towards better ones. The corrected estimator is unbiased for any baseline; with
    a well-tracking moving-average baseline the two differ little. TabNAS (Yang et al. 2022)
    describes this Monte-Carlo correction, but its exact estimator was not available here; the
    one above is derived from first principles.

    One update is made per completed trial, in trial-number order, with reward ``value`` for
    ``maximize`` and ``-value`` for ``minimize``, baseline an exponential moving average of past
    rewards (initialised by the first reward) and Adam as the optimiser. The policy is rebuilt
    from the study's completed trials, so resuming a study from storage, or several workers on
    one storage, continue the same learning (each worker replays the shared history; the
    Monte-Carlo draws differ). Dimensions with infinitely many values (float without step) and
    parameters outside the search space are sampled uniformly at random.

    With ``constraint=None`` this is a plain REINFORCE controller, which is how reward shaping
    (penalising violations inside the objective) is compared against rejection.

    Example:

        .. testcode::

            import optuna
            from optuna.distributions import CategoricalDistribution

            from lightning_nas.samplers import TabNASSampler

            space = {name: CategoricalDistribution([2, 3, 4]) for name in ("l1", "l2")}


            def n_params(arch):  # 2 inputs -> l1 -> l2 -> 1 output, with biases
                return 3 * arch["l1"] + arch["l1"] * arch["l2"] + 2 * arch["l2"] + 1


            def objective(trial):
                l1 = trial.suggest_categorical("l1", [2, 3, 4])
                l2 = trial.suggest_categorical("l2", [2, 3, 4])
                return l1 + 0.5 * l2


            sampler = TabNASSampler(space, constraint=lambda a: n_params(a) - 25, seed=0)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective, n_trials=30)
            assert all(n_params(t.params) <= 25 for t in study.trials)
            l1_probabilities = sampler.policy()["l1"]  # {2: ..., 3: ..., 4: ...}

    Args:
        search_space:
            The architecture dimensions: a ``lightning_nas.SearchSpace`` or a mapping of names
            to Optuna distributions. ``None`` infers them from completed trials (Optuna's
            intersection search space; the first trial is then random), which is only allowed
            without a constraint, because the constraint needs the whole architecture from the
            first trial on.
        constraint:
            ``params -> float or sequence of floats``, feasible when every value ``<= 0``.
        learning_rate:
            Adam step size on the policy logits.
        baseline_decay:
            Decay of the moving-average reward baseline.
        n_mc_samples:
            Architectures drawn from the policy per update to estimate :math:`P(V)` and its
            gradient; also the batch size of rejection sampling.
        max_tries:
            Policy samples examined per trial before raising
            :class:`~lightning_nas.samplers.NoFeasibleArchitectureError`.
        seed:
            Seed for the policy's sampling.
    """

    _single_objective = True

    def __init__(
        self,
        search_space: SearchSpaceLike | None = None,
        constraint: ConstraintFunc | None = None,
        *,
        learning_rate: float = 0.03,
        baseline_decay: float = 0.9,
        n_mc_samples: int = 256,
        max_tries: int = 1000,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}.")
        if learning_rate <= 0 or n_mc_samples < 1:
            raise ValueError(f"learning_rate must be > 0 and n_mc_samples >= 1; got {learning_rate}, {n_mc_samples}.")
        super().__init__(search_space, constraint, max_tries=max_tries, seed=seed)
        self._learning_rate = learning_rate
        self._baseline_decay = baseline_decay
        self._n_mc_samples = n_mc_samples

        self._distributions: dict[str, BaseDistribution] = {}
        self._choices: dict[str, list[Any]] = {}
        self._logits: dict[str, torch.Tensor] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._baseline: float | None = None
        self._consumed: set[int] = set()

    def policy(self) -> dict[str, dict[Any, float]]:
        """The current policy: for each dimension, the probability of each choice.

        It reflects every trial that had completed when the latest architecture was sampled.
        """
        return {name: dict(zip(self._choices[name], self._probs(name).tolist())) for name in self._logits}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._check_objectives(study)
        if not search_space:
            return {}
        self._set_dimensions(search_space)
        policy_names = [name for name in search_space if name in self._logits]
        rest = _ArchSpace({n: d for n, d in search_space.items() if n not in self._logits})
        self._learn(study, search_space, policy_names, rest)

        if self._constraint is None:
            index, others = self._draw(policy_names, rest, 1)
            return self._params(policy_names, index[0], others[0])
        closest = _Closest()
        n_tried = 0
        while n_tried < self._max_tries:
            n = min(self._n_mc_samples, self._max_tries - n_tried)
            index, others = self._draw(policy_names, rest, n)
            values = self._constraint_values(policy_names, index, others)
            for i, constraint_values in enumerate(values):
                if self._constraint.is_feasible(constraint_values):
                    params = self._params(policy_names, index[i], others[i])
                    self._accept(study, trial, params, n_tried + i)
                    return params
                closest.note(constraint_values)
            n_tried += n
        raise self._constraint.infeasible_error(n_tried, closest.values)

    def _set_dimensions(self, search_space: dict[str, BaseDistribution]) -> None:
        changed = False
        for name, distribution in search_space.items():
            choices = _discrete_choices(distribution)
            if choices is None or self._distributions.get(name) == distribution:
                continue
            self._distributions[name] = distribution
            self._choices[name] = choices
            self._logits[name] = torch.zeros(len(choices), dtype=torch.float64, requires_grad=True)
            changed = True
        if changed:
            # A new or redefined dimension restarts the optimiser's moments as well.
            self._optimizer = torch.optim.Adam(self._logits.values(), lr=self._learning_rate)

    def _probs(self, name: str) -> np.ndarray:
        return torch.softmax(self._logits[name].detach(), 0).numpy()

    def _draw(self, names: list[str], rest: _ArchSpace, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``n`` policy samples: choice indices ``(n, len(names))`` and the uniform rest."""
        rng = self._rng.rng
        columns = [rng.choice(len(self._choices[name]), size=n, p=self._probs(name)) for name in names]
        index = np.stack(columns, axis=1) if columns else np.zeros((n, 0), dtype=np.int64)
        return index, rest.sample(rng, n)

    def _params(self, names: list[str], row: np.ndarray, other: dict[str, Any]) -> dict[str, Any]:
        return {**other, **{name: self._choices[name][i] for name, i in zip(names, row)}}

    def _constraint_values(
        self, names: list[str], index: np.ndarray, others: list[dict[str, Any]]
    ) -> list[tuple[float, ...]]:
        """Constraint values of each draw, computing each distinct architecture once."""
        assert self._constraint is not None
        if others[0]:
            # Continuous dimensions were drawn too, so every draw is distinct.
            return [self._constraint(self._params(names, r, o)) for r, o in zip(index, others)]
        unique, inverse = np.unique(index, axis=0, return_inverse=True)
        values = [self._constraint(self._params(names, row, {})) for row in unique]
        return [values[i] for i in inverse.ravel()]

    def _learn(
        self,
        study: Study,
        search_space: dict[str, BaseDistribution],
        names: list[str],
        rest: _ArchSpace,
    ) -> None:
        complete = (TrialState.COMPLETE,)
        trials = cached_trials(study, complete)
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        for t in sorted(trials, key=lambda t: t.number):
            if t.number in self._consumed:
                continue
            self._consumed.add(t.number)
            if not names or not all(name in t.params for name in search_space):
                continue
            arch = {name: t.params[name] for name in search_space}
            if any(arch[name] not in self._choices[name] for name in names):
                continue
            if self._constraint is not None and not self._constraint.is_feasible(self._constraint(arch)):
                # Only feasible architectures carry a reward in TabNAS.
                continue
            assert t.value is not None
            self._update(arch, sign * t.value, names, rest)

    def _log_prob(self, names: list[str], index: torch.Tensor) -> torch.Tensor:
        """log pi of each row of choice indices ``(n, len(names))``."""
        return torch.stack([torch.log_softmax(self._logits[name], 0)[index[:, j]] for j, name in enumerate(names)]).sum(
            0
        )

    def _update(self, arch: dict[str, Any], reward: float, names: list[str], rest: _ArchSpace) -> None:
        if self._baseline is None:
            self._baseline = reward
            return
        advantage = reward - self._baseline
        decay = self._baseline_decay
        self._baseline = decay * self._baseline + (1 - decay) * reward

        chosen = torch.tensor([[self._choices[name].index(arch[name]) for name in names]])
        log_p = self._log_prob(names, chosen)[0]
        if self._constraint is not None:
            index, others = self._draw(names, rest, self._n_mc_samples)
            feasible = torch.tensor(
                [self._constraint.is_feasible(v) for v in self._constraint_values(names, index, others)],
                dtype=torch.float64,
            )
            if feasible.any():
                log_pi_z = self._log_prob(names, torch.from_numpy(index))
                log_p = _truncated_log_prob(log_p, log_pi_z, feasible)
        assert self._optimizer is not None
        self._optimizer.zero_grad()
        (-advantage * log_p).backward()
        self._optimizer.step()


def _truncated_log_prob(log_pi_x: torch.Tensor, log_pi_z: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    r"""Monte-Carlo surrogate of :math:`\log p_V(x) = \log \pi(x) - \log P(V)`.

    ``log_pi_z`` are the log-probabilities of draws :math:`z_j \sim \pi`, ``feasible`` their
    indicators. The value is :math:`\log \pi(x) - \log \hat P(V)` and, because
    ``exp(log_pi_z - log_pi_z.detach())`` is 1 with gradient :math:`\nabla \log \pi(z_j)`,
    autograd yields :math:`\nabla \log \pi(x) - \frac{1}{M \hat P(V)} \sum_j
    \mathbb{1}[z_j \in V] \nabla \log \pi(z_j)`, the estimator of the class docstring.
    """
    p_v = (feasible * torch.exp(log_pi_z - log_pi_z.detach())).mean()
    return log_pi_x - torch.log(p_v)
