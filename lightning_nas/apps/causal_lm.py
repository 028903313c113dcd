"""Causal language modelling with Lightning: fine-tune an ``AutoModelForCausalLM`` on the user's texts.

Ordinary Lightning code, no NAS inside: :class:`CausalLM` logs ``val_loss`` (mean token
cross-entropy, so perplexity is ``exp(val_loss)``), :class:`CausalLMDataModule` tokenises texts
and packs them into blocks of ``block_size`` tokens, :func:`evaluate_perplexity` scores a model on
a loader of blocks, and :func:`tokens_per_second` times greedy generation at batch 1. Adding
``SupernetCallback`` and ``OneShotSearch(metric="val_loss", direction="minimize")`` to the
Trainer turns the fine-tuning into a supernet training and search.

Example:
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    >>> texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 4
    >>> vocab = {w: i for i, w in enumerate(["<eos>", *sorted({w for t in texts for w in t.split()})])}
    >>> backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    >>> data = CausalLMDataModule(tokenizer, texts, block_size=4, batch_size=2)
    >>> data.setup()
    >>> [len(data.blocks[split]) for split in ("train", "validation", "test")]
    [16, 1, 1]
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
    ...                                      num_attention_heads=2, intermediate_size=32))
    >>> perplexity = evaluate_perplexity(model, data.val_dataloader())
    >>> 1 < perplexity < 3 * len(vocab)  # an untrained model: about the vocabulary size
    True
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_nas.metrics import measure_latency

__all__ = ["CausalLM", "CausalLMDataModule", "evaluate_perplexity", "pack_blocks", "tokens_per_second"]


class CausalLM(L.LightningModule):
    """Fine-tunes a causal language model on blocks of token ids.

    Logs ``train_loss``, ``val_loss`` and ``test_loss``: mean cross-entropy per predicted token
    (each block's first token is predicted by nothing), so ``exp(val_loss)`` is the validation
    perplexity. ``forward`` returns the logits, which is what in-place distillation compares.

    Args:
        model: A Hugging Face model directory, or a built causal LM.
        lr: Peak learning rate of AdamW (linear warm-up over ``warmup`` of the steps, then linear decay).
        weight_decay: AdamW weight decay.
        warmup: Fraction of the steps spent warming up.
        block_size: Length of the example input (for tracing and the supernet's checks).
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        block_size: int = 128,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        if isinstance(model, nn.Module):
            self.model = model
        else:
            from transformers import AutoModelForCausalLM

            # from_pretrained returns eval mode, which Lightning would keep (no dropout).
            self.model = AutoModelForCausalLM.from_pretrained(model).train()
        ids = torch.ones(1, block_size, dtype=torch.long)
        self.example_input_array = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"]
        ).loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Blocks have equal length, so weighting by the batch size weights by tokens.
        self.log("val_loss", self._loss(batch), prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch), batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self) -> Any:
        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup * steps), steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def pack_blocks(token_ids: Sequence[Sequence[int]], block_size: int, separator: int | None) -> Tensor:
    """Concatenate tokenised texts (each followed by ``separator``) and cut them into full blocks.

    The tail shorter than a block is dropped, so every block is a full training example.

    Example:
        >>> pack_blocks([[1, 2, 3], [4, 5]], block_size=3, separator=0)
        tensor([[1, 2, 3],
                [0, 4, 5]])
    """
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2 (one token predicts the next), got {block_size}")
    stream: list[int] = []
    for ids in token_ids:
        stream.extend(ids)
        if separator is not None:
            stream.append(separator)
    count = len(stream) // block_size
    return torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)


class CausalLMDataModule(L.LightningDataModule):
    """The user's texts, tokenised and packed into blocks of ``block_size`` tokens.

    Texts of a missing validation or test split are carved from the training texts (a seeded
    shuffle, ``split_fraction`` of them each), before packing, so no block mixes two splits.

    Args:
        tokenizer: A Hugging Face tokenizer; its ``eos_token_id`` separates texts.
        train: Training texts.
        validation, test: Texts of those splits (default: carved from ``train``).
        block_size: Tokens per block.
        batch_size: Blocks per batch.
        split_fraction: Share of the training texts carved for each missing split.
        seed: Seed of the carving and of the training order.
    """

    def __init__(
        self,
        tokenizer: Any,
        train: Sequence[str],
        validation: Sequence[str] | None = None,
        test: Sequence[str] | None = None,
        block_size: int = 128,
        batch_size: int = 8,
        split_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not train:
            raise ValueError("CausalLMDataModule needs training texts; got none")
        if not 0 < split_fraction < 0.5:
            raise ValueError(f"split_fraction must be in (0, 0.5), got {split_fraction}")
        self.tokenizer = tokenizer
        self.texts = {"train": list(train), "validation": validation, "test": test}
        self.block_size = block_size
        self.batch_size = batch_size
        self.split_fraction = split_fraction
        self.seed = seed
        #: Which splits were carved from the training texts.
        self.carved: list[str] = []
        self.blocks: dict[str, Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.blocks:
            return
        texts = dict(self.texts)
        missing = [split for split in ("validation", "test") if texts[split] is None]
        if missing:
            train = list(texts["train"])
            random.Random(self.seed).shuffle(train)
            size = max(1, round(self.split_fraction * len(train)))
            if len(train) <= size * len(missing):
                raise ValueError(f"{len(train)} training texts are too few to carve {missing} from them")
            for split in missing:
                texts[split], train = train[:size], train[size:]
            texts["train"] = train
            self.carved = missing
        for split, split_texts in texts.items():
            ids = self.tokenizer(list(split_texts), add_special_tokens=False)["input_ids"]
            blocks = pack_blocks(ids, self.block_size, self.tokenizer.eos_token_id)
            if len(blocks) == 0:
                raise ValueError(f"the {split} texts hold fewer than block_size={self.block_size} tokens")
            self.blocks[split] = blocks

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.blocks[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            collate_fn=_as_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _as_batch(blocks: list[Tensor]) -> dict[str, Tensor]:
    ids = torch.stack(blocks)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def evaluate_perplexity(model: nn.Module, loader: DataLoader) -> float:
    """Perplexity of a causal LM on a loader of packed blocks: ``exp`` of the mean loss per predicted token.

    Batches are the dicts of :class:`CausalLMDataModule` (``input_ids``, ``labels``, optional
    ``attention_mask``); runs in eval mode without gradients on the model's device.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in loader:
                labels = batch["labels"].to(device)
                mask = batch.get("attention_mask")
                out = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=None if mask is None else mask.to(device),
                    labels=labels,
                )
                predicted = int((labels[:, 1:] != -100).sum())
                total += float(out.loss) * predicted
                count += predicted
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the loader holds no tokens to predict")
    return math.exp(total / count)


class _Greedy(nn.Module):
    """``forward(input_ids)`` is greedy generation of exactly ``new_tokens`` tokens (for timing)."""

    def __init__(self, model: nn.Module, new_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.new_tokens = new_tokens

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
            do_sample=False,
            pad_token_id=self.model.config.eos_token_id or 0,
        )


def tokens_per_second(model: nn.Module, prompt_length: int = 16, new_tokens: int = 32, repeats: int = 3) -> float:
    """Greedy generation speed at batch 1: new tokens per second (median of ``repeats`` timed runs).

    The prompt is ``prompt_length`` copies of token id 1; generation runs with the KV cache on the
    model's device, timed by :func:`~lightning_nas.metrics.measure_latency`.
    """
    device = next(model.parameters()).device
    prompt = torch.ones(1, prompt_length, dtype=torch.long, device=device)
    seconds = measure_latency(_Greedy(model, new_tokens), prompt, warmup=1, repeats=repeats)
    return new_tokens / seconds
