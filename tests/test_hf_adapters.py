"""HF encoder/decoder adapters: every supported family becomes a supernet whose extracts are exact."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_nas import Supernet  # noqa: E402
from lightning_nas.adapters import GenericAdapter, HFDecoderAdapter, HFEncoderAdapter, find_adapter  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ENCODER_KWARGS = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=32,
)
DECODER_KWARGS = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
)

#: Tiny randomly initialised models of every supported family, by test id.
TINY: dict[str, Callable[[], torch.nn.Module]] = {
    "bert": lambda: transformers.BertForSequenceClassification(transformers.BertConfig(**ENCODER_KWARGS)),
    "bert-mlm": lambda: transformers.BertForMaskedLM(transformers.BertConfig(**ENCODER_KWARGS)),
    "roberta": lambda: transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**ENCODER_KWARGS)),
    "electra": lambda: transformers.ElectraForSequenceClassification(
        transformers.ElectraConfig(**ENCODER_KWARGS, embedding_size=16)
    ),
    "distilbert": lambda: transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(
            vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=48, max_position_embeddings=32
        )
    ),
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**DECODER_KWARGS, tie_word_embeddings=True)
    ),
    "llama-cls": lambda: transformers.LlamaForSequenceClassification(
        transformers.LlamaConfig(**DECODER_KWARGS, pad_token_id=0)
    ),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**DECODER_KWARGS)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**DECODER_KWARGS)),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**DECODER_KWARGS, head_dim=8)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=32)
    ),
}
ENCODERS = ("bert", "bert-mlm", "roberta", "electra", "distilbert")


def tiny_inputs(batch: int = 2, length: int = 7) -> dict[str, torch.Tensor]:
    """Token ids with the second row padded, so the attention mask matters."""
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, length - 2 :] = 0
    return {"input_ids": torch.randint(1, 100, (batch, length), generator=generator), "attention_mask": mask}


def tiny_supernet(name: str, **options: object) -> Supernet:
    """The full space (per-layer widths) unless ``options`` say otherwise."""
    options.setdefault("stock_config", False)
    return Supernet(TINY[name]().eval(), example_input=tiny_inputs(), **options)


def outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)[0]


@pytest.mark.parametrize("name", list(TINY))
def test_family_converts_and_extracts_exactly(name: str) -> None:
    net = tiny_supernet(name)
    expected = HFEncoderAdapter if name in ENCODERS else HFDecoderAdapter
    assert isinstance(net.adapter, expected)
    assert {"hidden", "depth", "layers.0.heads", "layers.2.ffn"} <= set(net.space)
    inputs = tiny_inputs()
    full = outputs(net.model, inputs)
    for arch in (net.max_arch(), net.min_arch(), net.sample_arch(3)):
        with net.use(arch):
            reference = outputs(net.model, inputs)
        small = net.extract(arch).eval()
        torch.testing.assert_close(outputs(small, inputs), reference, atol=1e-5, rtol=0)
        assert net.num_params(arch) == sum(p.numel() for p in small.parameters())
        config = small.config
        assert config.num_hidden_layers == arch["depth"]
        assert config.hidden_size == arch["hidden"]
    assert not torch.allclose(reference, full)  # the random sub-network really is smaller


def test_depth_keeps_the_layers_in_depth_order() -> None:
    net = tiny_supernet("llama", depth_order=[2, 0, 1])
    small = net.extract({"depth": 2})
    kept = [net.model.model.layers[i] for i in (0, 2)]
    for layer, original in zip(small.model.layers, kept):
        torch.testing.assert_close(layer.mlp.up_proj.weight, original.mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in small.model.layers] == [0, 1]


def test_gqa_heads_shrink_in_whole_groups() -> None:
    config = transformers.LlamaConfig(**{**DECODER_KWARGS, "num_attention_heads": 8, "num_key_value_heads": 2})
    net = Supernet(transformers.LlamaForCausalLM(config).eval(), example_input=tiny_inputs(), stock_config=False)
    head_dim = 4
    assert net.space["layers.0.heads"].choices == (1, 2)  # key/value heads, four query heads each
    small = net.extract({"layers.0.heads": 1, "hidden": 24})
    first, second = small.model.layers[:2]
    assert first.self_attn.q_proj.out_features == 4 * head_dim
    assert first.self_attn.k_proj.out_features == first.self_attn.v_proj.out_features == head_dim
    assert first.self_attn.o_proj.in_features == 4 * head_dim
    assert first.self_attn.num_key_value_groups == second.self_attn.num_key_value_groups == 4
    assert small.config.head_dim == head_dim
    assert small.config.per_layer_config[0].num_attention_heads == 4
    assert small.config.per_layer_config[0].num_key_value_heads == 1
    assert small.config.per_layer_config[1].num_key_value_heads == 2
    with net.use({"layers.0.heads": 1, "hidden": 24}):
        reference = outputs(net.model, tiny_inputs())
    torch.testing.assert_close(outputs(small.eval(), tiny_inputs()), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "embeddings", "head"),
    [
        ("llama", "model.embed_tokens", "lm_head"),
        ("gpt2", "transformer.wte", "lm_head"),
        ("bert-mlm", "bert.embeddings.word_embeddings", "cls.predictions.decoder"),
    ],
)
def test_tied_embeddings_stay_tied(name: str, embeddings: str, head: str, tmp_path: object) -> None:
    from lightning_nas.export.hf import load_hf, save_hf

    net = tiny_supernet(name)
    small = net.extract(net.min_arch())
    assert small.get_submodule(head).weight is small.get_submodule(embeddings).weight
    assert small.get_submodule(embeddings).weight.shape[1] == net.min_arch()["hidden"]
    reloaded = load_hf(save_hf(small, tmp_path))
    assert reloaded.get_submodule(head).weight is reloaded.get_submodule(embeddings).weight


def test_global_dimensions_give_uniform_stock_configs() -> None:
    net = tiny_supernet("qwen3", per_layer=False)
    assert {"heads", "ffn", "hidden", "depth"} == set(net.space)
    small = net.extract({"heads": 1, "ffn": 24, "hidden": 16, "depth": 2})
    assert type(small) is transformers.Qwen3ForCausalLM
    config = small.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 8)
    assert (config.intermediate_size, config.hidden_size, config.num_hidden_layers) == (24, 16, 2)
    assert config.layer_types == ["full_attention"] * 2


def test_options_turn_dimensions_off() -> None:
    net = tiny_supernet("bert", hidden=False, depth=False, ffn=False)
    assert set(net.space) == {"layers.0.heads", "layers.1.heads", "layers.2.heads"}
    with pytest.raises(TypeError, match="unknown options"):
        tiny_supernet("bert", width=0.5)


def test_ffn_fractions_set_the_ffn_choices_alone() -> None:
    widths = (0.25, 0.5, 1.0)
    net = tiny_supernet("bert", stock_config=False, per_layer=False, width_fractions=widths, ffn_fractions=(1 / 8, 1.0))
    ffn, heads = net.space["ffn"].size, net.space["heads"].size
    assert net.space["ffn"].choices == (ffn // 8, ffn)  # the FFN's own fractions
    assert net.space["heads"].choices == tuple(sorted({max(1, round(f * heads)) for f in widths}))


def test_unknown_architectures_fall_back_or_fail_clearly() -> None:
    config = transformers.OPTConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=48,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=32,
    )
    opt = transformers.OPTForCausalLM(config)
    assert isinstance(find_adapter(opt, "generic"), GenericAdapter)  # tracing is chosen explicitly
    with pytest.raises(ValueError, match=r"no Hugging Face adapter handles OPTForCausalLM \(model type 'opt'\)"):
        find_adapter(opt)
    with pytest.raises(ValueError, match=r"'hf_decoder' adapter does not support OPTForCausalLM \(model type 'opt'\)"):
        Supernet(opt, example_input=tiny_inputs(), adapter="hf_decoder")
    with pytest.raises(ValueError, match="does not support LlamaForCausalLM"):
        Supernet(TINY["llama"](), example_input=tiny_inputs(), adapter="hf_encoder")


class _Wrapped(torch.nn.Module):
    """An HF encoder inside a user's module (as in a LightningModule), with the user's own head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = transformers.BertModel(transformers.BertConfig(**ENCODER_KWARGS), add_pooling_layer=False)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])


def test_a_transformer_inside_a_user_module_is_found() -> None:
    net = Supernet(_Wrapped().eval(), example_input=tiny_inputs(), stock_config=False)
    assert isinstance(net.adapter, HFEncoderAdapter)
    assert "head:in" in net.space["hidden"].axes  # the user's head reads the hidden size
    arch = {"hidden": 16, "layers.1.heads": 1, "depth": 2}
    small = net.extract(arch).eval()
    assert small.head.in_features == 16
    assert type(small.encoder).__name__ == "LightningNasBertModel"
    assert small.encoder.config.num_hidden_layers == 2
    with net.use(arch), torch.no_grad():
        torch.testing.assert_close(small(**tiny_inputs()), net.model(**tiny_inputs()), atol=1e-5, rtol=0)


def test_cross_attention_is_refused() -> None:
    config = transformers.BertConfig(**ENCODER_KWARGS, is_decoder=True, add_cross_attention=True)
    with pytest.raises(ValueError, match="cross-attention"):
        Supernet(transformers.BertModel(config), example_input=tiny_inputs())


def test_a_compressed_export_can_become_a_supernet_again() -> None:
    net = tiny_supernet("bert")
    small = net.extract({"layers.0.heads": 2, "layers.1.ffn": 24, "hidden": 24}).eval()
    again = Supernet(small, example_input=tiny_inputs(), stock_config=False)
    assert again.space["layers.0.heads"].choices == (1, 2)
    assert again.space["layers.1.ffn"].size == 24
    smaller = again.extract({"layers.0.heads": 1})
    assert smaller.bert.encoder.layer[0].attention.self.query.out_features == 8
