"""Supernet training of a tiny model, as a script that Lightning's DDP launchers can run.

``python -m tests.ddp_job OUT --devices 2 --strategy ddp`` fits the model once per (training strategy,
gradient accumulation) pair and writes each rank's final parameters and sampled architectures to
``OUT/<name>-rank<r>.pt``; :mod:`tests.test_ddp` compares them with one-process runs of
:func:`fit` on the same global batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_nas.callbacks import SupernetCallback

#: (name, training strategy, accumulate_grad_batches) of every run.
RUNS = [
    ("sandwich", "sandwich", 1),
    ("instatune", "instatune", 1),
    ("spos", "spos", 1),
    ("sandwich-acc2", "sandwich", 2),
    ("spos-acc2", "spos", 2),
    ("attentive", "attentive", 1),
]
GLOBAL_BATCH = 16
STEPS = 3


class Tiny(L.LightningModule):
    """An MLP with two elastic widths and no batch norm (whose statistics are per rank under DDP)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        self.example_input_array = torch.zeros(2, 6)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH * STEPS * 2, 6, generator=generator)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


class Data(L.LightningDataModule):
    """Rank ``r`` of ``N`` gets samples ``r, r + N, ...``: the ranks' batches together are the one-process batches."""

    def val_dataloader(self) -> DataLoader:
        return DataLoader(dataset(), batch_size=GLOBAL_BATCH)

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(dataset(), num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset(), batch_size=GLOBAL_BATCH // world, sampler=sampler)


class Record(L.Callback):
    """Keeps the architectures of every step and writes each rank's result at the end of training."""

    def __init__(self, supernet_callback: SupernetCallback, out: Path | None, name: str) -> None:
        self.supernet_callback, self.out, self.name = supernet_callback, out, name
        self.archs: list[Any] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # At the end of the step: the students a strategy chose on the batch (Attentive) are known.
        self.archs.append((self.supernet_callback._teacher, self.supernet_callback._students))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.result = {
            "params": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
            "archs": self.archs,
            "steps": trainer.global_step,
        }
        if self.out is not None:
            torch.save(self.result, self.out / f"{self.name}-rank{trainer.global_rank}.pt")


def fit(
    name: str, strategy: str, accumulate: int, devices: int = 1, trainer_strategy: str = "auto", out: Path | None = None
) -> dict[str, Any]:
    """Train :class:`Tiny` for :data:`STEPS` optimizer steps on global batches of :data:`GLOBAL_BATCH`."""
    module = Tiny()
    supernet = SupernetCallback(strategy=strategy, module="model", seed=7)
    record = Record(supernet, out, name)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=trainer_strategy,
        max_steps=STEPS,
        accumulate_grad_batches=accumulate,
        callbacks=[supernet, record],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=Data())
    return getattr(record, "result", {})


class Logged(Tiny):
    """:class:`Tiny` with a ``validation_step`` that logs a torchmetrics accuracy, as users write it."""

    def __init__(self) -> None:
        import torchmetrics

        super().__init__()
        self.accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=3)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.accuracy(self.model(x), y)
        self.log("val_acc", self.accuracy)


def fit_and_search(out: Path, devices: int, trainer_strategy: str, metric: str, n_trials: int = 4) -> None:
    """A DDP fit followed by the one-shot search, whose study goes to ``OUT/search-<metric>.db``.

    ``metric="logged"``: the ``val_acc`` that ``validation_step`` logs; ``"torchmetrics"``: a metric
    object given to the search.
    """
    import torchmetrics

    from lightning_nas.callbacks import OneShotSearch

    supernet = SupernetCallback(strategy="sandwich", module="model", seed=7)
    search = OneShotSearch(
        metric="val_acc" if metric == "logged" else torchmetrics.Accuracy(task="multiclass", num_classes=3),
        n_trials=n_trials,
        storage=f"sqlite:///{out / f'search-{metric}.db'}",
        study_name="ddp",
        export_dir=False,
        verbose=False,
        progress=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=trainer_strategy,
        max_steps=STEPS,
        callbacks=[supernet, search],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(Logged() if metric == "logged" else Tiny(), datamodule=Data())
    (out / f"searched-{metric}-rank{trainer.global_rank}.txt").write_text(str(search.result is not None))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--runs", nargs="*", default=[name for name, _, _ in RUNS])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, strategy, accumulate in RUNS:
        if name in args.runs:
            fit(name, strategy, accumulate, args.devices, args.strategy, args.out)
    for metric in ("logged", "torchmetrics"):
        if f"search-{metric}" in args.runs:
            fit_and_search(args.out, args.devices, args.strategy, metric)


if __name__ == "__main__":
    main()
