"""The explicit adapter: dimensions the user declares (``Supernet(model, dimensions=...)``), checked.

No tracing and no family knowledge: every module and axis the dimensions name is looked up in the
model and asked (through its elastic class) whether it has that axis and how long it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from lightning_nas.adapters._plan import AxisKey, ElasticPlan, Segment
from lightning_nas.adapters.base import Adapter
from lightning_nas.elastic import ElasticModule, kernel_is_elastic
from lightning_nas.elastic import elastic_types as with_default_types
from lightning_nas.space import Depth, Dimension, Kernel, Width

__all__ = ["ExplicitDimensionsAdapter"]


class ExplicitDimensionsAdapter(Adapter):
    """Turns user-declared dimensions into a plan, checking every module and axis they name.

    Chosen by ``Supernet(model, dimensions=...)`` (or by name, ``adapter="explicit"``); never
    picked for a model on its own. It needs no example input.

    A width's axes are ``"path:role"`` with role ``in`` / ``out`` (Linear, Conv2d) or
    ``features`` (norms); a bare ``"path"`` means the module's default axis (a norm's features,
    a Conv2d's output channels, an Embedding's vectors).

    Options of :meth:`plan`:
        dimensions: The dimensions, by name (required).
        elastic_types: Elastic classes for module types of this model that the default registry
            does not hold, ``{dense class: elastic class}``; they serve this supernet only.

    Example:
        >>> import torch
        >>> from lightning_nas import Supernet, Width
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> net = Supernet(model, dimensions={"hidden": Width(["0:out", "2:in"], [4, 8, 16])})
        >>> net.adapter.name, net.space
        ('explicit', SearchSpace({'hidden': [4, 8, 16]}))
    """

    name = "explicit"
    needs_example_input = False

    def matches(self, model: nn.Module) -> bool:
        return False

    def plan(
        self,
        model: nn.Module,
        run: Callable[[nn.Module], Any] | None,
        dimensions: Mapping[str, Dimension] | None = None,
        elastic_types: Mapping[type[nn.Module], type[ElasticModule]] | None = None,
        **options: Any,
    ) -> ElasticPlan:
        if options:
            raise TypeError(f"unknown options for the explicit adapter: {sorted(options)}")
        if dimensions is None:
            raise ValueError("the explicit adapter needs `dimensions=`")
        own_types = dict(elastic_types or {})
        registry = with_default_types(own_types)  # checks them, too
        dims: dict[str, Dimension] = {}
        layouts: dict[AxisKey, tuple[Segment, ...]] = {}
        for name, dim in dimensions.items():
            if not isinstance(dim, (Width, Depth, Kernel)):
                raise TypeError(f"dimension {name!r} must be a Width, Depth or Kernel, got {type(dim).__name__}")
            dim = dim.named(name)
            dims[name] = dim
            if isinstance(dim, Width):
                _width_layouts(model, name, dim, registry, layouts)
            elif isinstance(dim, Depth):
                _check_depth(model, name, dim)
            else:
                _check_kernel(model, name, dim)
        return ElasticPlan(dims, layouts, elastic_types=own_types)


def _width_layouts(
    model: nn.Module,
    name: str,
    dim: Width,
    registry: Mapping[type[nn.Module], type[ElasticModule]],
    layouts: dict[AxisKey, tuple[Segment, ...]],
) -> None:
    if not dim.axes:
        raise ValueError(f"width dimension {name!r} names no axes")
    for axis in dim.axes:
        path, _, role = axis.partition(":")
        module = _submodule(model, path, name)
        elastic_cls = registry.get(type(module))
        lengths = {} if elastic_cls is None else elastic_cls.axis_lengths(module)
        role = role or (elastic_cls.default_role if elastic_cls is not None else None) or ""
        if role not in lengths:
            hint = f"its axes: {[f'{path}:{r}' for r in lengths]}" if lengths else "it has no elastic axis"
            raise ValueError(
                f"dimension {name!r}: axis {axis!r} is not an elastic axis of {type(module).__name__} ({hint})"
            )
        length = lengths[role]
        if length % dim.size:
            raise ValueError(
                f"dimension {name!r}: axis {axis!r} has {length} entries, not a multiple of "
                f"the dimension's size {dim.size}"
            )
        if (path, role) in layouts:
            raise ValueError(f"axis {axis!r} is claimed by two dimensions")
        layouts[(path, role)] = (Segment(name, dim.size, length // dim.size),)


def _check_depth(model: nn.Module, name: str, dim: Depth) -> None:
    container = _submodule(model, dim.container, name)
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        raise ValueError(
            f"depth dimension {name!r}: {dim.container!r} is a {type(container).__name__}, "
            "not an nn.Sequential or nn.ModuleList"
        )
    bad = [i for i in dim.blocks if not 0 <= i < len(container)]
    if bad:
        raise ValueError(f"depth dimension {name!r}: {dim.container!r} has no blocks {bad}")


def _check_kernel(model: nn.Module, name: str, dim: Kernel) -> None:
    for path in dim.modules:
        conv = _submodule(model, path, name)
        if type(conv) is not nn.Conv2d or not kernel_is_elastic(conv):
            raise ValueError(
                f"kernel dimension {name!r}: {path!r} must be an nn.Conv2d with an odd square "
                "kernel and 'same' zero padding"
            )
        if conv.kernel_size[0] != dim.size:
            raise ValueError(
                f"kernel dimension {name!r}: {path!r} has kernel {conv.kernel_size[0]}, "
                f"the dimension's size is {dim.size}"
            )


def _submodule(model: nn.Module, path: str, dim_name: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"dimension {dim_name!r}: the model has no module {path!r}") from None
