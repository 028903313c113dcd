"""Size baselines: a proxy that does not beat the parameter count adds nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_nas.inputs import call_model
from lightning_nas.proxies._base import Forward, LossFn, Target, _device, _first_example, _materialize, _scoring
from lightning_nas.supernet import Supernet

__all__ = ["flops", "num_params"]


def num_params(
    target: Target,
    batches: Iterable[Any] = (),
    loss_fn: LossFn | None = None,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """Number of parameters of the (sub-)network; ``batches`` and ``loss_fn`` are not used.

    Example:
        >>> num_params(torch.nn.Linear(4, 3))
        15.0
    """
    if isinstance(target, Supernet):
        return float(target.num_params(target.arch if arch is None else arch))
    if arch is not None:
        raise ValueError("`arch=` selects a sub-network of a Supernet; got a plain nn.Module")
    return float(sum(p.numel() for p in target.parameters()))


def flops(
    target: Target,
    batches: Iterable[Any] = (),
    loss_fn: LossFn | None = None,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """FLOPs of one forward pass on one example (``torch.utils.flop_counter``).

    A supernet is measured on its ``example_input`` (:meth:`~lightning_nas.Supernet.flops`); a
    plain model on the first example of the first batch.

    Example:
        >>> flops(torch.nn.Linear(4, 3), [torch.zeros(8, 4)])
        24.0
    """
    if isinstance(target, Supernet) and target.example_input is not None:
        return float(target.flops(target.arch if arch is None else arch))
    with _scoring(target, arch, train=False) as model, torch.no_grad():
        example = _first_example(_materialize(batches, _device(model), proxy="flops")[0])
        counter = FlopCounterMode(display=False)
        with counter:
            forward(model, example)
    return float(counter.get_total_flops())
