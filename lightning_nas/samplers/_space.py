from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from lightning_nas._optuna import SearchSpaceTransform, contains

ArchKey = tuple[Any, ...]


class _HasDistributions(Protocol):
    def distributions(self) -> dict[str, BaseDistribution]: ...


SearchSpaceLike = Mapping[str, BaseDistribution] | _HasDistributions
"""Names to Optuna distributions, or a ``lightning_nas.SearchSpace`` (via ``distributions()``)."""


def _as_distributions(search_space: SearchSpaceLike) -> dict[str, BaseDistribution]:
    to_distributions = getattr(search_space, "distributions", None)
    space = dict(to_distributions() if callable(to_distributions) else search_space)
    wrong = {name: d for name, d in space.items() if not isinstance(d, BaseDistribution)}
    if wrong:
        raise TypeError(
            f"search_space must map names to optuna distributions (or be a lightning_nas.SearchSpace); got {wrong}."
        )
    return space


def _discrete_choices(distribution: BaseDistribution) -> list[Any] | None:
    """All values of a finite distribution, or None for a continuous one."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = int(round((distribution.high - distribution.low) / distribution.step))
        return [float(distribution.low + i * distribution.step) for i in range(n + 1)]
    return None


class _ArchSpace:
    """Uniform sampling, one-step neighbourhoods and numeric encodings of a search space.

    Built on Optuna's own search-space transform, so sampled values have exactly the types and
    grids that ``RandomSampler`` would produce, and the encoding is the unit-cube one (one-hot for
    categoricals) that Optuna's GP sampler models.
    """

    def __init__(self, search_space: Mapping[str, BaseDistribution]) -> None:
        # Sorted names make keys and encodings independent of dict insertion order.
        self.names = sorted(search_space)
        self.search_space = {name: search_space[name] for name in self.names}
        # Optuna's transform refuses an empty space; an empty space has one (empty) architecture.
        self._transform = SearchSpaceTransform(self.search_space, transform_0_1=True) if self.names else None
        self._choices = {name: _discrete_choices(d) for name, d in self.search_space.items()}

    @property
    def n_features(self) -> int:
        return 0 if self._transform is None else int(self._transform.bounds.shape[0])

    def key(self, params: Mapping[str, Any]) -> ArchKey:
        return tuple(params[name] for name in self.names)

    def contains(self, params: Mapping[str, Any]) -> bool:
        return all(name in params and contains(d, params[name]) for name, d in self.search_space.items())

    def trial_params(self, trial: FrozenTrial) -> dict[str, Any] | None:
        """The trial's architecture if it was sampled in this space, else None."""
        if not self.contains(trial.params):
            return None
        return {name: trial.params[name] for name in self.names}

    def sample(self, rng: np.random.RandomState, n: int) -> list[dict[str, Any]]:
        if self._transform is None:
            return [{} for _ in range(n)]
        unit = rng.uniform(0.0, 1.0, size=(n, self.n_features))
        return [self._transform.untransform(row) for row in unit]

    def neighbours(
        self, params: Mapping[str, Any], rng: np.random.RandomState, max_enumerated: int = 16
    ) -> list[dict[str, Any]]:
        """Architectures that differ from ``params`` in exactly one dimension.

        Dimensions with at most ``max_enumerated`` values are enumerated; larger or continuous
        ones contribute ``max_enumerated`` random values, so the neighbourhood stays small.
        """
        out = []
        for name in self.names:
            choices = self._choices[name]
            if choices is None:
                choices = [draw[name] for draw in self.sample(rng, max_enumerated)]
            elif len(choices) > max_enumerated:
                picked = rng.choice(len(choices), size=max_enumerated, replace=False)
                choices = [choices[i] for i in picked]
            for value in choices:
                if value != params[name]:
                    out.append({**params, name: value})
        return out

    def encode(self, archs: Iterable[Mapping[str, Any]]) -> np.ndarray:
        archs = list(archs)
        if self._transform is None:
            return np.zeros((len(archs), 0))
        rows = [self._transform.transform(dict(arch)) for arch in archs]
        return np.asarray(rows, dtype=np.float64).reshape(len(archs), self.n_features)


def _relative_space(
    declared: Mapping[str, BaseDistribution] | None, intersection: Any, study: Any
) -> dict[str, BaseDistribution]:
    """The declared architecture space, else the non-constant parameters every trial shares."""
    if declared is not None:
        return dict(declared)
    return {name: d for name, d in intersection.calculate(study).items() if not d.single()}
