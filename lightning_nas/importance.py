"""Importance of heads, neurons and channels from a few batches, and reordering by importance.

Weight entanglement keeps the *leading* units of every width: sorting the units of a pretrained
model by importance first (DynaBERT, OFA, NNCF) makes every sub-network keep the part worth
keeping. Everything here works on a :class:`~lightning_nas.Supernet`'s plan, so it applies to any
model an adapter understands, Hugging Face or generic:

- **gate** (attention heads, DynaBERT / Michel et al.): a gate of ones multiplies each unit's
  input to the layers that read the width (for heads: the attention output projection);
  importance is ``|d loss / d gate|`` accumulated over batches;
- **taylor** (FFN neurons, channels, hidden size; NNCF / Molchanov et al.): ``|w * d loss / d w|``
  summed over every weight of the unit, in every layer the width couples.

:func:`reorder` then permutes each width: every axis of the width's layout gets the same
permutation, so the full model computes exactly what it computed before. A width that the plan
splits into independent groups (one FFN size shared by all layers of a transformer) is scored and
sorted group by group: each layer keeps its own best units.

Example:
    >>> import torch
    >>> from lightning_nas import Supernet
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> net = Supernet(model, example_input=torch.randn(1, 4))
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    >>> x = torch.randn(5, 4)
    >>> before = model(x)
    >>> scores = reorder_by_importance(net, batches)
    >>> torch.allclose(model(x), before, atol=1e-6)
    True
    >>> bool((scores["0"].diff() <= 0).all())  # the leading neurons now matter most
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_nas.adapters import Segment
from lightning_nas.inputs import eval_mode, model_loss, to_device
from lightning_nas.space import Width
from lightning_nas.supernet import Supernet

__all__ = ["compute_importance", "reorder", "reorder_by_importance"]

Method = Literal["auto", "gate", "taylor"]


def compute_importance(
    supernet: Supernet,
    batches: Iterable[Any],
    *,
    loss_fn: Callable[[nn.Module, Any], Tensor] | None = None,
    dims: Sequence[str] | None = None,
    method: Method = "auto",
    max_batches: int | None = 8,
) -> dict[str, Tensor]:
    """Importance of every unit of some width dimensions, measured on the full model.

    Args:
        supernet: The supernet (its weights are not changed).
        batches: Training batches.
        loss_fn: ``loss_fn(model, batch) -> loss``. By default: a mapping batch with labels is
            passed as keyword arguments and the output's ``loss`` is used (Hugging Face), an
            ``(input, target)`` pair gets the cross-entropy of ``model(input)``.
        dims: Width dimensions to score (default: all).
        method: ``"gate"``, ``"taylor"``, or ``"auto"``: gates for dimensions whose units span
            several features (attention heads), Taylor scores for the others.
        max_batches: Stop after that many batches (``None``: all).

    Returns:
        ``{dimension: scores}``, one score per unit, higher is more important; a dimension with
        ``G`` independent groups in the plan (see :class:`~lightning_nas.adapters.ElasticPlan`)
        gets a ``(G, units)`` tensor, one row per group.
    """
    names = _width_dims(supernet, dims)
    loss_fn = loss_fn or model_loss
    model = supernet.model
    device = next(model.parameters()).device
    groups = {n: _groups(supernet, n) for n in names}
    gated = {n: groups[n] for n in names if method == "gate" or (method == "auto" and _is_grouped(supernet, n))}
    gated = {n: parts for n, parts in gated.items() if any(_readers(axes) for axes in parts)}  # else Taylor
    sizes = {n: (len(groups[n]), supernet.plan.dimensions[n].size) for n in names}
    scores = {n: torch.zeros(sizes[n], dtype=torch.float64) for n in names}
    gates = {n: torch.ones(sizes[n], device=device, requires_grad=True) for n in gated}
    with supernet.use(None), eval_mode(model), _trainable(model), _gated_inputs(gated, gates):
        for count, batch in enumerate(batches, start=1):
            model.zero_grad(set_to_none=True)
            loss_fn(model, to_device(batch, device)).backward()
            for name, gate in gates.items():
                scores[name] += gate.grad.detach().abs().double().cpu()
                gate.grad = None
            for name in names:
                if name not in gated:
                    for row, axes in enumerate(groups[name]):
                        scores[name][row] += _taylor(axes, name, sizes[name][1])
            if max_batches is not None and count >= max_batches:
                break
        model.zero_grad(set_to_none=True)
    return {name: (score[0] if len(score) == 1 else score).float() for name, score in scores.items()}


def reorder(supernet: Supernet, importance: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Permute the units of each width so that the most important come first.

    Call it before training: the parameters are changed in place (the same objects), but an
    optimizer's state (momenta) would not follow the permutation.

    Args:
        supernet: The supernet whose model is permuted.
        importance: ``{dimension: scores}`` as from :func:`compute_importance` (one row per
            group for a dimension with independent groups, or one row used for all of them).

    Returns:
        ``{dimension: permutation}`` shaped like the scores: the unit now at position ``i`` (of
        a group) was unit ``permutation[i]`` (of ``permutation[group, i]``).
    """
    _width_dims(supernet, list(importance))
    permutations = {}
    with supernet.use(None), torch.no_grad():
        for name, score in importance.items():
            groups = _groups(supernet, name)
            rows = score.detach().cpu().reshape(-1, score.shape[-1])
            if len(rows) not in (1, len(groups)):
                raise ValueError(f"importance of {name!r} has {len(rows)} rows; its plan has {len(groups)} groups")
            order = torch.argsort(rows, dim=-1, descending=True, stable=True)
            done: set[tuple[int, int]] = set()  # (tensor, axis): tied weights are permuted once
            for row, axes in enumerate(groups):
                permutation = order[row if len(order) > 1 else 0]
                for module, role, layout in axes:
                    index = _axis_index(layout, name, permutation)
                    for tensor, axis in _tensor_axes(module, role):
                        if (id(tensor), axis) not in done:
                            done.add((id(tensor), axis))
                            tensor.copy_(tensor.index_select(axis, index.to(tensor.device)))
            permutations[name] = order.reshape(score.shape)
    return permutations


def reorder_by_importance(supernet: Supernet, batches: Iterable[Any], **options: Any) -> dict[str, Tensor]:
    """:func:`compute_importance`, then :func:`reorder`; returns the importance in the new order.

    ``options`` are those of :func:`compute_importance`.
    """
    importance = compute_importance(supernet, batches, **options)
    permutations = reorder(supernet, importance)
    return {name: importance[name].gather(-1, permutation) for name, permutation in permutations.items()}


# --------------------------------------------------------------------------------------------------
def _width_dims(supernet: Supernet, dims: Sequence[str] | None) -> list[str]:
    widths = [name for name, dim in supernet.plan.dimensions.items() if isinstance(dim, Width)]
    if dims is None:
        return widths
    unknown = [name for name in dims if name not in widths]
    if unknown:
        raise ValueError(f"{unknown} are not width dimensions of the supernet; width dimensions: {widths}")
    return list(dims)


Axis = tuple[nn.Module, str, tuple[Segment, ...]]


def _axes(supernet: Supernet, name: str) -> list[Axis]:
    return [
        (supernet.model.get_submodule(path), role, layout)
        for (path, role), layout in supernet.plan.layouts.items()
        if any(segment.dim == name for segment in layout)
    ]


def _groups(supernet: Supernet, name: str) -> list[list[Axis]]:
    """The axes of a width, split into the plan's independently ordered groups."""
    parts = supernet.plan.groups.get(name)
    if not parts:
        return [_axes(supernet, name)]
    layouts = supernet.plan.layouts
    return [
        [(supernet.model.get_submodule(path), role, layouts[(path, role)]) for path, role in keys] for keys in parts
    ]


def _readers(axes: list[Axis]) -> list[tuple[nn.Module, tuple[Segment, ...]]]:
    """Modules that read the width on their input, with the input's layout."""
    return [(module, layout) for module, role, layout in axes if role == "in"]


def _is_grouped(supernet: Supernet, name: str) -> bool:
    """Whether a unit of the width spans several input features of a reader (an attention head)."""
    return any(
        segment.width > 1
        for _, role, layout in _axes(supernet, name)
        if role == "in"
        for segment in layout
        if segment.dim == name
    )


def _axis_index(layout: tuple[Segment, ...], name: str, permutation: Tensor) -> Tensor:
    """Index of a whole axis with the units of ``name`` permuted and other segments in place."""
    parts, start = [], 0
    for segment in layout:
        if segment.dim == name:
            inner = torch.arange(segment.width)
            parts.append(start + (permutation[:, None] * segment.width + inner).flatten())
        else:
            parts.append(torch.arange(start, start + segment.length))
        start += segment.length
    return torch.cat(parts)


def _tensor_axes(module: nn.Module, role: str) -> list[tuple[Tensor, int]]:
    """The parameters and buffers of an elastic module that an axis role slices, with their axis.

    Found by asking the module for an empty slice of the axis, so every elastic module type,
    including those registered by family adapters, answers without a table here.
    """
    attr = type(module).active_attr(role)
    previous = getattr(module, attr)
    object.__setattr__(module, attr, 0)
    try:
        sliced = module.active_tensors()
    finally:
        object.__setattr__(module, attr, previous)
    found = []
    for tensor_name, part in sliced.items():
        tensor = getattr(module, tensor_name)
        found.extend((tensor, axis) for axis in range(tensor.dim()) if part.shape[axis] != tensor.shape[axis])
    return found


def _taylor(axes: list[Axis], name: str, units: int) -> Tensor:
    """Sum of ``|w * grad|`` over the weights of each unit of ``name``, this batch."""
    total = torch.zeros(units, dtype=torch.float64)
    done: set[tuple[int, int]] = set()
    for module, role, layout in axes:
        for tensor, axis in _tensor_axes(module, role):
            if tensor.grad is None or (id(tensor), axis) in done:
                continue
            done.add((id(tensor), axis))
            saliency = (tensor.detach() * tensor.grad).abs()
            per_entry = saliency.sum([d for d in range(tensor.dim()) if d != axis]) if tensor.dim() > 1 else saliency
            per_entry = per_entry.double().cpu()
            start = 0
            for segment in layout:
                if segment.dim == name:
                    total += per_entry[start : start + segment.length].view(segment.units, segment.width).sum(1)
                start += segment.length
    return total


@contextmanager
def _trainable(model: nn.Module) -> Iterator[None]:
    """Gradients for every parameter (frozen ones included) while scoring."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _gated_inputs(groups: Mapping[str, list[list[Axis]]], gates: Mapping[str, Tensor]) -> Iterator[None]:
    """Multiply the inputs of the readers of each gated width by its gate (a row per group), unit by unit."""
    handles = []
    for name, parts in groups.items():
        for row, axes in enumerate(parts):
            for module, layout in _readers(axes):
                handles.append(module.register_forward_pre_hook(_gate_hook(gates[name][row], name, layout, module)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _gate_hook(gate: Tensor, name: str, layout: tuple[Segment, ...], module: nn.Module) -> Callable[..., Any]:
    # Convolutions carry features on dim 1, Linear-like layers on the last dim.
    shape = (-1, 1, 1) if isinstance(module, nn.Conv2d) else (-1,)

    def hook(_: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        full = torch.cat(
            [gate.repeat_interleave(s.width) if s.dim == name else gate.new_ones(s.length) for s in layout]
        )
        return (args[0] * full.view(shape).to(args[0].dtype), *args[1:])

    return hook
