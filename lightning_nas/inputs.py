"""The batch convention: how the library reads a batch and a model output, and how it calls a model.

Every place that splits a batch into inputs and targets, calls a model on a batch or an example
input, or reads an output's prediction tensor or loss uses these functions; what Hugging Face
batches and outputs look like (``labels`` / ``label`` keys, ``.logits``, ``.loss``) is known here
and nowhere else. A batch is

- a tensor: the model input, no targets;
- a tuple or list ``(input, target, ...)``: the first item is the input, the second the targets;
- a mapping (Hugging Face style): its entries except the labels are keyword arguments of the model,
  ``"labels"`` (or ``"label"``) holds the targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_map

__all__ = [
    "LABEL_KEYS",
    "batch_input",
    "batch_targets",
    "call_model",
    "call_with_example",
    "eval_mode",
    "hidden_states",
    "model_loss",
    "output_loss",
    "output_tensor",
    "split_batch",
    "to_device",
    "with_input",
]

#: Keys of a mapping batch that hold the targets, in order of preference.
LABEL_KEYS = ("labels", "label")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(input, targets)`` of a batch; ``targets`` is ``None`` when the batch has none.

    Example:
        >>> split_batch({"input_ids": 1, "label": 0})
        ({'input_ids': 1}, 0)
        >>> split_batch(torch.zeros(2))[1] is None
        True
    """
    if isinstance(batch, Mapping):
        targets = next((batch[key] for key in LABEL_KEYS if key in batch), None)
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}, targets
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError(f"an empty {type(batch).__name__} is not a batch")
        return batch[0], batch[1] if len(batch) >= 2 else None
    return batch, None


def batch_input(batch: Any) -> Any:
    """The model input of a batch, as :func:`call_model` reads it.

    Example:
        >>> batch_input((torch.zeros(2, 3), torch.tensor([0, 1]))).shape
        torch.Size([2, 3])
    """
    return split_batch(batch)[0]


def batch_targets(batch: Any) -> Any:
    """The labels of a batch: the second item of a tuple, or the ``"labels"`` entry of a mapping.

    Example:
        >>> batch_targets((torch.zeros(2, 3), torch.tensor([0, 1])))
        tensor([0, 1])
    """
    targets = split_batch(batch)[1]
    if targets is None:
        raise ValueError(
            f"cannot find labels in a batch of type {type(batch).__name__}: this needs (input, target) "
            f"tuples or mappings with a {LABEL_KEYS[0]!r} key"
        )
    return targets


def with_input(batch: Any, new_input: Any) -> Any:
    """``batch`` with its model input replaced (the inverse of :func:`batch_input`).

    Example:
        >>> with_input((1, 2), 5)
        (5, 2)
    """
    if isinstance(batch, (tuple, list)):
        return type(batch)((new_input, *batch[1:]))
    if isinstance(batch, Mapping):
        return {**batch, **new_input}
    return new_input


def call_with_example(model: Any, example_input: Any) -> Any:
    """Call ``model`` on an example input: a tensor, a tuple of positional arguments, or a mapping
    of keyword arguments.

    Example:
        >>> call_with_example(torch.nn.Linear(2, 1), torch.zeros(3, 2)).shape
        torch.Size([3, 1])
    """
    if isinstance(example_input, Mapping):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def call_model(model: nn.Module, batch: Any, **options: Any) -> Any:
    """Run ``model`` on a batch as data loaders usually yield it.

    A tensor is the input; for a tuple or list the first item is the input (``(x, y)``); a mapping
    is passed as keyword arguments without its labels (Hugging Face style batches), together with
    ``options`` (e.g. ``output_hidden_states=True``; other inputs take no options).

    Example:
        >>> call_model(torch.nn.Linear(2, 1), (torch.zeros(3, 2), torch.zeros(3))).shape
        torch.Size([3, 1])
    """
    if not isinstance(batch, (Tensor, Mapping, tuple, list)):
        raise TypeError(f"cannot tell the model input in a batch of type {type(batch).__name__}; pass `forward=`")
    inputs = batch_input(batch)
    return model(**inputs, **options) if isinstance(inputs, Mapping) else model(inputs)


def output_tensor(output: Any) -> Tensor:
    """The prediction tensor in a model output: itself, ``.logits``, or the first tensor inside.

    Example:
        >>> output_tensor((torch.ones(1), "aux"))
        tensor([1.])
    """
    if isinstance(output, Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"cannot find a prediction tensor in a model output of type {type(output).__name__}")


def hidden_states(output: Any) -> tuple[Tensor, ...] | None:
    """The per-layer hidden states of an output (``.hidden_states`` of a Hugging Face output, asked for
    with ``output_hidden_states=True``: the embeddings' output, then one per layer), else ``None``.

    Example:
        >>> hidden_states({"hidden_states": (torch.zeros(1), torch.ones(1))})[1]
        tensor([1.])
        >>> hidden_states(torch.zeros(2)) is None
        True
    """
    states = output.get("hidden_states") if isinstance(output, Mapping) else getattr(output, "hidden_states", None)
    return tuple(states) if isinstance(states, (tuple, list)) and states else None


def output_loss(output: Any) -> Tensor | None:
    """The loss a model computed itself (``.loss`` of a Hugging Face output), else ``None``.

    Example:
        >>> output_loss({"loss": torch.tensor(0.5)})
        tensor(0.5000)
        >>> output_loss(torch.zeros(2)) is None
        True
    """
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, Tensor) else None


def model_loss(model: nn.Module, batch: Any, loss_fn: Callable[[Tensor, Any], Tensor] = F.cross_entropy) -> Tensor:
    """The training loss of ``model`` on a labelled batch.

    A mapping batch gets its labels passed as ``labels=`` so that a model computing its own loss
    (Hugging Face) returns it; otherwise ``loss_fn(prediction tensor, targets)``.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> batch = (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> bool(model_loss(model, batch) > 0)
        True
    """
    inputs, targets = split_batch(batch)
    if targets is None:
        raise TypeError(
            f"cannot tell the loss of a {type(batch).__name__} batch without labels; pass `loss_fn=` (a function of "
            "the model and the batch)"
        )
    if isinstance(inputs, Mapping):
        output = model(**inputs, labels=targets)
        loss = output_loss(output)
        if loss is not None:
            return loss
    else:
        output = model(inputs)
    return loss_fn(output_tensor(output), targets)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside it moved to ``device``."""
    return tree_map(lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t, batch)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode inside a ``with`` block, then restore each one's mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
