"""Supernet training under Lightning's DDP: one gradient all-reduce per optimizer step.

DDP averages gradients in hooks armed by its own forward. The students of a supernet step run
their forwards outside it (on the inner model, after the user's ``training_step``), so with DDP's
own synchronisation only the teacher's gradients would be averaged and the replicas would drift.
:class:`~lightning_nas.callbacks.SupernetCallback` therefore switches DDP's synchronisation off for
the step, as ``no_sync`` does for gradient accumulation, and averages the summed gradients of
teacher and students once, after the last backward before the optimizer step.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel

__all__ = ["average_gradients", "check_strategy", "ddp_model"]

# The bucket size of DDP's own reducer: large enough to amortise latency, small enough for memory.
_BUCKET_BYTES = 25 * 1024 * 1024

_WHY_NOT = {
    "FSDPStrategy": (
        "FSDP shards the weights and gathers them only inside its own forward, while the elastic "
        "layers slice full weight tensors and the students run outside that forward"
    ),
    "ModelParallelStrategy": "FSDP2/tensor parallelism shards the weights the elastic layers slice",
    "DeepSpeedStrategy": "DeepSpeed's engine owns the backward and gradient reduction the students need",
}


def check_strategy(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Refuse, before training, a Lightning strategy under which supernet training would be wrong."""
    strategy = trainer.strategy
    name = type(strategy).__name__
    if name in _WHY_NOT:
        raise MisconfigurationException(
            f"SupernetCallback cannot train under {name}: {_WHY_NOT[name]}; use strategy='ddp' (or 'ddp_spawn')"
        )
    if getattr(strategy, "_layer_sync", None) is not None:
        raise MisconfigurationException(
            "SupernetCallback cannot train with Trainer(sync_batchnorm=True): it would replace the elastic "
            "batch-norm layers by full-width SyncBatchNorm layers after the supernet is built"
        )
    if isinstance(strategy, DDPStrategy):
        if not pl_module.automatic_optimization:
            raise MisconfigurationException(
                "SupernetCallback under DDP needs automatic optimization (the callback averages the students' "
                "gradients before the optimizer step Lightning takes)"
            )
        return
    if not isinstance(strategy, SingleDeviceStrategy) and trainer.world_size > 1:
        raise MisconfigurationException(
            f"SupernetCallback supports single-device and DDP training, not {name}; use strategy='ddp'"
        )


def ddp_model(trainer: L.Trainer) -> DistributedDataParallel | None:
    """The trainer's ``DistributedDataParallel`` wrapper, or ``None`` when it has none."""
    model = trainer.model
    return model if isinstance(model, DistributedDataParallel) else None


@torch.no_grad()
def average_gradients(ddp: DistributedDataParallel) -> None:
    """Average the gradients of ``ddp``'s parameters over its process group, in flat buckets.

    Every rank trains the same architectures, so the same parameters have gradients on every rank.
    """
    group = ddp.process_group
    world = dist.get_world_size(group)
    grads = [p.grad for p in ddp.module.parameters() if p.grad is not None]
    for bucket in _buckets(grads):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat, group=group)
        flat.div_(world)
        for grad, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(synced)


def average_values(ddp: DistributedDataParallel, values: list[float]) -> list[float]:
    """The mean of ``values`` over the ranks of ``ddp``'s process group (e.g. losses on each
    rank's share of the batch: their mean is the loss on the global batch)."""
    device = next(ddp.module.parameters()).device
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, group=ddp.process_group)
    return (tensor / dist.get_world_size(ddp.process_group)).tolist()


def _buckets(tensors: list[Tensor]) -> list[list[Tensor]]:
    """``tensors`` grouped by dtype and device into runs of at most ``_BUCKET_BYTES``."""
    by_kind: dict[tuple, list[list[Tensor]]] = {}
    sizes: dict[tuple, int] = {}
    for tensor in tensors:
        kind = (tensor.dtype, tensor.device)
        size = tensor.numel() * tensor.element_size()
        runs = by_kind.setdefault(kind, [[]])
        if runs[-1] and sizes[kind] + size > _BUCKET_BYTES:
            runs.append([])
            sizes[kind] = 0
        runs[-1].append(tensor)
        sizes[kind] = sizes.get(kind, 0) + size
    return [run for runs in by_kind.values() for run in runs]
