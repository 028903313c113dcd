"""Text classification with a Hugging Face sequence classifier: ordinary Lightning code, no NAS inside.

:func:`lightning_nas.compress.compress` adds the supernet, search and export to these with two
callbacks; used on their own they fine-tune a model the plain way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_nas.datasets import TextExamples

__all__ = ["ResumableLoader", "TextClassifier", "TextDataModule", "evaluate_accuracy", "load_with_new_head"]

log = logging.getLogger(__name__)


class _HeldLoadReport(logging.Filter):
    """Holds back transformers' load report (a table of missing / mismatched keys) for a second look."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


def load_with_new_head(auto_class: Any, model_dir: str | Path, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(model_dir, **kwargs)``, saying in one line that a new task head was initialised.

    transformers reports a head missing from the checkpoint (or of another size) as a multi-line
    MISSING / MISMATCH table; here that is expected, so when only the head's keys are concerned the
    table becomes one line on this module's logger. Any other load problem is reported as
    transformers reports it.
    """
    hold = _HeldLoadReport()
    source = logging.getLogger("transformers.modeling_utils")
    source.addFilter(hold)
    try:
        model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    finally:
        source.removeFilter(hold)
    prefix = f"{model.base_model_prefix}."
    renewed = sorted({*info["missing_keys"], *(k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"])})
    only_head = not info["unexpected_keys"] and all(not key.startswith(prefix) for key in renewed)
    if hold.held and only_head:
        log.warning("%s: new task head initialised (%s); fine-tuning trains it", model_dir, ", ".join(renewed))
    else:
        for record in hold.held:
            source.handle(record)
    return model


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that Lightning resumes mid-epoch: same shuffled order, minus the batches already seen.

    Lightning saves :meth:`state_dict` in its checkpoints (any loader with ``state_dict`` /
    ``load_state_dict``): the shuffle generator's state at the start of the epoch and the
    number of batches yielded since. Without it a resumed epoch would start its order again,
    training some batches twice and others never.

    Example:
        >>> loader = ResumableLoader(list(range(6)), batch_size=2, shuffle=True,
        ...                          generator=torch.Generator().manual_seed(0))
        >>> order = iter(loader)
        >>> first = next(order)
        >>> again = ResumableLoader(list(range(6)), batch_size=2, shuffle=True, generator=torch.Generator())
        >>> again.load_state_dict(loader.state_dict())
        >>> [b.tolist() for b in again] == [b.tolist() for b in order]
        True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_start: Tensor | None = None
        self._yielded = 0
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Any:
        skip = 0
        if self._resume is not None:
            if self.generator is not None and self._resume["generator"] is not None:
                self.generator.set_state(self._resume["generator"])
            skip, self._resume = self._resume["yielded"], None
        self._epoch_start = self.generator.get_state() if self.generator is not None else None
        self._yielded = skip
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        for batch in batches:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        if self._yielded >= len(self):  # the epoch is over: the next one starts from the current state
            current = self.generator.get_state() if self.generator is not None else None
            return {"generator": current, "yielded": 0}
        return {"generator": self._epoch_start, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)


class TextClassifier(L.LightningModule):
    """Fine-tunes ``AutoModelForSequenceClassification`` with cross-entropy; logs ``val_acc``.

    Args:
        model_dir: A Hugging Face model directory (or an already built model).
        num_labels: Number of classes.
        lr: Peak learning rate of AdamW (linear warm-up for 10% of the steps, then linear decay);
            1e-4 suits MiniLM-sized models on a few thousand examples (5e-5 underfits).
        weight_decay: AdamW weight decay.
        max_length: Sequence length of the example input used to trace the model.
        label_names: Name of each class, saved in the model's config as ``id2label`` /
            ``label2id`` (so every export carries them).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                     intermediate_size=32, num_labels=3)
        >>> module = TextClassifier(BertForSequenceClassification(config), num_labels=3)
        >>> module(**module.example_input_array).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        model_dir: str | Path | nn.Module,
        num_labels: int,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        max_length: int = 64,
        label_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        self.save_hyperparameters(ignore=["model_dir"])
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label names for {num_labels} labels")
        if isinstance(model_dir, nn.Module):
            self.model = model_dir
        else:
            names = {}
            if label_names is not None:
                names = {
                    "id2label": dict(enumerate(map(str, label_names))),
                    "label2id": {str(n): i for i, n in enumerate(label_names)},
                }
            # A new task gets a new head: a head of another size in the checkpoint is replaced, not an error.
            model = load_with_new_head(
                AutoModelForSequenceClassification,
                model_dir,
                num_labels=num_labels,
                ignore_mismatched_sizes=True,
                **names,
            )
            # from_pretrained returns the model in eval mode and Lightning keeps each module's mode,
            # so without train() the fine-tuning would silently run without dropout.
            self.model = model.train()
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_labels)
        ids = torch.ones(2, max_length, dtype=torch.long)
        self.example_input_array = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _logits(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self._logits(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_acc(self._logits(batch), batch["labels"])
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> Any:
        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class TextDataModule(L.LightningDataModule):
    """Tokenised train / validation / test texts (or text pairs) with dynamic padding.

    Args:
        tokenizer: A Hugging Face tokenizer.
        train, val, test: :class:`~lightning_nas.datasets.TextExamples`, or ``(texts, labels)``
            pairs; examples with ``pairs`` are tokenised as text pairs (``[CLS] a [SEP] b [SEP]``).
        max_length: Truncation length.
        batch_size: Training batch size (evaluation uses twice as much).
        seed: Seed of the training order.

    Example:
        >>> from lightning_nas.datasets import minilm_model_dir
        >>> from transformers import AutoTokenizer
        >>> tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
        >>> split = TextExamples(["a good film", "a bad one"], [1, 0], pairs=["yes", "no"])
        >>> data = TextDataModule(tokenizer, split, split, split, batch_size=2)
        >>> batch = next(iter(data.train_dataloader()))
        >>> sorted(batch), int(batch["token_type_ids"].max())
        (['attention_mask', 'input_ids', 'labels', 'token_type_ids'], 1)
    """

    def __init__(
        self,
        tokenizer: Any,
        train: TextExamples | tuple[Sequence[str], Sequence[int]],
        val: TextExamples | tuple[Sequence[str], Sequence[int]],
        test: TextExamples | tuple[Sequence[str], Sequence[int]],
        max_length: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.splits = {"train": TextExamples(*train), "val": TextExamples(*val), "test": TextExamples(*test)}
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._train_state: dict[str, Any] | None = None

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The tokenised examples of ``split`` (``"train"``, ``"val"``, ``"test"``), tokenised once."""
        if split not in self._rows:
            examples = self.splits[split]
            pairs = list(examples.pairs) if examples.pairs is not None else None
            encoded = self.tokenizer(list(examples.texts), pairs, truncation=True, max_length=self.max_length)
            self._rows[split] = [
                {**{key: values[i] for key, values in encoded.items()}, "labels": int(label)}
                for i, label in enumerate(examples.labels)
            ]
        return self._rows[split]

    def _loader(self, split: str, shuffle: bool) -> ResumableLoader:
        from transformers import DataCollatorWithPadding

        return ResumableLoader(
            self.rows(split),
            batch_size=self.batch_size if shuffle else 2 * self.batch_size,
            shuffle=shuffle,
            collate_fn=DataCollatorWithPadding(self.tokenizer),
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        if self._train_state is not None:
            loader.load_state_dict(self._train_state)
            self._train_state = None
        return loader

    # Lightning restores a datamodule before it builds the loaders, but a loader's own state only
    # when the loaders are built after the restore (not so when configure_optimizers reads
    # trainer.estimated_stepping_batches): so the training order travels with the datamodule.
    def state_dict(self) -> dict[str, Any]:
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        return {"train_loader": loader.state_dict()} if isinstance(loader, ResumableLoader) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def evaluate_accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Accuracy of a Hugging Face sequence classifier on a loader of tokenised, labelled batches.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                     intermediate_size=32, num_labels=2)
        >>> batch = {"input_ids": torch.ones(4, 5, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])}
        >>> evaluate_accuracy(BertForSequenceClassification(config), [batch])
        0.5
    """
    correct = total = 0
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    return correct / total
