"""The generic adapter: elastic widths, depths and kernels of any model, from its traced forward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lightning_nas.adapters._plan import ElasticPlan, Segment
from lightning_nas.adapters._trace import ChannelTrace, TraceSegment, trace_channels
from lightning_nas.adapters.base import Adapter
from lightning_nas.elastic import kernel_is_elastic
from lightning_nas.space import Depth, Dimension, Kernel, Width

__all__ = ["GenericAdapter", "default_width_choices", "plan_from_trace"]

DEFAULT_WIDTH_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def default_width_choices(size: int, fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS) -> tuple[int, ...]:
    """Allowed numbers of units for a width of ``size``: the given fractions, rounded, at least 1."""
    return tuple(sorted({max(1, round(f * size)) for f in fractions}))


class GenericAdapter(Adapter):
    """Finds coupled widths, stacks of residual blocks and large kernels by tracing the forward.

    Handles MLPs and CNNs built from ``nn.Linear``, ``nn.Conv2d`` (incl. depthwise),
    ``nn.BatchNorm1d/2d``, ``nn.LayerNorm`` and ``nn.Embedding`` with residual additions,
    concatenation and flattening. Anything else keeps the features that flow through it fixed.

    Options of :meth:`plan`:
        width_fractions: Fractions of each width offered as choices.
        min_kernel: Smallest kernel size made elastic (kernels shrink by centre crop to 3).
        depth: Whether stacks of residual blocks get a depth dimension.
    """

    name = "generic"
    fallback = True

    def matches(self, model: nn.Module) -> bool:
        return True

    def plan(
        self,
        model: nn.Module,
        run: Callable[[nn.Module], Any],
        width_fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS,
        min_kernel: int = 5,
        depth: bool = True,
        **options: Any,
    ) -> ElasticPlan:
        if options:
            raise TypeError(f"unknown options for the generic adapter: {sorted(options)}")
        return plan_from_trace(model, trace_channels(model, run), width_fractions, min_kernel, depth)


def plan_from_trace(
    model: nn.Module,
    trace: ChannelTrace,
    width_fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS,
    min_kernel: int = 5,
    depth: bool = True,
) -> ElasticPlan:
    """The plan of a traced model: a width per free group, depths of residual stacks, large kernels.

    A group whose convolutions are grouped (RegNet) shrinks in whole groups: its width counts
    units of the group width.
    """
    dims: dict[str, Dimension] = {}
    group_dim: dict[int, str] = {}
    notes = list(trace.notes)
    for group, size in sorted(trace.group_size.items()):
        producers = trace.producers.get(group, [])
        if not producers:
            continue
        if group in trace.pinned:
            notes.append(f"{producers[0]}: width fixed ({trace.pinned[group]})")
            continue
        units = size // trace.granule.get(group, 1)
        choices = default_width_choices(units, width_fractions)
        if len(choices) > 1:
            group_dim[group] = producers[0]
            dims[producers[0]] = Width([], choices, size=units, name=producers[0])

    def segments(trace_segments: tuple[TraceSegment, ...]) -> tuple[Segment, ...] | None:
        result = []
        for s in trace_segments:
            dim = group_dim.get(s.group) if s.group is not None else None
            q = trace.granule.get(s.group, 1) if dim is not None else 1
            if s.channels % q:
                return None
            result.append(Segment(dim, s.channels // q, s.inner * q))
        return tuple(result)

    layouts = {}
    axes: dict[str, list[str]] = {name: [] for name in dims}
    for (path, role), trace_segments in trace.axes.items():
        if trace_segments is None:
            continue
        layout = segments(trace_segments)
        if layout is None:
            raise RuntimeError(f"{path}:{role} splits a group of a grouped convolution")
        if any(s.dim is not None for s in layout):
            layouts[(path, role)] = layout
            for s in layout:
                if s.dim is not None:
                    axes[s.dim].append(path if role == "features" else f"{path}:{role}")
    dims = {name: Width(axes[name], d.choices, size=d.size, name=name) for name, d in dims.items()}
    if depth:
        dims.update(_depth_dimensions(trace))
    dims.update(_kernel_dimensions(model, trace, min_kernel))
    return ElasticPlan(dims, layouts, notes)


def _depth_dimensions(trace: ChannelTrace) -> dict[str, Dimension]:
    runs: dict[str, list[list[int]]] = {}
    for block in sorted(trace.blocks, key=lambda b: (b.container, b.index)):
        skippable = (
            block.calls == 1
            and block.same_shape
            and block.input_layout is not None
            and block.input_layout == block.output_layout
        )
        container_runs = runs.setdefault(block.container, [])
        if not skippable:
            container_runs.append([])
        elif container_runs and container_runs[-1] and container_runs[-1][-1] == block.index - 1:
            container_runs[-1].append(block.index)
        else:
            container_runs.append([block.index])
    dims: dict[str, Dimension] = {}
    for container, container_runs in runs.items():
        long_runs = [r for r in container_runs if len(r) >= 2]
        for i, blocks in enumerate(long_runs):
            name = f"{container}.depth" if len(long_runs) == 1 else f"{container}.depth{i}"
            dims[name] = Depth(container, blocks, range(1, len(blocks) + 1), name=name)
    return dims


def _kernel_dimensions(model: nn.Module, trace: ChannelTrace, min_kernel: int) -> dict[str, Dimension]:
    dims: dict[str, Dimension] = {}
    for path in trace.kernels:
        conv = model.get_submodule(path)
        if type(conv) is nn.Conv2d and kernel_is_elastic(conv) and conv.kernel_size[0] >= min_kernel:
            name = f"{path}.kernel"
            dims[name] = Kernel([path], range(3, conv.kernel_size[0] + 1, 2), name=name)
    return dims
