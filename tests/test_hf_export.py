"""HF export: extracted sub-networks reload from disk through the Auto classes with equal outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_nas import Supernet  # noqa: E402
from lightning_nas.export import ExportError  # noqa: E402
from lightning_nas.export.hf import (  # noqa: E402
    auto_class_for,
    export_hf,
    load_hf,
    random_token_inputs,
    save_hf,
    verify_hf,
)
from tests.test_hf_adapters import ENCODER_KWARGS, TINY, _Wrapped, outputs, tiny_inputs, tiny_supernet  # noqa: E402

_STOCK_CONFIGS = {
    "bert": "BertConfig",
    "bert-mlm": "BertConfig",
    "roberta": "RobertaConfig",
    "electra": "ElectraConfig",
    "distilbert": "DistilBertConfig",
    "llama": "LlamaConfig",
    "llama-cls": "LlamaConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "gpt2": "GPT2Config",
}


@pytest.mark.parametrize("name", list(TINY))
def test_min_max_and_random_archs_reload_with_equal_outputs(name: str, tmp_path: Path) -> None:
    net = tiny_supernet(name)
    inputs = tiny_inputs()
    for label, arch in (("max", net.max_arch()), ("min", net.min_arch()), ("random", net.sample_arch(7))):
        path = export_hf(net, tmp_path / label, arch)
        with net.use(arch):
            reference = outputs(net.model, inputs)
        reloaded = load_hf(path)
        torch.testing.assert_close(outputs(reloaded, inputs), reference, atol=1e-4, rtol=0)
        assert auto_class_for(reloaded.config).__name__.startswith("AutoModelFor")
    assert type(load_hf(tmp_path / "max").config).__name__ == _STOCK_CONFIGS[name]


def test_uniform_archs_reload_with_plain_transformers(tmp_path: Path) -> None:
    """Standard config fields suffice for uniform archs; a fresh interpreter loads them without lightning_nas."""
    cases = {
        # family -> (global dimensions: heads, ffn, hidden, depth)
        "llama": (1, 24, 24, 2),
        "qwen2": (2, 12, 16, 1),
        "qwen3": (1, 36, 8, 2),
        "mistral": (2, 48, 32, 2),
        "bert": (3, 24, 24, 2),  # BERT derives the head size: 3 heads of 8 = hidden 24
        "gpt2": (2, 24, 16, 2),
        "distilbert": (1, 12, 8, 3),
    }
    inputs = tiny_inputs()
    manifest = {}
    for name, (heads, ffn, hidden, depth) in cases.items():
        net = tiny_supernet(name, per_layer=False)
        arch = {"heads": heads, "ffn": ffn, "hidden": hidden, "depth": depth}
        path = export_hf(net, tmp_path / name, arch)
        config = json.loads((path / "config.json").read_text())
        assert config["model_type"] == TINY[name]().config.model_type
        with net.use(arch):
            torch.save(outputs(net.model, inputs), tmp_path / f"{name}.expected.pt")
        manifest[name] = (str(path), auto_class_for(load_hf(path).config).__name__)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = f"""
import json, sys, torch, transformers
torch.set_num_threads(1)
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
for name, (path, auto) in json.loads({json.dumps(json.dumps(manifest))}).items():
    model = getattr(transformers, auto).from_pretrained(path).eval()
    with torch.no_grad():
        torch.save(model(**inputs)[0], {str(tmp_path)!r} + f"/{{name}}.reloaded.pt")
assert not any(m.startswith("lightning_nas") for m in sys.modules), "lightning_nas was imported"
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in cases:
        torch.testing.assert_close(
            torch.load(tmp_path / f"{name}.reloaded.pt"),
            torch.load(tmp_path / f"{name}.expected.pt"),
            atol=1e-4,
            rtol=0,
        )


@pytest.mark.parametrize("name", ["bert", "distilbert", "gpt2", "llama", "qwen2"])
def test_heterogeneous_archs_use_the_registered_compressed_classes(name: str, tmp_path: Path) -> None:
    net = tiny_supernet(name)
    arch = {"layers.0.heads": 1, "layers.1.ffn": 12, "layers.2.heads": 1, "depth": 3}
    path = export_hf(net, tmp_path, arch)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "lightning_nas_" + TINY[name]().config.model_type
    assert set(config["per_layer_config"]) == {"0", "1", "2"}
    assert config["architectures"] == ["LightningNas" + type(TINY[name]()).__name__]
    auto = auto_class_for(transformers.AutoConfig.from_pretrained(path))
    reloaded = auto.from_pretrained(path).eval()
    assert isinstance(reloaded, type(TINY[name]()))
    with net.use(arch):
        torch.testing.assert_close(
            outputs(reloaded, tiny_inputs()), outputs(net.model, tiny_inputs()), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("embedding_size", [16, 32])
def test_electra_embeddings_keep_their_projection_or_follow_the_hidden_size(
    embedding_size: int, tmp_path: Path
) -> None:
    config = transformers.ElectraConfig(**{**ENCODER_KWARGS, "embedding_size": embedding_size})
    net = Supernet(transformers.ElectraForMaskedLM(config).eval(), example_input=tiny_inputs(), stock_config=False)
    # A hidden size equal to the embedding size would make transformers drop the projection.
    assert (embedding_size in net.space["hidden"].choices) == (embedding_size == 32)
    arch = {**net.min_arch(), "depth": 3}
    path = export_hf(net, tmp_path, arch)
    assert transformers.AutoConfig.from_pretrained(path).embedding_size == (8 if embedding_size == 32 else 16)


def test_fewer_bert_heads_than_the_hidden_size_implies_need_head_dim(tmp_path: Path) -> None:
    net = tiny_supernet("bert", per_layer=False)
    path = export_hf(net, tmp_path, {"heads": 2})
    config = transformers.AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_attention_heads, config.head_dim, config.hidden_size) == (
        "lightning_nas_bert",
        2,
        8,
        32,
    )
    assert not config.is_heterogeneous


def test_compressed_configs_build_random_models_of_the_right_shapes() -> None:
    net = tiny_supernet("qwen3")
    config = net.extract({"layers.1.heads": 1, "layers.2.ffn": 24}).config
    model = transformers.AutoModelForCausalLM.from_config(config)
    layers = model.model.layers
    assert [layer.self_attn.k_proj.out_features for layer in layers] == [16, 8, 16]
    assert [layer.mlp.down_proj.in_features for layer in layers] == [48, 48, 24]
    assert layers[1].self_attn.q_norm.weight.shape == (8,)
    assert torch.isfinite(model(**tiny_inputs()).logits).all()


def test_verify_detects_a_different_model(tmp_path: Path) -> None:
    net = tiny_supernet("gpt2")
    path = save_hf(net.extract(net.min_arch()), tmp_path)
    with pytest.raises(ExportError, match="differs"):
        verify_hf(path, tiny_inputs(), net.model)
    with net.use(net.min_arch()):
        assert verify_hf(path, tiny_inputs(), net.model) <= 1e-4


def test_the_tokenizer_is_copied_from_the_source_directory(tmp_path: Path) -> None:
    minilm = pytest.importorskip("lightning_nas.datasets").minilm_model_dir()
    net = tiny_supernet("bert")
    path = save_hf(net.extract({"layers.0.heads": 1}), tmp_path, tokenizer=minilm)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert (
        tokenizer("a movie")["input_ids"] == transformers.AutoTokenizer.from_pretrained(minilm)("a movie")["input_ids"]
    )


def test_export_needs_inputs_to_verify(tmp_path: Path) -> None:
    net = tiny_supernet("bert")
    net.example_input = None
    with pytest.raises(ValueError, match="needs `inputs`"):
        export_hf(net, tmp_path)


def test_an_embedding_row_corrupted_after_extraction_fails_the_export(tmp_path, monkeypatch) -> None:
    """Random token ids cover the whole (tiny) vocabulary, so a damaged row of any token is caught."""
    net = tiny_supernet("bert")
    arch = {"layers.0.heads": 2, "layers.1.ffn": 32}
    extract = Supernet.extract

    def corrupted_extract(self, arch=None):
        model = extract(self, arch)
        with torch.no_grad():
            model.get_input_embeddings().weight[57, 0] += 0.5  # a token absent from the example input
        return model

    assert 57 not in tiny_inputs()["input_ids"]
    monkeypatch.setattr(Supernet, "extract", corrupted_extract)
    with pytest.raises(ExportError, match="on random input"):
        export_hf(net, tmp_path / "export", arch)
    assert list(tmp_path.iterdir()) == []


def test_random_token_inputs_cover_the_vocabulary_with_padding() -> None:
    net = tiny_supernet("bert")
    batches = random_token_inputs(net.model, tiny_inputs(), tokens=2048)
    unpadded = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in batches])
    assert set(unpadded.tolist()) == set(range(net.model.config.vocab_size))  # every id where a classifier sees it
    masks = torch.cat([b["attention_mask"] for b in batches])
    assert masks[:, 0].all() and not masks.all()  # every sequence has a token; some are padded
    assert all(set(b) == {"input_ids", "attention_mask"} for b in batches)  # the example's keys only


def test_a_supernet_not_built_by_an_hf_adapter_is_refused(tmp_path) -> None:
    config = transformers.BertConfig(**ENCODER_KWARGS)
    model = transformers.BertForSequenceClassification(config).eval()
    net = Supernet(model, example_input=tiny_inputs(), adapter="generic")  # the tracer, chosen explicitly
    with pytest.raises(
        ValueError, match="this BertForSequenceClassification supernet was built by the 'generic' adapter"
    ):
        export_hf(net, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []
    wrapped = Supernet(_Wrapped().eval(), example_input=tiny_inputs())
    with pytest.raises(ValueError, match="_Wrapped is not one"):
        export_hf(wrapped, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_an_hf_export_is_replaced_only_by_one_that_verified(tmp_path, monkeypatch) -> None:
    net = tiny_supernet("llama")
    target = export_hf(net, tmp_path / "export", net.min_arch())
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    assert json.loads(before["arch.json"])["format"] == "lightning_nas.hf"
    extract = Supernet.extract

    def corrupted_extract(self, arch=None):
        model = extract(self, arch)
        with torch.no_grad():
            model.model.norm.weight.mul_(2.0)
        return model

    monkeypatch.setattr(Supernet, "extract", corrupted_extract)
    with pytest.raises(ExportError, match="differs"):
        export_hf(net, target, net.max_arch())
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    with pytest.raises(ValueError, match="is a file, not a directory"):
        export_hf(net, target / "config.json" / "x")


def test_a_damaged_hf_export_is_named_on_load(tmp_path) -> None:
    net = tiny_supernet("bert")
    path = export_hf(net, tmp_path / "export", net.min_arch())
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ExportError, match=r"model.safetensors is truncated or damaged: [\d,]+ bytes, [\d,]+ written"):
        load_hf(path)


def test_printed_load_instructions_run_verbatim_for_both_kinds_of_config(tmp_path: Path) -> None:
    """What `compress` prints to reload an export runs as printed, stock config or lightning_nas config."""
    from lightning_nas.adapters._hf_compressed import load_instructions

    net = tiny_supernet("bert", per_layer=True)
    stock = export_hf(net, tmp_path / "stock", net.max_arch())
    custom = export_hf(net, tmp_path / "custom", {**net.max_arch(), "layers.0.heads": 1})
    lines = {path.name: load_instructions(path, "AutoModel") for path in (stock, custom)}
    assert lines["stock"].startswith("import transformers;") and "lightning_nas" not in lines["stock"].split("#")[0]
    assert lines["custom"].startswith("import lightning_nas.adapters, transformers;")
    for name, line in lines.items():  # verbatim: from_pretrained raises on an unknown model type
        run = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, f"{name}: {run.stderr[-2000:]}"
