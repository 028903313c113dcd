"""Named elastic dimensions, architectures as plain dicts, and their bridge to Optuna.

An *architecture* (``arch``) is a plain ``dict`` mapping each dimension name to a value: a number
of units for a :class:`Width` (channels, neurons, heads), a number of blocks for a :class:`Depth`,
a kernel size for a :class:`Kernel`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

__all__ = ["Arch", "Depth", "Dimension", "Kernel", "SearchSpace", "Width"]

Arch = dict[str, int]


def _sorted_choices(name: str, choices: Iterable[int]) -> tuple[int, ...]:
    values = tuple(sorted({int(c) for c in choices}))
    if not values:
        raise ValueError(f"dimension {name!r} has no allowed values")
    return values


class Dimension:
    """One elastic dimension: a name, its allowed values, and the full (largest) value.

    Args:
        choices: Allowed values, any order; stored sorted and deduplicated.
        size: The value of the full model. Defaults to the largest choice.
        name: The dimension's name (set by :class:`SearchSpace` from its key).
    """

    kind = "choice"
    _min_value = 1

    def __init__(self, choices: Iterable[int], size: int | None = None, name: str = "") -> None:
        self.name = name
        self.choices = _sorted_choices(name, choices)
        self.size = self.choices[-1] if size is None else int(size)
        if self.choices[-1] > self.size or self.choices[0] < self._min_value:
            raise ValueError(
                f"dimension {name!r}: choices {list(self.choices)} must lie in [{self._min_value}, {self.size}]"
            )

    @property
    def max(self) -> int:
        return self.choices[-1]

    @property
    def min(self) -> int:
        return self.choices[0]

    def _fields(self) -> dict[str, Any]:
        return {"choices": self.choices, "size": self.size, "name": self.name}

    def _replace(self, **changes: Any) -> Dimension:
        return type(self)(**(self._fields() | changes))

    def with_choices(self, choices: Iterable[int]) -> Dimension:
        """The same dimension with other allowed values."""
        return self._replace(choices=tuple(choices))

    def named(self, name: str) -> Dimension:
        return self._replace(name=name)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._fields() == self._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted((k, str(v)) for k, v in self._fields().items()))))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._fields().items() if v not in ("", None))
        return f"{type(self).__name__}({fields})"


class Width(Dimension):
    """A group of coupled tensor axes that shrink together.

    Args:
        axes: Where the dimension lives: ``"fc1:out"`` (output features/channels of a Linear,
            Conv2d or Embedding), ``"fc2:in"`` (input features/channels), or ``"bn1"`` (the
            feature axis of a norm layer or of a depthwise convolution).
        choices: Allowed numbers of units.
        unit: Features per unit, e.g. the head size when the dimension counts attention heads.
        size: Number of units of the full model (default: the largest choice).

    Example:
        >>> Width(["fc1:out", "fc2:in"], choices=[16, 32, 64]).max
        64
    """

    kind = "width"

    def __init__(
        self,
        axes: Sequence[str],
        choices: Iterable[int],
        unit: int = 1,
        size: int | None = None,
        name: str = "",
    ) -> None:
        super().__init__(choices, size, name)
        self.axes = tuple(axes)
        self.unit = int(unit)

    def _fields(self) -> dict[str, Any]:
        return {"axes": self.axes, **super()._fields(), "unit": self.unit}


class Depth(Dimension):
    """How many blocks of a container (``nn.Sequential`` / ``nn.ModuleList``) run.

    Args:
        container: Module path of the container.
        blocks: Indices of the blocks that may be skipped, in the order they are kept: with
            value ``v`` the first ``v`` of them run. Other children always run.
        choices: Allowed numbers of kept blocks (0 allowed).
        size: The full depth; it is ``len(blocks)``, so giving it only checks it.

    Example:
        >>> Depth("blocks", blocks=[0, 1, 2, 3], choices=[2, 3, 4]).min
        2
        >>> Depth("blocks", blocks=[0, 1], choices=[1, 2], size=4)
        Traceback (most recent call last):
        ...
        ValueError: depth dimension 'blocks': size=4 but 2 skippable blocks are given (the size is their number)
    """

    kind = "depth"
    _min_value = 0

    def __init__(
        self, container: str, blocks: Sequence[int], choices: Iterable[int], name: str = "", size: int | None = None
    ) -> None:
        if size is not None and int(size) != len(blocks):
            raise ValueError(
                f"depth dimension {name or container!r}: size={size} but {len(blocks)} skippable blocks are given "
                "(the size is their number)"
            )
        super().__init__(choices, len(blocks), name)
        self.container = container
        self.blocks = tuple(int(b) for b in blocks)

    def _fields(self) -> dict[str, Any]:
        fields = super()._fields()
        del fields["size"]  # derived from the blocks
        return {"container": self.container, "blocks": self.blocks, **fields}


class Kernel(Dimension):
    """Kernel size of one or more Conv2d layers, shrunk by centre crop.

    Example:
        >>> Kernel(["conv1"], choices=[3, 5]).size
        5
    """

    kind = "kernel"

    def __init__(self, modules: Sequence[str], choices: Iterable[int], size: int | None = None, name: str = "") -> None:
        super().__init__(choices, size, name)
        if any(c % 2 == 0 for c in self.choices):
            raise ValueError(f"kernel dimension {name!r}: sizes must be odd, got {list(self.choices)}")
        self.modules = tuple(modules)

    def _fields(self) -> dict[str, Any]:
        return {"modules": self.modules, **super()._fields()}


ChoicesLike = Dimension | Sequence[int]


class SearchSpace(Mapping[str, Dimension]):
    """An ordered, immutable mapping of dimension names to :class:`Dimension` objects.

    Converts architectures to and from Optuna: :meth:`suggest` asks a trial for every
    dimension, so any Optuna sampler can drive the search.

    Example:
        >>> import optuna
        >>> space = SearchSpace({"hidden": [16, 32, 64], "blocks": [1, 3]})
        >>> space.max_arch()
        {'hidden': 64, 'blocks': 3}
        >>> len(space), space.size
        (2, 6)
        >>> study = optuna.create_study()
        >>> arch = space.suggest(study.ask())
        >>> space.validate(arch) == arch
        True
    """

    def __init__(self, dimensions: Mapping[str, ChoicesLike] | Sequence[Dimension] = ()) -> None:
        items = dimensions.items() if isinstance(dimensions, Mapping) else ((d.name, d) for d in dimensions)
        dims: dict[str, Dimension] = {}
        for name, dim in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"dimension names must be non-empty strings, got {name!r}")
            if not isinstance(dim, Dimension):
                dim = Dimension(tuple(dim), name=name)
            dims[name] = dim.named(name)
        self._dims = dims

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Dimension:
        try:
            return self._dims[name]
        except KeyError:
            raise KeyError(f"no dimension {name!r}; dimensions are {list(self._dims)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __repr__(self) -> str:
        body = ", ".join(f"{n!r}: {list(d.choices)}" for n, d in self._dims.items())
        return f"SearchSpace({{{body}}})"

    # Architectures ----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return math.prod(len(d.choices) for d in self._dims.values())

    def max_arch(self) -> Arch:
        return {n: d.max for n, d in self._dims.items()}

    def min_arch(self) -> Arch:
        return {n: d.min for n, d in self._dims.items()}

    def sample(
        self,
        rng: random.Random | int | None = None,
        where: Callable[[Arch], bool] | None = None,
        max_draws: int = 10_000,
    ) -> Arch:
        """A uniformly random architecture (each dimension drawn independently).

        Args:
            rng: Random generator or seed.
            where: Keep drawing until ``where(arch)`` holds (uniform over the architectures that
                satisfy it, by rejection).
            max_draws: Give up after this many rejected draws with a ``ValueError``.

        Example:
            >>> space = SearchSpace({"a": [1, 2, 3], "b": [1, 2, 3]})
            >>> arch = space.sample(0, where=lambda arch: arch["a"] + arch["b"] <= 3)
            >>> arch["a"] + arch["b"] <= 3
            True
        """
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        for _ in range(max_draws if where is not None else 1):
            arch = {n: rng.choice(d.choices) for n, d in self._dims.items()}
            if where is None or where(arch):
                return arch
        raise ValueError(f"no architecture satisfying {where!r} in {max_draws:,} random draws from {self!r}")

    def validate(self, arch: Mapping[str, Any], partial: bool = False) -> Arch:
        """Check ``arch`` against the space and return it as a plain ``dict`` of ints.

        Args:
            arch: Values by dimension name.
            partial: Allow missing dimensions (they take their maximum).

        Raises:
            ValueError: naming the unknown dimensions, missing ones, or values not allowed.
        """
        unknown = [k for k in arch if k not in self._dims]
        if unknown:
            raise ValueError(f"unknown dimensions {unknown}; the space has {list(self._dims)}")
        missing = [k for k in self._dims if k not in arch]
        if missing and not partial:
            raise ValueError(f"architecture misses dimensions {missing}")
        out: Arch = {}
        for name, dim in self._dims.items():
            value = arch.get(name, dim.max)
            if value not in dim.choices:
                raise ValueError(
                    f"value {value!r} is not allowed for dimension {name!r}; choices are {list(dim.choices)}"
                )
            out[name] = int(value)
        return out

    # Derived spaces ---------------------------------------------------------------------------
    def restrict(self, choices: Mapping[str, Sequence[int] | int]) -> SearchSpace:
        """A copy with new allowed values for some dimensions (an int fixes a dimension).

        Values must be feasible for the dimension (e.g. at most its full size).
        """
        dims = dict(self._dims)
        for name, values in choices.items():
            dim = self[name]
            values = (values,) if isinstance(values, int) else tuple(values)
            try:
                dims[name] = dim.with_choices(values)
            except ValueError as err:
                raise ValueError(f"cannot restrict dimension {name!r}: {err}") from None
        return SearchSpace(dims)

    def select(self, names: Sequence[str]) -> SearchSpace:
        """A copy with only the named dimensions."""
        return SearchSpace({name: self[name] for name in names})

    # Optuna -----------------------------------------------------------------------------------
    def distributions(self) -> dict[str, BaseDistribution]:
        """One Optuna distribution per dimension.

        Evenly spaced values become an ``IntDistribution`` with a step, so that ordinal samplers
        (TPE, GP) see the order; other value sets become a ``CategoricalDistribution``.
        """
        return {name: _distribution(dim.choices) for name, dim in self._dims.items()}

    def suggest(self, trial: optuna.trial.BaseTrial, prefix: str = "") -> Arch:
        """Ask ``trial`` for an architecture (parameter names are ``prefix + dimension name``)."""
        arch: Arch = {}
        for name, dist in self.distributions().items():
            key = prefix + name
            if isinstance(dist, IntDistribution):
                arch[name] = trial.suggest_int(key, dist.low, dist.high, step=dist.step)
            else:
                arch[name] = trial.suggest_categorical(key, dist.choices)
        return arch

    def arch_from_params(self, params: Mapping[str, Any], prefix: str = "") -> Arch:
        """Read an architecture back from a trial's ``params`` (e.g. ``study.best_trial.params``)."""
        return self.validate({name: params[prefix + name] for name in self._dims if prefix + name in params})

    # Serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        return {name: list(dim.choices) for name, dim in self._dims.items()}


def _distribution(choices: tuple[int, ...]) -> BaseDistribution:
    if len(choices) == 1:
        return IntDistribution(choices[0], choices[0])
    step = choices[1] - choices[0]
    if all(b - a == step for a, b in zip(choices, choices[1:])):
        return IntDistribution(choices[0], choices[-1], step=step)
    return CategoricalDistribution(choices)
