"""How the library calls a model: on an example input, on a batch as data loaders yield it, in eval mode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

__all__ = ["call_model", "call_with_example", "eval_mode", "to_device"]


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


def call_model(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a batch as data loaders usually yield it.

    A tensor is the input; for a tuple or list the first item is the input (``(x, y)``); a mapping
    is passed as keyword arguments without its labels (Hugging Face style batches).

    Example:
        >>> call_model(torch.nn.Linear(2, 1), (torch.zeros(3, 2), torch.zeros(3))).shape
        torch.Size([3, 1])
    """
    if isinstance(batch, Tensor):
        return model(batch)
    if isinstance(batch, Mapping):
        return model(**{k: v for k, v in batch.items() if k not in ("labels", "label")})
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    raise TypeError(f"cannot tell the model input in a batch of type {type(batch).__name__}; pass `forward=`")


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
