"""Ordinary Lightning code the jobs build on: no NAS inside, the callbacks add it.

- :mod:`~lightning_nas.apps.text_classification`: a Hugging Face sequence classifier
  (:class:`TextClassifier`), its data (:class:`TextDataModule`) and test accuracy.
- :mod:`~lightning_nas.apps.bundled_text`: a vendored corpus as a datamodule built from plain
  arguments (:class:`BundledTextDataModule`), for config files.
- :mod:`~lightning_nas.apps.digits`: a small CNN on scikit-learn's digits (the ``demo`` job).
- :mod:`~lightning_nas.apps.image_classification`: a timm backbone (:class:`ImageClassifier`) on the
  digits upsampled (:class:`DigitsImageDataModule`), the ``recipes/timm_digits.yaml`` job.
"""

from __future__ import annotations

from lightning_nas.apps.bundled_text import BundledTextDataModule
from lightning_nas.apps.digits import DigitsClassifier, DigitsCNN, DigitsDataModule
from lightning_nas.apps.image_classification import DigitsImageDataModule, ImageClassifier
from lightning_nas.apps.text_classification import ResumableLoader, TextClassifier, TextDataModule, evaluate_accuracy

__all__ = [
    "BundledTextDataModule",
    "DigitsCNN",
    "DigitsClassifier",
    "DigitsDataModule",
    "DigitsImageDataModule",
    "ImageClassifier",
    "ResumableLoader",
    "TextClassifier",
    "TextDataModule",
    "evaluate_accuracy",
]
