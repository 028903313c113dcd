"""Cost of a plain (extracted) model: parameters, FLOPs, measured latency, file size."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_nas.inputs import call_with_example

__all__ = ["count_flops", "count_params", "directory_size", "measure_latency"]


def count_params(model: nn.Module) -> int:
    """Number of parameters, tied parameters counted once.

    Example:
        >>> count_params(torch.nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example_input: Any) -> int:
    """FLOPs of one forward pass on ``example_input``, counted by ``torch.utils.flop_counter``.

    Example:
        >>> count_flops(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        12
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            call_with_example(model, example_input)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module, example_input: Any, warmup: int = 3, repeats: int = 10, min_seconds: float = 0.0
) -> float:
    """Median wall-clock seconds of one forward pass on the model's current device.

    Runs in eval mode without gradients, synchronising CUDA around each call. Repeats until both
    ``repeats`` calls and ``min_seconds`` have passed.

    Example:
        >>> measure_latency(torch.nn.Linear(3, 2), torch.zeros(1, 3), repeats=3) > 0
        True
    """
    device = next(model.parameters()).device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                call_with_example(model, example_input)
            synchronize()
            start_all = time.perf_counter()
            while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
                start = time.perf_counter()
                call_with_example(model, example_input)
                synchronize()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times)


def directory_size(path: str | Path) -> int:
    """Total bytes of the files under ``path`` (or of the file itself)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
