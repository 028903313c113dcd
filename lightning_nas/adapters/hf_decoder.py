"""Adapter for Hugging Face decoders: Llama, Mistral, Qwen2, Qwen3, GPT-2, and any decoder of the Llama layout.

Families not listed by model type are recognised by their structure (see
:mod:`~lightning_nas.adapters._hf_structure`): Gemma, Granite, Helium, StableLM, ... work as they
are; mixtures of experts and fused projections are refused with the reason.

Grouped-query attention shrinks in whole groups: a head unit is one key/value head together with
the query heads that read it, so ``num_attention_heads // num_key_value_heads`` never changes.
The head size stays fixed, so RoPE is untouched; tied input/output embeddings stay tied. See
:class:`~lightning_nas.adapters._hf_common.HFTransformerAdapter` for the dimensions and options.

Example:
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from lightning_nas import Supernet
    >>> config = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                      num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True)
    >>> model = LlamaForCausalLM(config).eval()
    >>> net = Supernet(model, example_input={"input_ids": torch.ones(1, 8, dtype=torch.long)})
    >>> net.space["heads"].choices  # key/value heads, two query heads each, in every layer
    (1, 2)
    >>> small = net.extract({"heads": 1, "hidden": 16})
    >>> type(small.config).__name__, small.config.num_attention_heads, small.config.num_key_value_heads
    ('LlamaConfig', 2, 1)
    >>> small.lm_head.weight is small.model.embed_tokens.weight
    True

    With ``stock_config=False`` each layer gets its own widths (the export then needs
    ``import lightning_nas.adapters`` to reload):

    >>> net = Supernet(LlamaForCausalLM(config).eval(), example_input={"input_ids": torch.ones(1, 8, dtype=torch.long)},
    ...                stock_config=False)
    >>> small = net.extract({"layers.0.heads": 1, "layers.1.heads": 2, "hidden": 16})
    >>> type(small.config).__name__, small.config.per_layer_config[0].num_key_value_heads
    ('LightningNasLlamaConfig', 1)
"""

from __future__ import annotations

from torch import nn

from lightning_nas.adapters._hf_common import HFTransformerAdapter
from lightning_nas.adapters._hf_compressed import register_family
from lightning_nas.adapters._hf_family import Family, LayerShape

__all__ = ["DECODER_FAMILIES", "HFDecoderAdapter"]


def _set_llama_attention(attention: nn.Module, shape: LayerShape, head_dim: int) -> None:
    attention.head_dim = head_dim
    attention.num_key_value_groups = shape.heads // shape.kv_heads
    attention.scaling = head_dim**-0.5


def _set_gpt2_attention(attention: nn.Module, shape: LayerShape, head_dim: int) -> None:
    attention.num_heads = shape.heads
    attention.head_dim = head_dim
    attention.split_size = shape.heads * head_dim
    # GPT2Attention.__init__'s formula, with the head size that no longer follows the hidden size.
    attention.scaling = head_dim**-0.5 if attention.scale_attn_weights else 1.0
    if attention.scale_attn_by_inverse_layer_idx:
        attention.scaling /= float(attention.layer_idx + 1)


def _llama_like(name: str, config_class: str, norm: str, head_norms: tuple[str, ...] = ()) -> Family:
    return Family(
        name=name,
        model_type=name,
        config_class=config_class,
        layers="layers",
        attention="self_attn",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        attn_out="self_attn.o_proj",
        ffn_in=("mlp.gate_proj", "mlp.up_proj"),
        ffn_out="mlp.down_proj",
        grouped_kv=True,
        head_dim_field=True,
        norm_classes=(norm,),
        head_norms=head_norms,
        kind="decoder",
        set_attention=_set_llama_attention,
    )


#: The decoder families, by stock model type.
DECODER_FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        _llama_like("llama", "LlamaConfig", "LlamaRMSNorm"),
        _llama_like("mistral", "MistralConfig", "MistralRMSNorm"),
        # Qwen2's config has no `head_dim` field, but its modeling code reads one if present.
        _llama_like("qwen2", "Qwen2Config", "Qwen2RMSNorm"),
        _llama_like("qwen3", "Qwen3Config", "Qwen3RMSNorm", head_norms=("self_attn.q_norm", "self_attn.k_norm")),
        Family(
            name="gpt2",
            model_type="gpt2",
            config_class="GPT2Config",
            layers="h",
            attention="attn",
            qkv="attn.c_attn",
            attn_out="attn.c_proj",
            ffn_in=("mlp.c_fc",),
            ffn_out="mlp.c_proj",
            ffn_field="n_inner",
            kind="decoder",
            set_attention=_set_gpt2_attention,
        ),
    )
}


class HFDecoderAdapter(HFTransformerAdapter):
    """Elastic depth, GQA-aware heads, FFN and hidden size of decoders (see the module docstring)."""

    name = "hf_decoder"
    kind = "decoder"
    model_types = tuple(DECODER_FAMILIES)


register_family(*DECODER_FAMILIES.values())
