"""Compress a pretrained Hugging Face encoder for text classification (``lightning-nas compress``).

The pretrained model becomes elastic while it is fine-tuned on the user's task (InstaTune):
each layer's heads and FFN neurons are first sorted by importance so every sub-network keeps the
part worth keeping, then each step trains the full model on labels and one random sub-network
within the budget, distilled from it. An Optuna study then searches sub-networks (accuracy vs
parameters vs the measured latency of the extracted model) under the budget on the encoder's
parameters, and the best one is written with ``save_pretrained`` so that
``AutoModelForSequenceClassification`` reloads it.

:class:`TextClassifier` and :class:`TextDataModule` are ordinary Lightning code; all the NAS comes
from the two callbacks in :func:`compress`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = [
    "WIDTH_FRACTIONS",
    "CompressionReport",
    "TextClassifier",
    "TextDataModule",
    "compress",
    "dense_encoder_params",
    "encoder_params",
    "evaluate_accuracy",
]

#: Default width choices of :func:`compress`: 1/4 to all of each width in steps of 1/24.
WIDTH_FRACTIONS = tuple(k / 24 for k in range(6, 25))


class TextClassifier(L.LightningModule):
    """Fine-tunes ``AutoModelForSequenceClassification`` with cross-entropy; logs ``val_acc``.

    Args:
        model_dir: A Hugging Face model directory (or an already built model).
        num_labels: Number of classes.
        lr: Peak learning rate of AdamW (linear warm-up for 10% of the steps, then linear decay);
            1e-4 suits MiniLM-sized models on a few thousand examples (5e-5 underfits).
        weight_decay: AdamW weight decay.
        max_length: Sequence length of the example input used to trace the model.
    """

    def __init__(
        self,
        model_dir: str | Path | nn.Module,
        num_labels: int,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        max_length: int = 64,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        self.save_hyperparameters(ignore=["model_dir"])
        if isinstance(model_dir, nn.Module):
            self.model = model_dir
        else:
            # from_pretrained returns the model in eval mode and Lightning keeps each module's mode,
            # so without train() the fine-tuning would silently run without dropout.
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
            self.model = model.train()
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_labels)
        ids = torch.ones(2, max_length, dtype=torch.long)
        self.example_input_array = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        self.val_acc(logits, batch["labels"])
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> Any:
        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class TextDataModule(L.LightningDataModule):
    """Tokenised train / validation / test texts with dynamic padding.

    Args:
        tokenizer: A Hugging Face tokenizer.
        train, val, test: ``(texts, labels)`` pairs.
        max_length: Truncation length.
        batch_size: Training batch size (evaluation uses twice as much).
    """

    def __init__(
        self,
        tokenizer: Any,
        train: tuple[Sequence[str], Sequence[int]],
        val: tuple[Sequence[str], Sequence[int]],
        test: tuple[Sequence[str], Sequence[int]],
        max_length: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.splits = {"train": train, "val": val, "test": test}
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        from transformers import DataCollatorWithPadding

        texts, labels = self.splits[split]
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        rows = [
            {"input_ids": ids, "attention_mask": mask, "labels": label}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels)
        ]
        return DataLoader(
            rows,
            batch_size=self.batch_size if shuffle else 2 * self.batch_size,
            shuffle=shuffle,
            collate_fn=DataCollatorWithPadding(self.tokenizer),
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def encoder_params(supernet: Any, arch: dict[str, int]) -> float:
    """Parameters of a sub-network outside its token, position and type embeddings."""
    return float(supernet.num_params(arch) - supernet.num_params(arch, where=_is_embedding))


def _is_embedding(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding)


def dense_encoder_params(model: nn.Module) -> int:
    """:func:`encoder_params` of a plain model: its parameters outside ``nn.Embedding`` modules."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


@dataclass
class CompressionReport:
    """Before/after figures of :func:`compress`."""

    rows: list[dict[str, Any]]
    export_path: Path
    study_storage: str

    def table(self) -> str:
        from lightning_nas._table import format_table

        header = ["model", "params", "encoder params", "test acc", "latency b32 (ms)", "latency b1 (ms)", "size (MB)"]
        body = [
            [
                r["model"],
                f"{r['params']:,}",
                f"{r['encoder_params']:,.0f}",
                f"{r['test_acc']:.4f}",
                f"{r['latency_b32_ms']:.1f}",
                f"{r['latency_b1_ms']:.1f}",
                f"{r['size_mb']:.1f}",
            ]
            for r in self.rows
        ]
        return format_table(header, body)


def evaluate_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Accuracy of a Hugging Face sequence classifier on a loader of tokenised, labelled batches."""
    correct = total = 0
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    return correct / total


def compress(
    model_dir: str | Path,
    out_dir: str | Path = "nas_runs/compress",
    *,
    dataset: str = "rotten_tomatoes",
    max_encoder_params: float = 0.5,
    epochs: int = 1,
    n_trials: int = 30,
    max_length: int = 64,
    batch_size: int = 32,
    lr: float = 1e-4,
    max_train: int | None = None,
    max_test: int | None = None,
    importance_batches: int = 8,
    strategy: str = "instatune",
    per_layer: bool = False,
    elastic_hidden: bool = False,
    elastic_depth: bool = False,
    width_fractions: Sequence[float] = WIDTH_FRACTIONS,
    seed: int = 0,
    limit_train_batches: int | float | None = None,
) -> CompressionReport:
    """Fine-tune ``model_dir`` as a supernet on a text-classification task, search it, export it.

    Args:
        model_dir: A pretrained Hugging Face encoder (BERT, RoBERTa, DistilBERT, ELECTRA family).
        out_dir: Where the study (``nas.db``) and the exported model (``best_model/``) go.
        dataset: A bundled dataset (:func:`~lightning_nas.datasets.available_text_datasets`).
        max_encoder_params: Budget on the encoder's parameters (embeddings excluded), as a
            fraction of the original's.
        epochs: Fine-tuning epochs (one InstaTune epoch over the 8.9k training texts costs about
            1.7 plain epochs; the default keeps a CPU run of MiniLM well under 30 minutes).
        n_trials: Optuna trials of the search.
        max_length: Truncation length.
        batch_size: Training batch size.
        lr: Peak learning rate.
        max_train: Use at most this many training texts (``None``: all).
        max_test: Use at most this many test texts.
        importance_batches: Training batches used to sort heads/neurons by importance (0: off).
        strategy: Supernet training strategy (``"instatune"``, ``"sandwich"``, ``"spos"``). Its
            random sub-networks are drawn only among those within the budget: the others are
            never exported, so training them would be wasted.
        per_layer: One heads and one FFN width per layer instead of one for all layers (a far
            larger space; the exports then need ``import lightning_nas`` to reload).
        elastic_hidden: Also shrink the hidden size (embeddings, every projection). Off by
            default: on MiniLM it costs more accuracy per parameter than heads and FFN neurons.
        elastic_depth: Also drop layers. Off by default: a model pretrained for mean pooling,
            such as all-MiniLM-L6-v2, has a nearly constant [CLS] token before its last layer.
        width_fractions: Choices of every width as fractions of the original (default: steps
            of 1/24 from 1/4, so FFN widths of MiniLM in steps of 64 neurons).
        seed: Seed of data order, sampling and search.
        limit_train_batches: Passed to the Trainer (for quick runs).

    Returns:
        A :class:`CompressionReport`; its :meth:`~CompressionReport.table` compares the original
        fine-tuned model with the export.
    """
    from transformers import AutoTokenizer

    from lightning_nas.callbacks import OneShotSearch, SupernetCallback
    from lightning_nas.datasets import load_text_classification, train_validation_split
    from lightning_nas.export.hf import export_hf, load_hf
    from lightning_nas.importance import reorder_by_importance
    from lightning_nas.metrics import count_params, directory_size, measure_latency

    if not 0 < max_encoder_params <= 1:
        raise ValueError(f"max_encoder_params is a fraction in (0, 1], got {max_encoder_params}")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    L.seed_everything(seed, verbose=False)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    data = load_text_classification(dataset, max_train=max_train, max_test=max_test)
    fit_x, fit_y, val_x, val_y = train_validation_split(data.train_texts, data.train_labels)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    datamodule = TextDataModule(
        tokenizer, (fit_x, fit_y), (val_x, val_y), (data.test_texts, data.test_labels), max_length, batch_size, seed
    )
    module = TextClassifier(model_dir, len(data.label_names), lr=lr, max_length=max_length)

    def prepare(supernet: Any) -> None:
        if importance_batches:
            reorder_by_importance(supernet, datamodule.train_dataloader(), max_batches=importance_batches)

    def encoder_cost(arch: dict[str, int]) -> float:
        return encoder_params(supernet_callback.supernet, arch)

    budget = max_encoder_params * dense_encoder_params(module.model)
    supernet_callback = SupernetCallback(
        strategy=strategy,
        module="model",
        prepare=prepare,
        seed=seed,
        limits={"encoder_params": budget},
        costs={"encoder_params": encoder_cost},
        adapter_options={
            # The space compress has always searched (global heads need a lightning_nas config on BERT);
            # whether compress defaults to stock-expressible spaces is decided with issue 13.
            "stock_config": False,
            "per_layer": per_layer,
            "hidden": elastic_hidden,
            "depth": elastic_depth,
            "width_fractions": tuple(width_fractions),
        },
    )
    supernet_callback.build(module)
    supernet = supernet_callback.supernet
    search = OneShotSearch(
        metric="val_acc",
        objectives=("params", "latency"),
        costs={"encoder_params": encoder_cost},
        limits={"encoder_params": budget},
        n_trials=n_trials,
        storage=f"sqlite:///{out / 'nas.db'}",
        study_name="compress",
        export_dir=out / "best_model",
        exporter=functools.partial(export_hf, tokenizer=tokenizer),
        loader=load_hf,
        seed=seed,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[supernet_callback, search],
        default_root_dir=str(out),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_train_batches=limit_train_batches,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule)
    if search.best_model is None:
        raise RuntimeError("the search found no sub-network within the budget; raise n_trials or the budget")

    test_loader = datamodule.test_dataloader()
    full = supernet.extract(supernet.max_arch())
    examples = {
        batch: {"input_ids": torch.ones(batch, 128, dtype=torch.long), "attention_mask": torch.ones(batch, 128)}
        for batch in (32, 1)
    }
    rows = []
    sources = (("fine-tuned original", full, model_dir), ("compressed", search.best_model, search.export_path))
    for name, model, path in sources:
        model = model.eval()
        arch = supernet.max_arch() if model is full else search.result.best_arch
        rows.append(
            {
                "model": name,
                "params": count_params(model),
                "encoder_params": encoder_params(supernet, arch),
                "test_acc": evaluate_accuracy(model, test_loader),
                "latency_b32_ms": measure_latency(model, examples[32], repeats=5) * 1e3,
                "latency_b1_ms": measure_latency(model, examples[1], repeats=20) * 1e3,
                "size_mb": directory_size(Path(path) / "model.safetensors") / 2**20,
            }
        )
    report = CompressionReport(rows, search.export_path, f"sqlite:///{out / 'nas.db'}")
    (out / "report.json").write_text(json.dumps(rows, indent=2))
    return report
