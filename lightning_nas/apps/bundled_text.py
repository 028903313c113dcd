"""A bundled text-classification corpus as a datamodule built from plain arguments (for config files).

:class:`~lightning_nas.apps.TextDataModule` takes a tokenizer object and example lists;
:class:`BundledTextDataModule` builds both from a model directory and a dataset name, so a
LightningCLI config (``recipes/compress_minilm.yaml``) can name it.
"""

from __future__ import annotations

from pathlib import Path

from lightning_nas.apps.text_classification import TextDataModule

__all__ = ["BundledTextDataModule"]


class BundledTextDataModule(TextDataModule):
    """A vendored dataset (:func:`~lightning_nas.datasets.bundled_text_classification`) tokenised for ``model_dir``.

    Args:
        model_dir: Directory of the pretrained model whose tokenizer is used (no download).
        dataset: Name of a vendored dataset (:func:`~lightning_nas.datasets.available_text_datasets`).
        max_train: Keep at most this many training + validation examples (``None``: all).
        max_test: Keep at most this many test examples.
        max_length: Tokens per example.
        batch_size: Training batch size.
        seed: Seed of the shuffling.

    Attributes:
        label_names: Name of each label id.

    Example:
        >>> from lightning_nas.datasets import minilm_model_dir
        >>> data = BundledTextDataModule(minilm_model_dir(), max_train=40, max_test=8, batch_size=4)
        >>> data.label_names, len(data.splits["test"].texts)
        (('rotten', 'fresh'), 8)
    """

    def __init__(
        self,
        model_dir: str | Path,
        dataset: str = "rotten_tomatoes",
        max_train: int | None = None,
        max_test: int | None = None,
        max_length: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        from transformers import AutoTokenizer

        from lightning_nas.datasets import bundled_text_classification

        if not (Path(model_dir) / "config.json").is_file():
            raise ValueError(f"model_dir {str(model_dir)!r} is not a model directory (no config.json)")
        splits = bundled_text_classification(dataset, max_train=max_train, max_test=max_test)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        super().__init__(tokenizer, splits.train, splits.validation, splits.test, max_length, batch_size, seed)
        self.label_names = splits.label_names
