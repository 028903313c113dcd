"""The user's own data: tables read through Hugging Face ``datasets``, checked before any model is loaded.

``datasets`` reads every format (no parser here); this module picks the builder from the file's
extension, turns its errors into one line naming the file, and validates text-classification
columns and labels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

if TYPE_CHECKING:
    import datasets

__all__ = [
    "DataSource",
    "TABLE_FORMATS",
    "TextClassificationSplits",
    "TextExamples",
    "read_table",
    "read_text_classification",
]

#: File extensions and the ``datasets`` builder (and its options) that reads them.
TABLE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}

#: A file or ``save_to_disk`` directory, or a ``datasets.Dataset`` already in memory.
DataSource = Union[str, os.PathLike, "datasets.Dataset"]

_TEXT_COLUMNS = ("text", "sentence", "sentence1", "premise", "question1", "question", "review", "content", "document")
_PAIR_COLUMNS = {
    "text": "text_pair",
    "sentence1": "sentence2",
    "premise": "hypothesis",
    "question1": "question2",
    "question": "sentence",
}
_LABEL_COLUMNS = ("label", "labels", "label_id", "class", "target")


class TextExamples(NamedTuple):
    """Texts (optionally text pairs) with integer labels; unpacks like ``(texts, labels)`` plus ``pairs``."""

    texts: Sequence[str]
    labels: Sequence[int]
    pairs: Sequence[str] | None = None


@dataclass(frozen=True)
class TextClassificationSplits:
    """Train / validation / test examples with their label names, ready for tokenisation.

    Attributes:
        train, validation, test: The examples; labels index ``label_names``.
        label_names: Name of each label id (the ``id2label`` of the exported config).
        notes: What was inferred or carved, one sentence each, for the job's output.
    """

    train: TextExamples
    validation: TextExamples
    test: TextExamples
    label_names: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _name(source: Any, role: str) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"the {role} dataset"


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No "Generating train split" bars or log lines while a file is read (restored afterwards)."""
    import datasets

    bars_were_on = not datasets.utils.logging.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its read errors become our one-line error
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if not bars_were_on:
            datasets.enable_progress_bars()


def _root_message(err: BaseException) -> str:
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def read_table(path: str | os.PathLike[str]) -> datasets.Dataset | datasets.DatasetDict:
    """Read a CSV / TSV / JSON / JSONL / Parquet / text file or a ``save_to_disk`` directory.

    Plain text gives one row per line in a ``text`` column. Errors are one line that names the file.

    Raises:
        FileNotFoundError: No such file or directory.
        ValueError: Unknown format, empty, unreadable, or not parseable as its format.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "reviews.csv").write_text("review,sentiment\\nfine,pos\\ndull,neg\\n")
        >>> table = read_table(folder / "reviews.csv")
        >>> table.column_names, table.num_rows
        (['review', 'sentiment'], 2)
        >>> read_table(folder / "reviews.xlsx")
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...reviews.xlsx: no such file or directory
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: cannot be read (permission denied)")
    if path.is_dir():
        if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            raise ValueError(
                f"{path}: a directory, but not one written by datasets' save_to_disk "
                "(no dataset_info.json or dataset_dict.json)"
            )
        try:
            with _quiet_datasets():
                return datasets.load_from_disk(str(path))
        except Exception as err:  # noqa: BLE001 - any failure of the reader is a bad file
            raise ValueError(f"{path}: cannot read the saved dataset ({_root_message(err)})") from err
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        known = ", ".join(TABLE_FORMATS)
        raise ValueError(f"{path}: unknown format {suffix or '(no extension)'!r}; use {known} or a save_to_disk folder")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    builder, options = TABLE_FORMATS[suffix]
    try:
        with _quiet_datasets():
            table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as err:  # noqa: BLE001 - any failure of the reader is a bad file
        reason = _root_message(err)
        if "corresponds to no data" in reason:  # how datasets reports a file of headers only
            raise ValueError(f"{path}: no rows") from err
        raise ValueError(f"{path}: cannot read it as {suffix[1:].upper()} ({reason})") from err
    return table


def _as_dataset(source: DataSource, role: str) -> datasets.Dataset | datasets.DatasetDict:
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_table(source)
    raise TypeError(f"{role}: expected a file path or a datasets.Dataset, got {type(source).__name__}")


def _pick(columns: Sequence[str], given: str | None, candidates: Sequence[str], option: str, name: str) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(f"{name}: no column {given!r} ({option}); columns: {', '.join(columns)}")
        return given
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"{name}: found none of the columns {', '.join(candidates)}; columns: {', '.join(columns)}; "
        f"name the one to use with {option}"
    )


def _texts(table: datasets.Dataset, column: str, name: str) -> list[str]:
    values = table[column]
    for row, value in enumerate(values):
        if not isinstance(value, str):
            what = "empty" if value is None else f"a {type(value).__name__}, not text"
            raise ValueError(f"{name}: column {column!r} is {what} in row {row}")
    return list(values)


def _label_values(table: datasets.Dataset, column: str, name: str) -> tuple[list[Any], tuple[str, ...] | None]:
    """The labels of a table and, for a ``ClassLabel`` column, its class names."""
    import datasets

    feature = table.features[column]
    values = list(table[column])
    if isinstance(feature, datasets.ClassLabel):
        return [feature.names[v] for v in values], tuple(feature.names)
    for row, value in enumerate(values):
        if isinstance(value, float) and value == value and value.is_integer():
            values[row] = int(value)  # integer labels of a column with gaps read as floats
        elif value is None or isinstance(value, float):
            what = "empty" if value is None or value != value else f"{value!r}, not a class"
            raise ValueError(f"{name}: column {column!r} is {what} in row {row} (labels are classes)")
        elif not isinstance(value, (str, int)):
            raise ValueError(f"{name}: column {column!r} holds {type(value).__name__} values, not classes")
    return values, None


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) else (1, str(value))


def read_text_classification(
    train: DataSource,
    validation: DataSource | None = None,
    test: DataSource | None = None,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> TextClassificationSplits:
    """Read and check the user's text-classification data (files, ``save_to_disk`` folders or Datasets).

    Columns default to the first present of ``text``, ``sentence``, ``sentence1``, ``premise``, ...
    for the text; a pair column follows from it (``sentence1`` -> ``sentence2``, ``premise`` ->
    ``hypothesis``, ...); labels from ``label``, ``labels``, ``label_id``, ``class``, ``target``.
    Labels may be strings, integers or a ``ClassLabel``; they are numbered in sorted order (or
    the ``ClassLabel``'s). A missing validation or test split is carved out of train with
    ``seed`` (stratified by label where every class has enough examples), and :attr:`notes` says so.

    Args:
        train: The training data. A ``save_to_disk`` ``DatasetDict`` also provides missing
            ``validation`` / ``test`` splits from its own.
        validation, test: Optional further splits with the same columns.
        text_column, text_pair_column, label_column: Column names (default: detected).
        max_train: Use at most the first ``max_train`` training rows (before carving).
        max_test: Use at most the first ``max_test`` test rows.
        validation_fraction, test_fraction: Shares of train carved out when a split is missing.
        seed: Seed of the carving.

    Raises:
        ValueError: One line naming the file, column or option: missing column, empty data, a
            single class, labels in validation/test that train lacks, texts that are not text.

    Example:
        >>> import datasets
        >>> table = datasets.Dataset.from_dict({"sentence": ["good", "bad"] * 10, "label": ["pos", "neg"] * 10})
        >>> splits = read_text_classification(table)
        >>> splits.label_names, len(splits.train.texts), len(splits.validation.texts), len(splits.test.texts)
        (('neg', 'pos'), 16, 2, 2)
        >>> read_text_classification(table, label_column="stars")
        Traceback (most recent call last):
        ...
        ValueError: the train dataset: no column 'stars' (--label-column); columns: sentence, label
    """
    import datasets

    for option, limit in (("max_train", max_train), ("max_test", max_test)):
        if limit is not None and limit < 1:
            raise ValueError(f"{option} must be >= 1 (or None for all rows), got {limit}")
    for option, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 < fraction < 0.5:
            raise ValueError(f"{option} must be in (0, 0.5), got {fraction}")
    train_name = _name(train, "train")
    tables: dict[str, Any] = {"train": _as_dataset(train, "train")}
    names = {"train": train_name}
    if isinstance(tables["train"], datasets.DatasetDict):
        saved = tables["train"]
        if "train" not in saved:
            raise ValueError(f"{train_name}: a DatasetDict without a 'train' split; splits: {', '.join(saved)}")
        tables = {key: saved[key] for key in ("train", "validation", "test") if key in saved}
        names = {key: f"{train_name} [{key}]" for key in tables}
    for role, source in (("validation", validation), ("test", test)):
        if source is not None:
            tables[role] = _as_dataset(source, role)
            names[role] = _name(source, role)
            if isinstance(tables[role], datasets.DatasetDict):
                raise ValueError(f"{names[role]}: a DatasetDict of splits; pass one split (a folder inside it)")

    columns = tables["train"].column_names
    text = _pick(columns, text_column, _TEXT_COLUMNS, "--text-column", train_name)
    label = _pick(columns, label_column, _LABEL_COLUMNS, "--label-column", train_name)
    pair = text_pair_column
    if pair is not None:
        pair = _pick(columns, pair, (), "--text-pair-column", train_name)
    elif _PAIR_COLUMNS.get(text) in columns:
        pair = _PAIR_COLUMNS[text]
    if label in (text, pair):
        raise ValueError(f"{train_name}: column {label!r} cannot be both text and label")
    notes = [f"columns: text {text!r}" + (f", text pair {pair!r}" if pair else "") + f", label {label!r}"]

    raw: dict[str, tuple[list[str], list[str] | None, list[Any]]] = {}
    class_names: tuple[str, ...] | None = None
    for role, table in tables.items():
        name = names[role]
        for column, option in ((text, "--text-column"), (pair, "--text-pair-column"), (label, "--label-column")):
            if column is not None and column not in table.column_names:
                raise ValueError(f"{name}: no column {column!r} ({option}); columns: {', '.join(table.column_names)}")
        limit = max_train if role == "train" else max_test if role == "test" else None
        if limit is not None and table.num_rows > limit:
            table = table.select(range(limit))
        if table.num_rows == 0:
            raise ValueError(f"{name}: no rows")
        labels, names_of_classes = _label_values(table, label, name)
        if role == "train":
            class_names = names_of_classes
        raw[role] = (_texts(table, text, name), _texts(table, pair, name) if pair else None, labels)

    train_labels = raw["train"][2]
    present = sorted(set(train_labels), key=_sort_key)
    label_names = class_names or tuple(str(v) for v in present)
    if len(set(train_labels)) < 2:
        raise ValueError(
            f"{names['train']}: column {label!r} has one class only ({present[0]!r}); classification needs two or more"
        )
    ids = {value: i for i, value in enumerate(class_names or present)}
    for role, (_, _, labels) in raw.items():
        unseen = sorted({v for v in labels if v not in ids}, key=_sort_key)
        if unseen:
            shown = ", ".join(map(repr, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
            raise ValueError(
                f"{names[role]}: column {label!r} has labels the training data lacks: {shown} "
                f"(train has {', '.join(map(repr, present[:10]))})"
            )
    if class_names is None:
        notes.append(f"labels: {', '.join(f'{n} -> {i}' for i, n in enumerate(label_names))}")
    examples = {
        role: TextExamples(texts, [ids[v] for v in labels], pairs) for role, (texts, pairs, labels) in raw.items()
    }
    for role, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if role not in examples:
            examples["train"], examples[role] = _carve(examples["train"], fraction, seed)
            notes.append(
                f"{role}: {len(examples[role].texts)} rows carved out of {names['train']} "
                f"({fraction:.0%}, seed {seed}); pass --{role} FILE to use your own"
            )
    if max_test is not None and len(examples["test"].texts) > max_test:
        examples["test"] = TextExamples(*(None if v is None else v[:max_test] for v in examples["test"]))
    if len(examples["train"].texts) < 2 or len(set(examples["train"].labels)) < 2:
        raise ValueError(f"{names['train']}: too few rows to train on after carving validation/test")
    return TextClassificationSplits(
        examples["train"], examples["validation"], examples["test"], tuple(label_names), tuple(notes)
    )


def _carve(examples: TextExamples, fraction: float, seed: int) -> tuple[TextExamples, TextExamples]:
    """Split off ``fraction`` of the examples, stratified by label when every class allows it."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(examples.texts)))
    counts = {label: examples.labels.count(label) for label in set(examples.labels)}
    held = max(1, round(fraction * len(indices)))
    stratify = examples.labels if min(counts.values()) >= 2 and held >= len(counts) else None
    kept, carved = train_test_split(indices, test_size=held, random_state=seed, stratify=stratify)

    def subset(rows: list[int]) -> TextExamples:
        pick = sorted(rows)
        pairs = None if examples.pairs is None else [examples.pairs[i] for i in pick]
        return TextExamples([examples.texts[i] for i in pick], [examples.labels[i] for i in pick], pairs)

    return subset(kept), subset(carved)
