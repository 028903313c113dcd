"""Adapter for Hugging Face encoders: BERT (incl. MiniLM), RoBERTa, ELECTRA, DistilBERT, and any BERT-layout encoder.

Works on the base models and on every task head transformers has for them
(``*ForSequenceClassification``, ``*ForMaskedLM`` with its tied decoder, ...). Encoders of the
BERT layout under other model types (XLM-RoBERTa, CamemBERT, ...) are recognised by structure.
See :class:`~lightning_nas.adapters._hf_common.HFTransformerAdapter` for the dimensions and options.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from lightning_nas import Supernet
    >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                     intermediate_size=64, max_position_embeddings=32)
    >>> inputs = {"input_ids": torch.ones(1, 8, dtype=torch.long)}
    >>> net = Supernet(BertForSequenceClassification(config).eval(), example_input=inputs)
    >>> type(net.adapter).__name__, sorted(net.space)  # a stock BertConfig ties heads to the hidden size
    ('HFEncoderAdapter', ['depth', 'ffn'])
    >>> net = Supernet(BertForSequenceClassification(config).eval(), example_input=inputs, stock_config=False)
    >>> sorted(net.space)[:3]
    ['depth', 'hidden', 'layers.0.ffn']
    >>> small = net.extract({**net.min_arch()})
    >>> small.config.num_hidden_layers, small.config.hidden_size
    (1, 8)
"""

from __future__ import annotations

from torch import nn

from lightning_nas.adapters._hf_common import HFTransformerAdapter
from lightning_nas.adapters._hf_compressed import register_family
from lightning_nas.adapters._hf_family import Family, LayerShape

__all__ = ["ENCODER_FAMILIES", "HFEncoderAdapter"]


def _set_bert_attention(attention: nn.Module, shape: LayerShape, head_dim: int) -> None:
    attention.num_attention_heads = shape.heads
    attention.attention_head_size = head_dim
    attention.all_head_size = shape.heads * head_dim
    attention.scaling = head_dim**-0.5


def _set_distilbert_attention(attention: nn.Module, shape: LayerShape, head_dim: int) -> None:
    attention.n_heads = shape.heads
    attention.attention_head_size = head_dim
    attention.scaling = head_dim**-0.5


def _bert_like(name: str, config_class: str, embedding_field: str = "") -> Family:
    return Family(
        name=name,
        model_type=name,
        config_class=config_class,
        layers="encoder.layer",
        attention="attention.self",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attn_out="attention.output.dense",
        ffn_in=("intermediate.dense",),
        ffn_out="output.dense",
        embedding_field=embedding_field,
        kind="encoder",
        set_attention=_set_bert_attention,
    )


#: The encoder families, by stock model type.
ENCODER_FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        _bert_like("bert", "BertConfig"),
        _bert_like("roberta", "RobertaConfig"),
        _bert_like("electra", "ElectraConfig", embedding_field="embedding_size"),
        Family(
            name="distilbert",
            model_type="distilbert",
            config_class="DistilBertConfig",
            layers="transformer.layer",
            attention="attention",
            query="attention.q_lin",
            key="attention.k_lin",
            value="attention.v_lin",
            attn_out="attention.out_lin",
            ffn_in=("ffn.lin1",),
            ffn_out="ffn.lin2",
            ffn_field="hidden_dim",
            kind="encoder",
            set_attention=_set_distilbert_attention,
        ),
    )
}


class HFEncoderAdapter(HFTransformerAdapter):
    """Elastic depth, heads, FFN and hidden size of BERT-like encoders (see the module docstring)."""

    name = "hf_encoder"
    kind = "encoder"
    model_types = tuple(ENCODER_FAMILIES)


register_family(*ENCODER_FAMILIES.values())
