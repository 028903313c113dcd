"""Supernet training step time under DDP on CPU: N=1 vs N=2 processes, and the communication.

Each configuration trains an MLP (hidden 512, ~0.8M parameters) with ``SupernetCallback`` for
``--steps`` optimizer steps after ``--warmup`` untimed ones, on a global batch of ``--batch``
(one process: all of it; two processes under ``strategy="ddp"`` (gloo): half each). The plain
model without the callback is the baseline of what DDP itself costs. ``all-reduces/step`` and
``MB/step`` count what the callback sends (``average_gradients``); DDP's own reducer is off in
supernet steps, so that is all the gradient traffic of a step.

    python benchmarks/ddp_step.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightning_nas._table import format_table  # noqa: E402
from lightning_nas.callbacks import SupernetCallback  # noqa: E402

CONFIGS = ["plain", "spos", "instatune", "sandwich"]


class MLP(L.LightningModule):
    def __init__(self, hidden: int = 512) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Linear(256, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10),
        )  # fmt: skip
        self.example_input_array = torch.zeros(2, 256)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Data(L.LightningDataModule):
    def __init__(self, batch: int, steps: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(
            torch.randn(batch * steps, 256, generator=generator), torch.randint(0, 10, (batch * steps,))
        )
        self.batch = batch

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(self.data, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(self.data, batch_size=self.batch // world, sampler=sampler)


class Clock(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.end = time.perf_counter()


def worker(devices: int, steps: int, warmup: int, batch: int, out: Path) -> None:
    torch.set_num_threads(1)
    counts = {"calls": 0, "bytes": 0}
    all_reduce = dist.all_reduce

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        counts["calls"] += 1
        counts["bytes"] += tensor.numel() * tensor.element_size()
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = counting  # what the callback sends (DDP's own reducer does not go through it)
    results = {}
    for config in CONFIGS:
        clock = Clock(warmup)
        callbacks: list[L.Callback] = [clock]
        if config != "plain":
            callbacks.insert(0, SupernetCallback(strategy=config, module="model"))
        trainer = L.Trainer(
            accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
            max_steps=warmup + steps, callbacks=callbacks, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            use_distributed_sampler=False,
        )  # fmt: skip
        counts.update(calls=0, bytes=0)
        trainer.fit(MLP(), datamodule=Data(batch, warmup + steps))
        results[config] = {
            "ms": 1000 * (clock.end - clock.start) / steps,
            "calls": counts["calls"] / (warmup + steps),
            "mb": counts["bytes"] / (warmup + steps) / 2**20,
        }
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        out.write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--devices", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.devices is not None:
        worker(args.devices, args.steps, args.warmup, args.batch, args.out)
        return
    measured = {}
    for devices in (1, 2):
        out = ROOT / f".ddp_step_{devices}.json"
        command = [sys.executable, __file__, "--devices", str(devices), "--out", str(out)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        measured[devices] = json.loads(out.read_text())
        out.unlink()
    rows = []
    for config in CONFIGS:
        one, two = measured[1][config], measured[2][config]
        rows.append([
            config, f"{one['ms']:.1f}", f"{two['ms']:.1f}", f"{two['ms'] / one['ms']:.2f}",
            f"{two['calls']:.0f}", f"{two['mb']:.2f}",
        ])  # fmt: skip
    header = ["training", "N=1 ms/step", "N=2 ms/step", "N=2 / N=1", "all-reduces/step", "MB/step"]
    print(format_table(header, rows))


if __name__ == "__main__":
    main()
