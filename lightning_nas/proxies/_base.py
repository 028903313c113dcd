"""What every proxy shares: the scoring target, batches, and a side-effect-free scoring context."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from lightning_nas._optuna import experimental
from lightning_nas.inputs import batch_input, batch_targets, call_model, to_device
from lightning_nas.supernet import Supernet

__all__ = ["Forward", "LossFn", "Proxy", "Target", "batch_input", "batch_targets"]

#: What a proxy scores: a plain model, or a supernet (with the sub-network given by ``arch=``).
Target = nn.Module | Supernet
#: ``loss_fn(outputs, targets) -> scalar loss``, e.g. ``torch.nn.functional.cross_entropy``.
LossFn = Callable[[Any, Any], Tensor]
#: ``forward(model, batch) -> outputs``; the default, :func:`lightning_nas.call_model`, feeds the
#: batch's input (a tensor, the first item of a tuple, or a mapping without its labels).
Forward = Callable[[nn.Module, Any], Any]

# Layers whose weights the gradient proxies score, as in the reference implementations
# (zero-cost-nas, ZiCo, SiGeo): convolutions and linear layers. Elastic versions subclass these.
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Proxy(Protocol):
    """The signature every proxy in :data:`~lightning_nas.proxies.PROXIES` has.

    Args:
        target: A model, or a :class:`~lightning_nas.Supernet` whose sub-network ``arch`` is
            scored with the weights it inherits.
        batches: A few batches as a data loader yields them (``(x, y)`` tuples, tensors, or
            mappings with a ``"labels"`` key).
        loss_fn: ``loss_fn(outputs, targets)``; ignored by the proxies that need no labels.
        arch: The sub-network of a supernet target (default: the active one).
        forward: How to run the model on a batch.

    Returns:
        The score; higher means a better architecture is predicted.
    """

    def __call__(
        self,
        target: Target,
        batches: Iterable[Any],
        loss_fn: LossFn = ...,
        *,
        arch: Mapping[str, int] | None = None,
        forward: Forward = call_model,
    ) -> float: ...


def _first_example(batch: Any) -> Any:
    return tree_map(lambda t: t[:1] if isinstance(t, Tensor) and t.dim() > 0 else t, batch)


def _output_sum(outputs: Any, proxy: str) -> Tensor:
    """The sum of every floating-point tensor a model returned (a tensor, tuple, dict, ...)."""
    sums = [t.sum() for t in tree_leaves(outputs) if isinstance(t, Tensor) and t.is_floating_point()]
    if not sums:
        raise ValueError(f"{proxy}: the model returned no floating-point tensor")
    return torch.stack(sums).sum()


def _materialize(batches: Iterable[Any], device: torch.device, minimum: int = 1, proxy: str = "") -> list[Any]:
    items = [to_device(b, device) for b in batches]
    if len(items) < minimum:
        raise ValueError(f"proxy {proxy!r} needs at least {minimum} batch(es), got {len(items)}")
    return items


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The convolution and linear layers of ``model`` whose weights are trainable, in order."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _WEIGHT_LAYERS) and m.weight is not None and m.weight.requires_grad
    ]


@contextmanager
def _scoring(target: Target, arch: Mapping[str, int] | None, train: bool = True) -> Iterator[nn.Module]:
    """Yield the model to score with ``arch`` active; undo every side effect on exit.

    The proxies compute gradients with :func:`torch.autograd.grad`, so ``.grad`` fields are never
    touched; what a forward pass can change in place (batch-norm running statistics and their
    counters, any other buffer) is restored from a snapshot, and so are the train/eval flags.
    ``train=True`` normalises with the batch's own statistics: the running statistics of a
    weight-shared supernet belong to no particular sub-network. Dropout stays off either way, so
    that a score is a deterministic function of the weights and the batches.
    """
    if isinstance(target, Supernet):  # before nn.Module: a Supernet is one too
        model = target.model
        active: AbstractContextManager[Any] | None = target.use(target.arch if arch is None else arch)
    elif isinstance(target, nn.Module):
        if arch is not None:
            raise ValueError("`arch=` selects a sub-network of a Supernet; got a plain nn.Module")
        model = target
        active = None
    else:
        raise TypeError(f"a proxy scores an nn.Module or a Supernet, got {type(target).__name__}")
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore() -> None:
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
        for m, training in modes.items():
            m.training = training

    with ExitStack() as stack:
        if active is not None:
            stack.enter_context(active)
        stack.callback(restore)
        model.train(train)
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        yield model


def _loss(model: nn.Module, batch: Any, loss_fn: LossFn, forward: Forward) -> Tensor:
    loss = loss_fn(forward(model, batch), batch_targets(batch))
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    return loss.reshape(())


def _weight_gradients(
    model: nn.Module, batches: list[Any], loss_fn: LossFn, forward: Forward
) -> tuple[list[tuple[str, nn.Module]], list[list[Tensor | None]], list[float]]:
    """Per-batch gradients of the loss w.r.t. every conv/linear weight, and the per-batch losses.

    A layer the active sub-network does not run (a skipped block) gets ``None``; in a supernet the
    inactive part of a weight tensor gets zero gradient.
    """
    layers = _weight_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no trainable Linear/Conv weight to score")
    weights = [m.weight for _, m in layers]
    grads: list[list[Tensor | None]] = []
    losses: list[float] = []
    for batch in batches:
        loss = _loss(model, batch, loss_fn, forward)
        grads.append(list(torch.autograd.grad(loss, weights, allow_unused=True)))
        losses.append(float(loss.detach()))
    return layers, grads, losses


_F = TypeVar("_F", bound=Callable[..., Any])


def _experimental_proxy(spearman: str) -> Callable[[_F], _F]:
    """Mark a zero-cost proxy experimental with its measured rank correlation on the digits benchmark.

    None of them ranks sub-networks better than their parameter count there yet.
    """
    return experimental(
        f"Spearman {spearman} with the stand-alone accuracy of 50 digits sub-networks, where #params reaches "
        "+0.70 and FLOPs +0.75; benchmarks/proxy_quality.py"
    )
