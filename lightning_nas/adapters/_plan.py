"""What an adapter hands to the supernet: named dimensions plus how each module axis follows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import nn

from lightning_nas.elastic import ElasticModule
from lightning_nas.space import Dimension

__all__ = ["AxisKey", "ElasticPlan", "Segment"]


class Segment(NamedTuple):
    """A run of entries on a module axis that follows one width dimension (or stays fixed).

    Attributes:
        dim: Name of the width dimension, or ``None`` for entries that never shrink.
        units: Number of units of the full axis segment.
        width: Entries per unit (e.g. head size, or spatial positions after a flatten).
    """

    dim: str | None
    units: int
    width: int = 1

    @property
    def length(self) -> int:
        return self.units * self.width


#: ``(module path, role)`` with role ``"in"``, ``"out"`` or ``"features"``.
AxisKey = tuple[str, str]


@dataclass
class ElasticPlan:
    """Elastic dimensions of a model and, for every elastic module axis, its layout.

    Attributes:
        dimensions: The named dimensions (widths, depths, kernels) with default choices.
        layouts: For each ``(module path, role)``, the segments the axis is made of, in order.
        notes: Human-readable reasons why parts of the model stay fixed (shown by ``describe``).
        groups: For a width dimension, a partition of its axes into groups whose units may be
            ordered independently: a width shared by several layers (one FFN size for all) sets
            how many units each layer keeps, but each layer's units are its own, so importance
            reordering sorts them layer by layer. A width without an entry is one group.
        elastic_types: Elastic classes of module types the default registry
            (:data:`~lightning_nas.elastic.ELASTIC_TYPES`) does not hold, e.g. a family's own
            layers: the supernet built from this plan converts with them, and no other supernet
            sees them.
    """

    dimensions: dict[str, Dimension]
    layouts: dict[AxisKey, tuple[Segment, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    groups: dict[str, tuple[tuple[AxisKey, ...], ...]] = field(default_factory=dict)
    elastic_types: dict[type[nn.Module], type[ElasticModule]] = field(default_factory=dict)
