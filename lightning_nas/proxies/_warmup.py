"""Sub-one-shot warm-up: a short training of the supernet on a fraction of the training data."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lightning_nas.inputs import call_model, to_device
from lightning_nas.proxies._base import Forward, LossFn, Target, _device, batch_targets
from lightning_nas.space import Arch
from lightning_nas.strategies import (
    Distill,
    TrainingStrategy,
    choose_students,
    distillation_loss,
    resolve_strategy,
    train_students,
)
from lightning_nas.supernet import Supernet

__all__ = ["WarmupResult", "is_warmed_up", "warmup"]


@dataclass
class WarmupResult:
    """What :func:`warmup` did.

    Attributes:
        steps: Optimizer steps taken.
        num_batches: Distinct training batches used (the warm-up subset).
        losses: Each step's loss on the labels (of the one sampled sub-network with SPOS, of the
            largest one with the sandwich rule).
        archs: The sub-network trained on the labels at each step.
    """

    steps: int
    num_batches: int
    losses: list[float] = field(default_factory=list)
    archs: list[Arch] = field(default_factory=list)


def is_warmed_up(target: Target) -> bool:
    """Whether :func:`warmup` has trained this supernet (its :attr:`~lightning_nas.Supernet.warmup_steps`).

    A plain model is never considered warmed up: pass ``warmed_up=True`` to :func:`sigeo` for one
    trained some other way.

    Example:
        >>> is_warmed_up(torch.nn.Linear(2, 2))
        False
    """
    return isinstance(target, Supernet) and target.warmup_steps > 0


def warmup(
    supernet: Supernet,
    batches: Iterable[Any],
    *,
    fraction: float | None = None,
    steps: int | None = None,
    epochs: int = 1,
    loss_fn: LossFn = F.cross_entropy,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 3e-3,
    strategy: str | TrainingStrategy = "spos",
    seed: int = 0,
    forward: Forward = call_model,
    distill: Distill = distillation_loss,
) -> WarmupResult:
    """Warm the supernet up (SiGeo's sub-one-shot setting): a short supernet training on a data subset.

    By default each step samples one sub-network uniformly (SPOS), runs it on one batch and takes
    an optimizer step on the shared weights; any :mod:`lightning_nas.strategies` strategy works
    (e.g. ``"sandwich"``: the largest net on the labels, the students distilled from its detached
    outputs with frozen batch-norm statistics, one optimizer step for all: the step of
    :class:`~lightning_nas.callbacks.SupernetCallback`, through the same
    :func:`~lightning_nas.strategies.train_students`). The subset is the first
    ``ceil(fraction · len(batches))`` batches, held in memory and kept fixed for all ``epochs``, so
    with a shuffling data loader it is a random ``fraction`` of the training data. Afterwards the
    supernet's previous architecture and train/eval flags are restored, gradients are cleared,
    :attr:`~lightning_nas.Supernet.warmup_steps` grows by the steps taken, and :func:`sigeo`
    therefore uses its warmed-up weights by default.

    Batch-norm running statistics are left as the labelled sub-networks' steps made them (a mix
    over sub-networks with SPOS): the proxies normalise with batch statistics, and an
    inherited-weight evaluation must recalibrate them anyway
    (:meth:`~lightning_nas.Supernet.recalibrate_batchnorm`).

    Args:
        supernet: The supernet to train in place.
        batches: Training batches, e.g. a data loader over the whole training set.
        fraction: Share of ``batches`` to train on, in (0, 1]; needs ``len(batches)``. Default:
            all of them.
        steps: Instead of ``fraction``/``epochs``: this many steps, cycling over the first
            ``steps`` batches.
        epochs: Passes over the subset (ignored with ``steps``).
        loss_fn: ``loss_fn(outputs, targets)``.
        optimizer: An optimizer over the supernet's parameters; default ``AdamW(lr=lr)``.
        lr: Learning rate of the default optimizer.
        strategy: Which sub-networks each step trains: a
            :class:`~lightning_nas.strategies.TrainingStrategy` or its name (``"spos"``,
            ``"sandwich"``, ``"instatune"``, ``"attentive"``), sampled over ``supernet.space``.
        seed: Seed of the architecture sampling.
        forward: How to run the model on a batch.
        distill: The students' loss, as in :class:`~lightning_nas.callbacks.SupernetCallback`:
            ``distill(student_output, teacher_output)`` or ``distill(student_output, teacher_output, batch)``.

    Returns:
        The number of steps and batches, and each step's label loss and labelled architecture.

    Example:
        >>> from lightning_nas import Supernet
        >>> net = Supernet(
        ...     torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
        ...     example_input=torch.zeros(1, 4),
        ... )
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(10)]
        >>> result = warmup(net, data, fraction=0.2, epochs=3)
        >>> result.num_batches, result.steps, is_warmed_up(net)
        (2, 6, True)
    """
    if steps is not None and fraction is not None:
        raise ValueError("warmup: give `fraction` (with `epochs`) or `steps`, not both")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"warmup: `fraction` must lie in (0, 1], got {fraction}")
    if epochs < 1 or (steps is not None and steps < 1):
        raise ValueError("warmup: `epochs` and `steps` must be at least 1")
    if fraction is not None:
        if not hasattr(batches, "__len__"):
            raise ValueError("warmup: `fraction` needs batches with a length (a list or a DataLoader)")
        subset = list(itertools.islice(batches, max(1, math.ceil(fraction * len(batches)))))  # type: ignore[arg-type]
    else:
        subset = list(itertools.islice(batches, steps))
    if not subset:
        raise ValueError("warmup: no training batches")
    total = steps if steps is not None else epochs * len(subset)

    model = supernet.model
    device = _device(model)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    plan = resolve_strategy(strategy)
    result = WarmupResult(steps=total, num_batches=len(subset))
    modes = {m: m.training for m in model.modules()}
    previous = supernet.arch
    try:
        model.train()
        for batch in itertools.islice(itertools.cycle(subset), total):
            batch = to_device(batch, device)
            teacher, students = plan.sample(supernet.space, rng)
            optimizer.zero_grad(set_to_none=True)
            supernet.set_arch(teacher)
            outputs = forward(model, batch)
            loss = loss_fn(outputs, batch_targets(batch))
            loss.backward()
            run = lambda m: forward(m, batch)  # noqa: E731 - the same inputs for scoring and training
            students = choose_students(plan, supernet, students, run, outputs, batch, rng=rng, distill=distill)
            train_students(supernet, students, run, outputs, batch, distill=distill)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            result.archs.append(dict(teacher))
    finally:
        for param in model.parameters():
            param.grad = None
        supernet.set_arch(previous)
        for m, training in modes.items():
            m.training = training
    supernet.warmup_steps += total
    return result
