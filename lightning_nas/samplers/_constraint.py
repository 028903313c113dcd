from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from lightning_nas._optuna import invalidate_trial_cache

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial


ConstraintFunc = Callable[[dict[str, Any]], float | Sequence[float]]
"""A resource constraint: ``params -> float or sequence of floats``, feasible when all <= 0."""

# Optuna 5 reads constraints from this list-valued system attribute (the form its deprecated
# ``constraints_func`` writes) as well as from the per-key ``constraints:<name>`` attributes that
# ``Trial.set_constraint`` writes. optuna-dashboard 0.21 only displays the list form, so the
# samplers write the list form: every Optuna sampler and the dashboard then agree.
_CONSTRAINTS_KEY = "constraints"
_REJECTED_KEY = "lightning_nas:rejected_by"
_N_REJECTED_KEY = "lightning_nas:n_rejected"


class NoFeasibleArchitectureError(RuntimeError):
    """Raised when a sampler finds no architecture that satisfies its constraint.

    The message names the constraint and says how many architectures were tried, so an
    unsatisfiable limit (for example a parameter budget below the smallest sub-network) is
    recognised at once instead of stalling the study.

    Example:

        .. testcode::

            import optuna
            from optuna.distributions import IntDistribution

            from lightning_nas.samplers import ConstrainedSampler
            from lightning_nas.samplers import NoFeasibleArchitectureError

            space = {"width": IntDistribution(8, 64, step=8)}
            sampler = ConstrainedSampler(
                optuna.samplers.RandomSampler(), lambda arch: 1.0, space, max_tries=20
            )
            study = optuna.create_study(sampler=sampler)
            try:
                study.optimize(lambda trial: trial.suggest_int("width", 8, 64, step=8), 1)
            except NoFeasibleArchitectureError as error:
                print(error)

        .. testoutput::
            :options: +ELLIPSIS

            No architecture satisfies constraint '<lambda>' after 20 sampled architectures...
    """


class _Constraint:
    """A user constraint with validated output and a memo, since samplers call it many times."""

    def __init__(self, func: ConstraintFunc, cache_size: int = 1 << 16) -> None:
        if not callable(func):
            raise TypeError(f"constraint must be callable, got {type(func).__name__}.")
        self.func = func
        self.name = getattr(func, "__qualname__", None) or repr(func)
        self._cache_size = cache_size
        self._cache: dict[tuple[tuple[str, Any], ...], tuple[float, ...]] = {}

    def __call__(self, params: Mapping[str, Any]) -> tuple[float, ...]:
        key = tuple(sorted(params.items()))
        values = self._cache.get(key)
        if values is None:
            values = self._evaluate(dict(params))
            if len(self._cache) >= self._cache_size:
                # A plain bounded dict keeps the sampler picklable, unlike functools.lru_cache.
                self._cache.clear()
            self._cache[key] = values
        return values

    def _evaluate(self, params: dict[str, Any]) -> tuple[float, ...]:
        raw = self.func(params)
        message = (
            f"Constraint {self.name!r} returned {raw!r}; expected a float or a sequence of "
            "floats (feasible when every value <= 0)."
        )
        if isinstance(raw, (str, bytes)):
            raise TypeError(message)
        try:
            values = tuple(float(v) for v in np.ravel(np.asarray(raw, dtype=np.float64)))
        except (TypeError, ValueError):
            raise TypeError(message) from None
        if len(values) == 0 or any(math.isnan(v) for v in values):
            raise ValueError(
                f"Constraint {self.name!r} returned {raw!r} for {params}; it must return at least one value and no NaN."
            )
        return values

    @staticmethod
    def is_feasible(values: Sequence[float]) -> bool:
        return all(v <= 0.0 for v in values)

    def infeasible_error(self, n_tried: int, closest: tuple[float, ...] | None) -> Exception:
        detail = "" if closest is None else f" The least violating sample had values {closest}."
        return NoFeasibleArchitectureError(
            f"No architecture satisfies constraint {self.name!r} after {n_tried} sampled "
            f"architectures.{detail} Relax the constraint or enlarge the search space "
            "(or raise max_tries if feasible architectures are very rare)."
        )


class _Closest:
    """The least violating constraint values seen, for the error message when nothing is feasible."""

    def __init__(self) -> None:
        self.values: tuple[float, ...] | None = None

    def note(self, values: tuple[float, ...]) -> None:
        if self.values is None or _violation(values) < _violation(self.values):
            self.values = values


def _violation(values: Sequence[float]) -> float:
    return sum(max(v, 0.0) for v in values)


def _record_rejection(
    study: Study,
    params: dict[str, Any],
    distributions: Mapping[str, BaseDistribution],
    values: Sequence[float],
    sampler_name: str,
) -> None:
    """Store a rejected architecture as a pruned trial carrying its constraint values.

    Model-based samplers (TPE, NSGA-II's constrained domination) read ``FrozenTrial.constraints``
    of finished trials, so the infeasible region becomes visible to them without the objective
    ever being evaluated there.
    """
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params=params,
            distributions={name: distributions[name] for name in params},
            system_attrs={_CONSTRAINTS_KEY: list(values), _REJECTED_KEY: sampler_name},
        )
    )
    # Samplers read trials through the study's per-ask cache; drop it so the next proposal
    # of this same trial already sees the rejection.
    invalidate_trial_cache(study)


def is_rejection(trial: FrozenTrial) -> bool:
    """Whether ``trial`` records an architecture a constrained sampler rejected (never evaluated)."""
    return _REJECTED_KEY in trial.system_attrs
