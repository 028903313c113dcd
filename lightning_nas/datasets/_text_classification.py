"""Loader for the small, vendored text-classification corpora.

The data files live next to this module (package data) and are read with the
standard library only, so loading works offline and without pandas.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

from ._files import TextClassificationSplits, TextExamples

__all__ = [
    "TextClassificationData",
    "available_text_datasets",
    "bundled_text_classification",
    "load_text_classification",
    "train_validation_split",
]


@dataclass(frozen=True)
class _Spec:
    filename: str
    label_names: tuple[str, ...]
    sha256: str  # of the *decompressed* CSV (independent of the zlib version)


_DATASETS: dict[str, _Spec] = {
    "rotten_tomatoes": _Spec(
        filename="rotten_tomatoes.csv.gz",
        label_names=("rotten", "fresh"),
        sha256="49bafbc95a068e51c2a9634ba240f895ff572e3dca3c1b08921b5fbc59602fa4",
    ),
}


class TextClassificationData(NamedTuple):
    """A fixed train/test split; unpacks like a 5-tuple.

    Attributes:
        train_texts: Training documents, in the file's fixed (hash-shuffled) order.
        train_labels: Integer labels, ``0 <= y < len(label_names)``.
        test_texts: Held-out documents (disjoint movies for ``rotten_tomatoes``).
        test_labels: Integer labels of ``test_texts``.
        label_names: Human-readable name of each label index.
    """

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    label_names: tuple[str, ...]


def available_text_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_text_classification`.

    Example:
        >>> available_text_datasets()
        ('rotten_tomatoes',)
    """
    return tuple(sorted(_DATASETS))


def _read_rows(spec: _Spec, verify: bool) -> list[dict[str, str]]:
    blob = resources.files(__package__).joinpath(spec.filename).read_bytes()
    raw = gzip.decompress(blob)
    if verify:
        got = hashlib.sha256(raw).hexdigest()
        if got != spec.sha256:
            raise ValueError(
                f"{spec.filename} is corrupted or was edited: sha256 {got} != {spec.sha256}; "
                "regenerate it as described in lightning_nas/datasets/PROVENANCE.md"
            )
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))


def load_text_classification(
    name: str = "rotten_tomatoes",
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    verify: bool = True,
) -> TextClassificationData:
    """Load a vendored text-classification dataset with its fixed split.

    ``rotten_tomatoes``: 12,752 English critic snippets from Rotten Tomatoes
    (Pang & Lee, 2004), label 1 = ``fresh`` / 0 = ``rotten`` as given by the
    critic. 9,843 train / 2,909 test; the split is by movie (no movie is in
    both), fixed in the file, and identical on every machine.

    Args:
        name: Dataset name, see :func:`available_text_datasets`.
        max_train: Keep only the first ``max_train`` training examples (a
            deterministic, roughly class-balanced random subset, since the file
            order is a fixed hash shuffle). ``None`` keeps all.
        max_test: Same for the test split.
        verify: Check the SHA-256 of the decompressed file first.

    Returns:
        ``TextClassificationData(train_texts, train_labels, test_texts,
        test_labels, label_names)``.

    Raises:
        KeyError: Unknown ``name``.
        ValueError: Negative limit, or the vendored file fails verification.

    Example:
        >>> x_tr, y_tr, x_te, y_te, names = load_text_classification("rotten_tomatoes")
        >>> len(x_tr), len(x_te), names
        (9843, 2909, ('rotten', 'fresh'))
        >>> small = load_text_classification(max_train=100, max_test=50)
        >>> len(small.train_texts), len(small.test_labels)
        (100, 50)
    """
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {available_text_datasets()}")
    for label, limit in (("max_train", max_train), ("max_test", max_test)):
        if limit is not None and limit < 0:
            raise ValueError(f"{label} must be >= 0, got {limit}")
    spec = _DATASETS[name]
    rows = _read_rows(spec, verify)
    train = [r for r in rows if r["split"] == "train"][:max_train]
    test = [r for r in rows if r["split"] == "test"][:max_test]
    return TextClassificationData(
        train_texts=[r["text"] for r in train],
        train_labels=[int(r["label"]) for r in train],
        test_texts=[r["text"] for r in test],
        test_labels=[int(r["label"]) for r in test],
        label_names=spec.label_names,
    )


def train_validation_split(
    texts: list[str],
    labels: list[int],
    validation_fraction: float = 0.1,
) -> tuple[list[str], list[int], list[str], list[int]]:
    """Deterministically carve a validation set out of a training split.

    An example goes to validation when the SHA-256 of its text falls in the
    lowest ``validation_fraction`` of the hash range, so the assignment of a
    given text never changes (no RNG, no dependence on list order). Use it for
    model selection / NAS search so the test split stays untouched.

    Args:
        texts: Training texts.
        labels: Their labels, same length.
        validation_fraction: Expected fraction sent to validation, in ``(0, 1)``.

    Returns:
        ``(fit_texts, fit_labels, val_texts, val_labels)``, order preserved.

    Raises:
        ValueError: Length mismatch or fraction outside ``(0, 1)``.

    Example:
        >>> data = load_text_classification()
        >>> fx, fy, vx, vy = train_validation_split(data.train_texts, data.train_labels, 0.1)
        >>> len(fx) + len(vx) == len(data.train_texts)
        True
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    cut = int(validation_fraction * 2**64)
    fit_x: list[str] = []
    fit_y: list[int] = []
    val_x: list[str] = []
    val_y: list[int] = []
    for text, label in zip(texts, labels):
        h = int.from_bytes(hashlib.sha256(b"val/v1:" + text.encode("utf-8")).digest()[:8], "big")
        if h < cut:
            val_x.append(text)
            val_y.append(label)
        else:
            fit_x.append(text)
            fit_y.append(label)
    return fit_x, fit_y, val_x, val_y


def bundled_text_classification(
    name: str = "rotten_tomatoes", *, max_train: int | None = None, max_test: int | None = None
) -> TextClassificationSplits:
    """A vendored dataset as train / validation / test splits (validation: :func:`train_validation_split`).

    Example:
        >>> splits = bundled_text_classification(max_train=1000, max_test=10)
        >>> splits.label_names, len(splits.train.texts) + len(splits.validation.texts), len(splits.test.texts)
        (('rotten', 'fresh'), 1000, 10)
    """
    for option, limit in (("max_train", max_train), ("max_test", max_test)):
        if limit is not None and limit < 1:
            raise ValueError(f"{option} must be >= 1 (or None for all rows), got {limit}")
    data = load_text_classification(name, max_train=max_train, max_test=max_test)
    fit_x, fit_y, val_x, val_y = train_validation_split(data.train_texts, data.train_labels)
    notes = (
        f"data: the bundled {name} reviews ({len(data.train_texts)} train, {len(data.test_texts)} test rows)",
        f"validation: {len(val_x)} rows of its training split (a fixed hash split)",
    )
    return TextClassificationSplits(
        TextExamples(fit_x, fit_y),
        TextExamples(val_x, val_y),
        TextExamples(data.test_texts, data.test_labels),
        data.label_names,
        notes,
    )
