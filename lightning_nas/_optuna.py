"""The one module that reaches into Optuna's private API.

Optuna's samplers rely on a few internals that have no public counterpart in Optuna 5 (writing a
system attribute from inside a sampler, the per-``ask`` trial cache, non-dominated sorting, exact
hypervolume, the unit-cube search-space transform, the deep-copy-safe random state). The rest of
``lightning_nas`` uses them only through the names below, and ``tests/test_optuna_shim.py`` pins
the behaviour each one is relied on for, so an Optuna upgrade that moves or changes an internal
fails there, in one place, instead of deep inside a sampler.

Public Optuna API is used wherever it exists: ``Study.directions`` (not ``_is_multi_objective``),
``BaseDistribution.to_internal_repr`` and :class:`optuna.exceptions.ExperimentalWarning`. Checked
against Optuna 5.0: it has no public hypervolume or non-dominated sort (only
``plot_hypervolume_history``), no public way for a sampler to write a trial attribute (the storage
is ``Study._storage``; ``Trial.set_system_attr`` is gone), and ``experimental_class`` lives in the
private ``optuna._experimental``, whose note links to Optuna's own releases, hence
:func:`experimental` here.
"""

from __future__ import annotations

import functools
import textwrap
import warnings
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from optuna._hypervolume import compute_hypervolume as _compute_hypervolume
from optuna._transform import _SearchSpaceTransform
from optuna.exceptions import ExperimentalWarning
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study._multi_objective import _fast_non_domination_rank

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ExperimentalWarning",
    "LazyRandomState",
    "SearchSpaceTransform",
    "cached_trials",
    "contains",
    "experimental",
    "hypervolume",
    "invalidate_trial_cache",
    "non_domination_rank",
    "set_trial_system_attr",
]

#: Optuna's transform of a search space to a numeric box (``transform_0_1=True``: the unit cube,
#: one-hot for categoricals) and back (``untransform`` snaps to each distribution's grid).
SearchSpaceTransform = _SearchSpaceTransform

_T = TypeVar("_T")


def set_trial_system_attr(study: Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Store a system attribute on a running trial from inside a sampler.

    Samplers only see a :class:`~optuna.trial.FrozenTrial`; Optuna's own samplers (NSGA-II) write
    through the storage by trial id, as here. ``Trial.set_system_attr`` was removed in Optuna 4.
    """
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def cached_trials(
    study: Study, states: Container[TrialState] | None = None, *, deepcopy: bool = False
) -> list[FrozenTrial]:
    """The study's trials through the per-``ask`` cache that Optuna's samplers read.

    Several samplers of one trial (a wrapper and its base) then share one storage read; the
    public ``Study.get_trials`` bypasses the cache.
    """
    return study._get_trials(deepcopy=deepcopy, states=states, use_cache=True)


def invalidate_trial_cache(study: Study) -> None:
    """Drop the per-``ask`` trial cache, so that a trial added during sampling is seen at once."""
    study._thread_local.cached_all_trials = None


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external representation) is a value of ``distribution``.

    Unlike Optuna's internal check it takes the value as a user writes it and answers ``False``
    for a value of the wrong type instead of raising.

    Example:
        >>> from optuna.distributions import IntDistribution
        >>> contains(IntDistribution(8, 64, step=8), 24), contains(IntDistribution(8, 64, step=8), 20)
        (True, False)
    """
    try:
        internal = distribution.to_internal_repr(value)
    except (TypeError, ValueError):
        return False
    return bool(distribution._contains(internal))


def non_domination_rank(losses: np.ndarray) -> np.ndarray:
    """0-based non-domination rank of each row of ``losses`` (every column minimised).

    Example:
        >>> non_domination_rank(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]])).tolist()
        [0, 0, 1]
    """
    return _fast_non_domination_rank(np.asarray(losses, dtype=np.float64))


def hypervolume(points: np.ndarray, reference: np.ndarray, *, assume_pareto: bool = False) -> float:
    """Exact hypervolume dominated by ``points`` (all minimised) up to ``reference``.

    ``assume_pareto=True`` skips the non-dominated filtering (a speed-up only).

    Example:
        >>> hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0]))
        3.0
    """
    return float(_compute_hypervolume(np.asarray(points, dtype=np.float64), np.asarray(reference), assume_pareto))


def experimental(evidence: str) -> Callable[[_T], _T]:
    """Mark a class or function as experimental, naming the measurement that keeps it so.

    Like Optuna's ``experimental_class`` / ``experimental_func`` (whose note points at Optuna's own
    releases), it appends a note to the docstring and emits an
    :class:`~optuna.exceptions.ExperimentalWarning` when the class is instantiated or the function
    called; the warning carries ``evidence``, the benchmark figure that does not (yet) show a
    benefit, so a user can judge whether to rely on it.

    Example:
        >>> @experimental("ties with random search on the toy benchmark")
        ... def guess() -> int:
        ...     return 4
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = guess()
        >>> value, caught[0].category.__name__
        (4, 'ExperimentalWarning')
    """
    if not isinstance(evidence, str) or not evidence.strip():
        raise ValueError("experimental() needs the measured figure that keeps the feature experimental.")

    def decorate(obj: _T) -> _T:
        name = getattr(obj, "__qualname__", repr(obj))
        message = (
            f"{name} is experimental: its benefit is not shown by the benchmarks ({evidence}). "
            "The interface may change."
        )
        note = f"\n\n.. note::\n    Experimental: its benefit is not shown by the benchmarks ({evidence}).\n"
        if isinstance(obj, type):
            original_init = obj.__init__

            @functools.wraps(original_init)
            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                warnings.warn(message, ExperimentalWarning, stacklevel=2)
                original_init(self, *args, **kwargs)

            obj.__init__ = init  # type: ignore[misc]
            obj.__doc__ = _with_note(obj.__doc__, note)
            return obj

        if not callable(obj):
            raise TypeError(f"experimental() decorates a class or a function, got {type(obj).__name__}.")
        func: Callable[..., Any] = obj

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, ExperimentalWarning, stacklevel=2)
            return func(*args, **kwargs)

        wrapper.__doc__ = _with_note(func.__doc__, note)
        return wrapper  # type: ignore[return-value]

    return decorate


def _with_note(doc: str | None, note: str) -> str:
    doc = doc or ""
    # Indent the note like the docstring's body so that Sphinx renders it inside it.
    lines = [line for line in doc.splitlines()[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    return doc.rstrip() + textwrap.indent(note, " " * indent)
