"""transformers' load report: one line when compress adds a task head, the full report for anything else."""

from __future__ import annotations

import logging

import pytest

transformers = pytest.importorskip("transformers")

from lightning_nas.apps.text_classification import load_with_new_head  # noqa: E402


def _config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )


@pytest.fixture
def transformers_warnings():
    previous = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_warning()
    yield
    transformers.utils.logging.set_verbosity(previous)


def test_a_new_head_is_one_line_not_a_missing_table(tmp_path, caplog, transformers_warnings) -> None:
    transformers.BertModel(_config()).save_pretrained(tmp_path / "base")  # no classifier in the checkpoint
    with caplog.at_level(logging.WARNING, logger="lightning_nas.apps.text_classification"):
        model = load_with_new_head(transformers.AutoModelForSequenceClassification, tmp_path / "base", num_labels=3)
    assert model.classifier.out_features == 3
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage() or "MISSING" in r.getMessage()]
    lines = [r.getMessage() for r in caplog.records if r.name == "lightning_nas.apps.text_classification"]
    assert lines == [
        f"{tmp_path / 'base'}: new task head initialised (classifier.bias, classifier.weight); fine-tuning trains it"
    ]


def test_other_load_problems_keep_transformers_report(tmp_path, caplog, transformers_warnings) -> None:
    transformers.BertForMaskedLM(_config()).save_pretrained(tmp_path / "mlm")  # unexpected keys: the MLM head
    with caplog.at_level(logging.WARNING, logger="lightning_nas.apps.text_classification"):
        load_with_new_head(transformers.AutoModelForSequenceClassification, tmp_path / "mlm", num_labels=2)
    assert [r for r in caplog.records if r.name == "transformers.modeling_utils" and "LOAD REPORT" in r.getMessage()]
    assert not [r for r in caplog.records if r.name == "lightning_nas.apps.text_classification"]
