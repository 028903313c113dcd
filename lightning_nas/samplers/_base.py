"""What the architecture samplers share: the declared space, the constraint, and their bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace

from lightning_nas._optuna import LazyRandomState, set_trial_system_attr
from lightning_nas.samplers._constraint import (
    _CONSTRAINTS_KEY,
    _N_REJECTED_KEY,
    ConstraintFunc,
    _Constraint,
)
from lightning_nas.samplers._space import SearchSpaceLike, _as_distributions, _relative_space

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState


class _ArchSampler(BaseSampler):
    """Base of the project's samplers: each subclass adds only its own way of proposing an arch.

    It holds the validated search space and constraint, a lazily seeded random generator and a
    ``fallback`` sampler for the parameters outside the architecture (and for their
    ``before_trial`` / ``after_trial`` hooks). It refuses to sample a constrained dimension on its
    own, because a constraint couples the whole architecture, and records on each trial the
    constraint values of the architecture it accepted and how many it rejected before it.

    ``search_space=None`` infers the space from completed trials (Optuna's intersection search
    space), which is refused together with a constraint: the first architecture must already be
    checked as a whole.
    """

    #: Whether the sampler refuses studies with several objectives.
    _single_objective = False

    def __init__(
        self,
        search_space: SearchSpaceLike | None,
        constraint: ConstraintFunc | None,
        *,
        max_tries: int,
        seed: int | None,
        fallback: BaseSampler | None = None,
    ) -> None:
        name = type(self).__name__
        if constraint is not None and search_space is None:
            raise ValueError(
                f"{name}: a constraint needs an explicit search_space, so that every "
                "architecture, including the first, is checked as a whole."
            )
        if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
            raise ValueError(f"{name}: max_tries must be an int >= 1, got {max_tries!r}.")
        self._search_space = None if search_space is None else _as_distributions(search_space)
        self._constraint = None if constraint is None else _Constraint(constraint)
        self._max_tries = max_tries
        self._rng = LazyRandomState(seed)
        self._fallback = RandomSampler(seed=seed) if fallback is None else fallback
        self._intersection = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self._rng.rng.seed()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return _relative_space(self._search_space, self._intersection, study)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._check_objectives(study)
        declared = (self._search_space or {}).get(param_name)
        if declared is not None and self._constraint is not None:
            # Optuna falls back to independent sampling for a declared dimension only when the
            # objective's distribution disagrees with it; sampling it alone could break the
            # constraint, so refuse loudly.
            raise ValueError(
                f"{type(self).__name__}: the objective suggested {param_name!r} with "
                f"{param_distribution}, but the search space declares {declared}; a constrained "
                "dimension cannot be sampled on its own. Suggest every architecture dimension with "
                "its declared distribution."
            )
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._fallback.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._fallback.after_trial(study, trial, state, values)

    def _check_objectives(self, study: Study) -> None:
        if self._single_objective and len(study.directions) > 1:
            raise ValueError(
                f"{type(self).__name__} optimises one objective; it cannot be used for multi-objective studies."
            )

    def _feasible(self, params: dict[str, Any]) -> bool:
        return self._constraint is None or self._constraint.is_feasible(self._constraint(params))

    def _accept(self, study: Study, trial: FrozenTrial, params: dict[str, Any], n_rejected: int | None = None) -> None:
        """Record the constraint values of the accepted ``params`` (and the rejections before it).

        The list form ``system_attrs["constraints"]`` is what Optuna reads as
        ``FrozenTrial.constraints`` and what optuna-dashboard displays.
        """
        if self._constraint is None:
            return
        set_trial_system_attr(study, trial, _CONSTRAINTS_KEY, list(self._constraint(params)))
        if n_rejected is not None:
            set_trial_system_attr(study, trial, _N_REJECTED_KEY, n_rejected)
