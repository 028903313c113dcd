"""Channel-flow tracing: which tensor axes of a model must shrink together.

The model runs once on an example input under a :class:`~torch.overrides.TorchFunctionMode`. Every
tensor gets a *layout*: which of its axes carries features and which coupled *groups* those
features belong to. Linear, Conv2d and Embedding layers start new groups; elementwise ops unify
the groups of their operands (a residual ``x + f(x)`` couples both); ``cat`` concatenates layouts;
``flatten`` turns channels into runs of features. Whatever the tracer does not understand pins the
groups that flow into it, so a shrunk sub-network never computes something the full model would
not. Running the real forward (rather than ``torch.fx``) copes with Python control flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["ChannelTrace", "TraceSegment", "trace_channels"]

# Exact types: a subclass (timm's BatchNormAct2d, say) has its own forward, which the elastic
# version would replace, so it is treated like any other module the tracer cannot make elastic.
SUPPORTED_LEAVES = frozenset({nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Embedding})

# Ops that return no tensor and never change what a tensor holds.
_HARMLESS = frozenset(
    {
        "size",
        "dim",
        "numel",
        "__len__",
        "__bool__",
        "__get__",
        "__format__",
        "__repr__",
        "__hash__",
        "is_floating_point",
        "is_contiguous",
        "element_size",
        "stride",
        "data_ptr",
        "get_device",
        "register_hook",
        "retain_grad",
        "requires_grad_",
        "__index__",
        "item",
        "is_complex",
        "nelement",
        "ndimension",
        "__contains__",
        "tolist",
        "__iter__",
    }
)
_REDUCTIONS = frozenset(
    {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod", "median"}
)
_RESHAPES = frozenset({"view", "reshape", "flatten"})
# Arithmetic through which a parameter of another module may broadcast (x * self.scale).
_ARITHMETIC = frozenset(
    {
        "add",
        "sub",
        "mul",
        "div",
        "where",
        "maximum",
        "minimum",
        "addcmul",
        "__add__",
        "__radd__",
        "__iadd__",
        "add_",
        "__sub__",
        "__rsub__",
        "__isub__",
        "sub_",
        "__mul__",
        "__rmul__",
        "__imul__",
        "mul_",
        "__truediv__",
        "__rtruediv__",
        "__itruediv__",
        "div_",
    }
)


class TraceSegment(NamedTuple):
    group: int | None  # None: a run of features from a tensor the tracer knows nothing about
    channels: int
    inner: int = 1


class _Layout(NamedTuple):
    axis: int
    segments: tuple[TraceSegment, ...]

    @property
    def length(self) -> int:
        return sum(s.channels * s.inner for s in self.segments)


@dataclass
class _Block:
    """One call of a child of an ``nn.Sequential`` / ``nn.ModuleList``."""

    container: str
    index: int
    calls: int = 0
    input_layout: _Layout | None = None
    output_layout: _Layout | None = None
    same_shape: bool = False


@dataclass
class ChannelTrace:
    """The result of :func:`trace_channels`; group ids are already resolved to their roots."""

    group_size: dict[int, int]
    pinned: dict[int, str]  # group -> why it cannot shrink
    producers: dict[int, list[str]]  # group -> modules whose output starts it, in call order
    axes: dict[tuple[str, str], tuple[TraceSegment, ...] | None]  # None: the axis stays fixed
    kernels: list[str]  # convolutions that ran, in call order
    blocks: list[_Block]
    notes: list[str] = field(default_factory=list)
    granule: dict[int, int] = field(default_factory=dict)  # group -> its width must be a multiple of this


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


def _op_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "") or type(func).__name__


def _tensors(obj: Any) -> list[Tensor]:
    return [leaf for leaf in tree_flatten(obj)[0] if isinstance(leaf, Tensor)]


class _ChannelTracer(TorchFunctionMode):
    def __init__(
        self,
        model: nn.Module,
        leaves: Collection[type[nn.Module]] = SUPPORTED_LEAVES,
        vectors: Mapping[type[nn.Module], tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.leaves = frozenset(leaves)
        self.granule: dict[int, int] = {}
        self.uf = _UnionFind()
        self.size: list[int] = []
        self.pin_reason: dict[int, str] = {}
        self.producers: dict[int, list[str]] = {}
        self.layouts: dict[int, _Layout] = {}
        self.alive: list[Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.axes: dict[tuple[str, str], _Layout | None] = {}
        self.kernels: list[str] = []
        self.module_stack: list[str] = []
        self.notes: list[str] = []
        self.owner: dict[int, tuple[str, nn.Module]] = {}
        self._produced: dict[tuple[str, str], int] = {}
        for path, module in model.named_modules():
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                self.owner.setdefault(id(tensor), (path, module))
        for path, module in model.named_modules():
            self._trace_vectors(path, module, (vectors or {}).get(type(module), ()))

    def _trace_vectors(self, path: str, module: nn.Module, names: tuple[str, ...]) -> None:
        """Parameters laid out along the features on their last axis (a layer scale, a class token).

        They share one group, which the ops using them couple to the features they meet; the
        module's ``"features"`` axis follows that group.
        """
        group = None
        for name in names:
            param = module._parameters.get(name)
            if param is None:
                continue
            if group is None:
                group = self.new_group(param.shape[-1])
            layout = _Layout(param.dim() - 1, (TraceSegment(group, param.shape[-1]),))
            if param.shape[-1] != self.size[group]:
                self.pin(layout, f"{path}.{name} has another length than the module's other vectors")
            self.set_layout(param, layout)
            self.axes.setdefault((path, "features"), layout)

    # groups -----------------------------------------------------------------------------------
    def new_group(self, channels: int, producer: str | None = None) -> int:
        g = self.uf.add()
        self.size.append(channels)
        self.producers[g] = [producer] if producer else []
        return g

    def pin(self, layout: _Layout | None, reason: str) -> None:
        if layout is None:
            return
        for seg in layout.segments:
            if seg.group is not None:
                self.pin_reason.setdefault(self.uf.find(seg.group), reason)

    def unify(self, a: _Layout, b: _Layout, reason: str) -> bool:
        """Couple two layouts segment by segment; pin both if their structures differ."""
        if len(a.segments) != len(b.segments) or any(
            (sa.channels, sa.inner) != (sb.channels, sb.inner) for sa, sb in zip(a.segments, b.segments)
        ):
            self.pin(a, reason)
            self.pin(b, reason)
            return False
        for sa, sb in zip(a.segments, b.segments):
            if sa.group is None or sb.group is None:
                self.pin(a, reason)
                self.pin(b, reason)
            else:
                ra, rb = self.uf.find(sa.group), self.uf.find(sb.group)
                if ra != rb:
                    root = self.uf.union(ra, rb)
                    other = rb if root == ra else ra
                    self.producers[root] = self.producers[root] + self.producers.pop(other, [])
                    if other in self.granule:
                        self.granule[root] = math.lcm(self.granule.get(root, 1), self.granule.pop(other))
                    if other in self.pin_reason:
                        self.pin_reason.setdefault(root, self.pin_reason.pop(other))
        return True

    # layouts ----------------------------------------------------------------------------------
    def layout_of(self, obj: Any) -> _Layout | None:
        return self.layouts.get(id(obj)) if isinstance(obj, Tensor) else None

    def set_layout(self, tensor: Any, layout: _Layout | None) -> None:
        if isinstance(tensor, Tensor) and layout is not None:
            self.layouts[id(tensor)] = layout
            self.alive.append(tensor)

    def record_axis(self, path: str, role: str, layout: _Layout | None, reason: str) -> None:
        key = (path, role)
        if key not in self.axes:
            self.axes[key] = layout
            return
        previous = self.axes[key]
        if previous is None or layout is None:
            self.pin(previous, reason)
            self.pin(layout, reason)
            self.axes[key] = None
        elif not self.unify(previous, layout, reason):
            self.axes[key] = None

    # dispatch ---------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _op_name(func)
        inputs = _tensors((args, kwargs))
        traced = [t for t in inputs if id(t) in self.layouts]
        # A parameter with a layout (see _trace_vectors) is followed like any traced tensor.
        owned = [self.owner[id(t)] for t in inputs if id(t) in self.owner and id(t) not in self.layouts]
        if not traced and not owned:
            return out
        handler = getattr(self, f"_op_{name}", None)
        if owned and handler is None:
            handler = self._op_foreign_parameter
        if handler is None:
            if name in _REDUCTIONS:
                handler = self._op_reduction
            elif name in _RESHAPES:
                handler = self._op_reshape
            else:
                handler = self._op_default
        handler(name, args, kwargs, out)
        return out

    def _current_module_owns(self, path: str, name: str) -> bool:
        if self.module_stack and self.module_stack[-1] == path:
            return True
        self.notes.append(f"{_where(path)}: its weights are used outside its own forward ({name}); kept fixed")
        return False

    # layers -----------------------------------------------------------------------------------
    def _start_layer(self, name: str, args: tuple, kwargs: dict, out: Tensor, in_axis: int) -> None:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        path, module = self.owner[id(weight)]
        x = args[0]
        layout = self.layout_of(x)
        if type(module) not in self.leaves or not self._current_module_owns(path, name):
            return self._op_foreign_parameter(name, args, kwargs, out)
        axis = in_axis % x.dim()
        if layout is not None and layout.axis != axis:
            self.pin(layout, f"{path} reads features on another axis")
            layout = None
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            per_group = module.in_channels // module.groups
            if module.in_channels == module.out_channels and layout is not None:
                # Depthwise or grouped with equal in/out: one channel axis, passed through unchanged;
                # a grouped one shrinks by whole groups (RegNet's group width stays fixed).
                if per_group > 1:
                    segment = layout.segments[0]
                    if len(layout.segments) != 1 or segment.group is None or segment.inner != 1:
                        self.pin(layout, f"{path} is a grouped convolution")
                    else:
                        root = self.uf.find(segment.group)
                        self.granule[root] = math.lcm(self.granule.get(root, 1), per_group)
                self.record_axis(path, "out", layout, f"{path} is used with different inputs")
                self.kernels.append(path)
                self.set_layout(out, layout)
                return None
            self.pin(layout, f"{path} is a grouped convolution")
            self.set_layout(out, _Layout(1, (TraceSegment(self.new_group(out.shape[1]), out.shape[1]),)))
            self.pin(self.layout_of(out), f"{path} is a grouped convolution")
            return None
        self.record_axis(path, "in", layout, f"{path} is used with different inputs")
        if ("out", path) in self._produced:
            group = self._produced[("out", path)]
        else:
            group = self.new_group(out.shape[in_axis], producer=path)
            self._produced[("out", path)] = group
        layout_out = _Layout(axis, (TraceSegment(group, out.shape[in_axis]),))
        self.axes.setdefault((path, "out"), layout_out)
        if isinstance(module, nn.Conv2d):
            self.kernels.append(path)
        self.set_layout(out, layout_out)
        return None

    def _op_linear(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        self._start_layer(name, args, kwargs, out, in_axis=-1)

    def _op_conv2d(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        self._start_layer(name, args, kwargs, out, in_axis=1)

    def _op_embedding(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        path, module = self.owner[id(weight)]
        if not isinstance(module, nn.Embedding) or not self._current_module_owns(path, name):
            return self._op_foreign_parameter(name, args, kwargs, out)
        group = self._produced.get(("out", path))
        if group is None:
            group = self.new_group(out.shape[-1], producer=path)
            self._produced[("out", path)] = group
        layout = _Layout(out.dim() - 1, (TraceSegment(group, out.shape[-1]),))
        self.axes.setdefault((path, "out"), layout)
        self.set_layout(out, layout)
        return None

    def _norm(self, name: str, path_tensor: Tensor | None, x: Tensor, out: Tensor, axis: int) -> None:
        if path_tensor is None or id(path_tensor) not in self.owner:
            return self._op_default(name, (x,), {}, out)
        path, module = self.owner[id(path_tensor)]
        layout = self.layout_of(x)
        if type(module) not in self.leaves or not self._current_module_owns(path, name):
            return self._op_foreign_parameter(name, (x,), {}, out)
        if layout is not None and layout.axis != axis % x.dim():
            self.pin(layout, f"{path} normalises another axis")
            layout = None
        self.record_axis(path, "features", layout, f"{path} is used with different inputs")
        self.set_layout(out, layout)
        return None

    def _op_batch_norm(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        bound = dict(zip(("input", "running_mean", "running_var", "weight", "bias"), args)) | kwargs
        anchor = bound.get("weight") if bound.get("weight") is not None else bound.get("running_mean")
        self._norm(name, anchor, bound["input"], out, axis=1)

    def _op_layer_norm(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        bound = dict(zip(("input", "normalized_shape", "weight", "bias"), args)) | kwargs
        if len(bound["normalized_shape"]) != 1:
            self.pin(self.layout_of(bound["input"]), "layer norm over several axes")
            return None
        self._norm(name, bound.get("weight"), bound["input"], out, axis=-1)
        return None

    def _op_foreign_parameter(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """An op on weights of a module the tracer cannot make elastic: pin what flows in."""
        inputs = _tensors((args, kwargs))
        owners = sorted({_where(self.owner[id(t)][0]) for t in inputs if id(t) in self.owner})
        reason = f"used by {', '.join(owners) or name} ({name}), which cannot be made elastic"
        if name in _ARITHMETIC and self._is_elementwise(inputs, out):
            # x * self.scale: fine when the parameter broadcasts over the feature axis.
            return self._op_default(name, args, kwargs, out)
        for t in inputs:
            self.pin(self.layout_of(t), reason)
        where = ", ".join(owners) or _where("")
        self.notes.append(f"{where}: {name} on them is not supported; connected features stay fixed")
        return None

    # structure --------------------------------------------------------------------------------
    def _op_cat(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        tensors = list(args[0] if args else kwargs["tensors"])
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.dim()
        layouts = [self.layout_of(t) for t in tensors]
        if (
            all(lay is not None for lay in layouts)
            and len({lay.axis for lay in layouts}) == 1
            and layouts[0].axis != dim
            and len({t.dim() for t in tensors}) == 1
        ):
            # Joined along another axis (tokens after a class token): the features must agree.
            for other in layouts[1:]:
                self.unify(layouts[0], other, f"{name} joins tensors with different features")
            self.set_layout(out, _Layout(layouts[0].axis, layouts[0].segments))
            return
        if all(lay is not None and lay.axis == dim for lay in layouts if lay is not None):
            segments: list[TraceSegment] = []
            for tensor, lay in zip(tensors, layouts):
                segments.extend(lay.segments if lay else (TraceSegment(None, tensor.shape[dim]),))
            self.set_layout(out, _Layout(dim, tuple(segments)))
            return
        self._op_default(name, tuple(tensors), {}, out)

    _op_concat = _op_concatenate = _op_cat

    def _op_reshape(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = args[0]
        layout = self.layout_of(x)
        if layout is None or not isinstance(out, Tensor):
            return
        old, new = list(x.shape), list(out.shape)
        if old == new:
            self.set_layout(out, layout)
            return
        kept_old = [i for i, n in enumerate(old) if n != 1]
        kept_new = [i for i, n in enumerate(new) if n != 1]
        if old[layout.axis] != 1 and [old[i] for i in kept_old] == [new[i] for i in kept_new]:
            # Only singleton axes added or removed (a per-channel vector reshaped to (1, C, 1, 1)).
            axis = kept_new[kept_old.index(layout.axis)]
            if self._size_is_inferred(name, args, kwargs, axis):
                self.set_layout(out, _Layout(axis, layout.segments))
            else:
                self.pin(layout, f"{name} to a fixed shape {tuple(new)}")
            return
        prefix = 0
        while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < min(len(old), len(new)) - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
            suffix += 1
        merged_end = len(old) - suffix  # old axes [prefix, merged_end) became new axis `prefix`
        a = layout.axis
        if a < prefix:
            self.set_layout(out, layout)
        elif a >= merged_end:
            self.set_layout(out, _Layout(a + len(new) - len(old), layout.segments))
        elif len(new) - suffix - prefix == 1 and a == prefix and self._size_is_inferred(name, args, kwargs, prefix):
            inner = math.prod(old[a + 1 : merged_end])
            segments = tuple(TraceSegment(s.group, s.channels, s.inner * inner) for s in layout.segments)
            self.set_layout(out, _Layout(prefix, segments))
        else:
            self.pin(layout, f"{name} to a fixed shape {tuple(new)}")

    @staticmethod
    def _size_is_inferred(name: str, args: tuple, kwargs: dict, position: int) -> bool:
        """Whether the merged size is computed (``-1`` or ``flatten``) rather than hard-coded."""
        if name == "flatten":
            return True
        shape = args[1:] if len(args) > 1 else (kwargs.get("shape") or kwargs.get("size"),)
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return position < len(shape) and shape[position] == -1

    def _op_permute(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        x, layout = args[0], self.layout_of(args[0])
        dims = args[1:] if len(args) > 1 else (kwargs["dims"],)
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        order = [d % x.dim() for d in dims]
        if layout is not None:
            self.set_layout(out, _Layout(order.index(layout.axis), layout.segments))

    def _op_expand(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        x, layout = args[0], self.layout_of(args[0])
        if layout is None:
            return
        axis = layout.axis + out.dim() - x.dim()
        if out.shape[axis] == x.shape[layout.axis]:
            self.set_layout(out, _Layout(axis, layout.segments))
        else:
            self.pin(layout, "expand of the feature axis")

    def _op_transpose(self, name: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        x, layout = args[0], self.layout_of(args[0])
        if layout is None:
            return
        d0, d1 = (d % x.dim() for d in args[1:3])
        axis = {d0: d1, d1: d0}.get(layout.axis, layout.axis)
        self.set_layout(out, _Layout(axis, layout.segments))

    def _op___getitem__(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        x, index = args
        layout = self.layout_of(x)
        if layout is None or not isinstance(out, Tensor):
            return
        items = index if isinstance(index, tuple) else (index,)
        if any(item is Ellipsis for item in items):
            at = items.index(Ellipsis)
            fill = x.dim() - sum(1 for i in items if i is not None and i is not Ellipsis)
            items = items[:at] + (slice(None),) * fill + items[at + 1 :]
        in_axis, out_axis = 0, 0
        for item in items:
            if item is None:
                out_axis += 1
                continue
            if isinstance(item, Tensor) or isinstance(item, (list, tuple)):
                return self.pin(layout, "advanced indexing")
            if in_axis == layout.axis:
                if isinstance(item, slice) and self._keeps_everything(item, x.shape[in_axis]):
                    return self.set_layout(out, _Layout(out_axis, layout.segments))
                return self.pin(layout, "indexing the feature axis")
            if not isinstance(item, int):
                out_axis += 1
            in_axis += 1
        if in_axis <= layout.axis:  # untouched trailing axes, feature axis among them
            self.set_layout(out, _Layout(out_axis + layout.axis - in_axis, layout.segments))

    @staticmethod
    def _keeps_everything(item: slice, length: int) -> bool:
        """``x[:, :n]`` with ``n`` at least the length keeps every feature, and still does when the
        features shrink (GhostNet's ``cat(...)[:, :out_chs]``)."""
        return (
            item.start in (None, 0)
            and item.step in (None, 1)
            and (item.stop is None or (isinstance(item.stop, int) and item.stop >= length))
        )

    def _op_reduction(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        x, layout = args[0], self.layout_of(args[0])
        if layout is None:
            return
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get("keepdim", False)
        if dims is None or isinstance(dims, str):
            return self.pin(layout, f"{name} over all axes")
        dims = {d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)}
        if layout.axis in dims:
            return self.pin(layout, f"{name} over the feature axis")
        shift = 0 if keepdim else sum(1 for d in dims if d < layout.axis)
        for result in _tensors(out):
            if result.is_floating_point():
                self.set_layout(result, _Layout(layout.axis - shift, layout.segments))

    @staticmethod
    def _is_elementwise(inputs: list[Tensor], out: Any) -> bool:
        outs = _tensors(out)
        if len(outs) != 1:
            return False
        try:
            return tuple(torch.broadcast_shapes(*(t.shape for t in inputs))) == tuple(outs[0].shape)
        except RuntimeError:
            return False

    def _op_default(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        inputs = _tensors((args, kwargs))
        outs = _tensors(out)
        traced = [(t, self.layouts[id(t)]) for t in inputs if id(t) in self.layouts]
        if not outs:
            if name not in _HARMLESS:
                for _, layout in traced:
                    self.pin(layout, f"{name} changes tensors in place")
            return
        if len(outs) == 1 and traced:
            result = outs[0]
            mapped = self._map_axes(traced, result, inputs)
            if mapped is not None:
                axis, layouts = mapped
                for other in layouts[1:]:
                    self.unify(layouts[0], other, f"{name} combines different feature layouts")
                self.set_layout(result, _Layout(axis, layouts[0].segments))
                return
        for _, layout in traced:
            self.pin(layout, f"{name} is not understood by the tracer")

    def _map_axes(
        self, traced: list[tuple[Tensor, _Layout]], out: Tensor, inputs: list[Tensor]
    ) -> tuple[int, list[_Layout]] | None:
        """Where the feature axis of every traced operand lands in ``out`` (right-aligned)."""
        if not (self._is_elementwise(inputs, out) or (len(traced) == 1 and out.dim() == traced[0][0].dim())):
            return None
        axes = {out.dim() - (t.dim() - lay.axis) for t, lay in traced}
        if len(axes) != 1:
            return None
        axis = axes.pop()
        features = traced[0][0].shape[traced[0][1].axis]
        if axis < 0 or out.shape[axis] != features:
            return None
        for t in inputs:
            if id(t) in self.layouts:
                continue
            offset = t.dim() - (out.dim() - axis)
            if offset >= 0 and t.shape[offset] != 1:
                return None  # a constant or parameter laid out along the features
        return axis, [lay for _, lay in traced]


def trace_channels(
    model: nn.Module,
    run: Callable[[nn.Module], Any],
    leaves: Collection[type[nn.Module]] = SUPPORTED_LEAVES,
    vectors: Mapping[type[nn.Module], tuple[str, ...]] | None = None,
    containers: Collection[type[nn.Module]] = (),
) -> ChannelTrace:
    """Trace how features flow through ``model`` while ``run(model)`` executes its forward.

    Args:
        model: The model to trace (left unchanged).
        run: Calls the model once, e.g. ``lambda m: m(example_input)``; it returns the outputs,
            whose feature groups are pinned (the number of outputs cannot change).
        leaves: Module types whose ``linear`` / ``conv2d`` / ``batch_norm`` / ``layer_norm`` /
            ``embedding`` calls start or follow features, as the plain torch layers do (a family
            adapter adds its subclasses that have an elastic version).
        vectors: Module types with parameters laid out along the features on their last axis, by
            parameter name (layer scales, class tokens, position embeddings); their elastic
            version slices those parameters on its ``"features"`` axis.
        containers: Module types besides ``nn.Sequential`` / ``nn.ModuleList`` that run their
            children one after the other (whose elastic version can skip them).
    """
    tracer = _ChannelTracer(model, leaves, vectors)
    blocks: dict[tuple[str, int], _Block] = {}
    handles = []
    container_types = (nn.Sequential, nn.ModuleList, *containers)
    stacks = {path: module for path, module in model.named_modules() if isinstance(module, container_types)}
    names = {module: path for path, module in model.named_modules(remove_duplicate=False)}

    def push(module: nn.Module, args: tuple) -> None:
        tracer.module_stack.append(names.get(module, ""))

    def pop(module: nn.Module, args: tuple, output: Any) -> None:
        tracer.module_stack.pop()

    for module in names:
        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop))

    for cpath, container in stacks.items():
        for index, child in enumerate(container.children()):
            if not list(child.children()) or not any(True for _ in child.parameters()):
                continue  # leaves and parameter-free children are never skipped
            block = blocks.setdefault((cpath, index), _Block(cpath, index))

            def record(module: nn.Module, args: tuple, output: Any, block: _Block = block) -> None:
                block.calls += 1
                first = args[0] if args else None
                if isinstance(first, Tensor) and isinstance(output, Tensor):
                    block.input_layout = tracer.layout_of(first)
                    block.output_layout = tracer.layout_of(output)
                    block.same_shape = first.shape == output.shape

            handles.append(child.register_forward_hook(record))

    modes = {module: module.training for module in model.modules()}
    model.eval()  # no running-statistics updates, no dropout: the trace must not touch the model
    try:
        with torch.no_grad(), tracer:
            outputs = run(model)
    except Exception as err:  # noqa: BLE001 - re-raised with the module that failed
        where = tracer.module_stack[-1] if tracer.module_stack else "the model"
        raise RuntimeError(
            f"could not trace {type(model).__name__} with the example input (failed in {where!r}: {err}); "
            "check the example input, or declare the dimensions explicitly"
        ) from err
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    for tensor in _tensors(outputs):
        tracer.pin(tracer.layout_of(tensor), "reaches the model output")

    find = tracer.uf.find
    roots = {find(g) for g in range(len(tracer.size))}

    def resolve(layout: _Layout | None) -> tuple[TraceSegment, ...] | None:
        if layout is None:
            return None
        return tuple(
            TraceSegment(None if s.group is None else find(s.group), s.channels, s.inner) for s in layout.segments
        )

    granules: dict[int, int] = {}
    for g, q in tracer.granule.items():
        granules[find(g)] = math.lcm(granules.get(find(g), 1), q)
    return ChannelTrace(
        group_size={g: tracer.size[g] for g in roots},
        pinned={find(g): why for g, why in tracer.pin_reason.items()},
        producers={find(g): p for g, p in tracer.producers.items()},
        axes={key: resolve(layout) for key, layout in tracer.axes.items()},
        kernels=list(dict.fromkeys(tracer.kernels)),
        blocks=[
            _Block(
                b.container,
                b.index,
                b.calls,
                b.input_layout and _Layout(b.input_layout.axis, resolve(b.input_layout)),
                b.output_layout and _Layout(b.output_layout.axis, resolve(b.output_layout)),
                b.same_shape,
            )
            for b in blocks.values()
        ],
        notes=list(dict.fromkeys(tracer.notes)),
        granule=granules,
    )


def _where(path: str) -> str:
    """A module path as notes name it: the root module has the empty path."""
    return path or "the model's own parameters"
