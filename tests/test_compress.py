"""The compress job on a tiny random BERT (fast) and on the real pretrained MiniLM (slow)."""

from __future__ import annotations

import optuna
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_nas.cli import main  # noqa: E402
from lightning_nas.compress import compress  # noqa: E402
from lightning_nas.datasets import minilm_model_dir  # noqa: E402
from lightning_nas.samplers import is_rejection  # noqa: E402


@pytest.fixture
def tiny_bert_dir(tmp_path):
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    path = tmp_path / "tiny-bert"
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm_model_dir()).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "space",
    [{}, {"per_layer": True, "elastic_hidden": True, "elastic_depth": True}],
    ids=["global-heads-ffn", "per-layer-hidden-depth"],
)
def test_compress_exports_a_model_that_transformers_reloads(tiny_bert_dir, tmp_path, space) -> None:
    out = tmp_path / "out"
    report = compress(
        tiny_bert_dir,
        out,
        max_train=300,
        max_test=64,
        epochs=1,
        n_trials=6,
        max_length=32,
        limit_train_batches=3,
        importance_batches=2,
        max_encoder_params=0.6,
        **space,
    )
    original, compressed = report.rows
    assert compressed["encoder_params"] <= 0.6 * original["encoder_params"]
    assert compressed["params"] < original["params"]
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(report.export_path)
    assert sum(p.numel() for p in reloaded.parameters()) == compressed["params"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(report.export_path)
    batch = tokenizer(["a fine film", "a dull one"], return_tensors="pt", padding=True)
    assert reloaded(**batch).logits.shape == (2, 2)
    study = optuna.load_study(study_name="compress", storage=report.study_storage)
    assert study.metric_names == ["val_acc", "params", "latency"]
    evaluated = [t for t in study.trials if not is_rejection(t)]
    assert len(evaluated) == 6 and all("encoder_params" in t.user_attrs for t in evaluated)
    searched = set(evaluated[0].params)
    if space:
        assert {"hidden", "depth", "layers.0.heads", "layers.1.ffn"} <= searched
    else:  # one heads and one FFN width for all layers: a stock BertConfig describes every export
        assert searched == {"heads", "ffn"}
    assert "compressed" in report.table()


def test_compress_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        compress(tmp_path)
    with pytest.raises(ValueError, match="fraction in"):
        compress(minilm_model_dir(), max_encoder_params=50)


@pytest.mark.slow
def test_compress_cli_on_the_real_minilm(tmp_path, capsys) -> None:
    out = tmp_path / "minilm"
    assert (
        main(
            [
                "compress",
                "minilm",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--trials",
                "4",
                "--max-train",
                "256",
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "fine-tuned original" in printed and "compressed" in printed
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(out / "best_model")
    assert sum(p.numel() for p in reloaded.parameters()) < 22_000_000
    with torch.no_grad():
        assert reloaded(input_ids=torch.ones(1, 8, dtype=torch.long)).logits.shape == (1, 2)
