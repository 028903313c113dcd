"""Transformers families the adapters do not list by model type: recognised by structure, or refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

transformers = pytest.importorskip("transformers")

import lightning_nas  # noqa: E402
from lightning_nas import Supernet  # noqa: E402
from lightning_nas.adapters import HFDecoderAdapter, HFEncoderAdapter, find_adapter  # noqa: E402
from lightning_nas.callbacks import SupernetCallback  # noqa: E402
from lightning_nas.export.hf import export_hf, load_hf  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

DECODER = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
)
ENCODER = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)

#: Families of the common layouts that no table lists, with the quirk each one brings.
FAMILIES: dict[str, Callable[[], torch.nn.Module]] = {
    # q/k norms within a head, pre/post feed-forward norms, scaled embeddings, (1 + w) RMSNorm
    "gemma3": lambda: transformers.Gemma3ForCausalLM(
        transformers.Gemma3TextConfig(**DECODER, head_dim=8, attn_implementation="eager")
    ),
    # attention and final-logit soft-capping, sliding/full layers
    "gemma2": lambda: transformers.Gemma2ForCausalLM(
        transformers.Gemma2Config(**DECODER, head_dim=8, attn_implementation="eager")
    ),
    # embedding / residual / attention / logit multipliers from the config
    "granite": lambda: transformers.GraniteForCausalLM(
        transformers.GraniteConfig(
            **DECODER, embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=4.0, attention_multiplier=0.3
        )
    ),
    # plain (ungated) MLP, explicit head_dim
    "arcee": lambda: transformers.ArceeForCausalLM(transformers.ArceeConfig(**DECODER, head_dim=8)),
    # c_fc/c_proj MLP, biases everywhere, nn.LayerNorm
    "starcoder2": lambda: transformers.Starcoder2ForCausalLM(transformers.Starcoder2Config(**DECODER)),
    # LayerNorm without weights (keeps the hidden size fixed)
    "olmo": lambda: transformers.OlmoForCausalLM(transformers.OlmoConfig(**DECODER)),
    # Llama layout without a head_dim field
    "smollm3": lambda: transformers.SmolLM3ForCausalLM(transformers.SmolLM3Config(**DECODER, pad_token_id=0)),
    # parallel attention and MLP, mean-centred LayerNorm without bias (keeps the hidden size fixed), logit scale
    "cohere": lambda: transformers.CohereForCausalLM(transformers.CohereConfig(**DECODER, logit_scale=0.5)),
    "xlm-roberta": lambda: transformers.XLMRobertaForSequenceClassification(transformers.XLMRobertaConfig(**ENCODER)),
    "camembert": lambda: transformers.CamembertForMaskedLM(transformers.CamembertConfig(**ENCODER)),
}
ENCODERS = ("xlm-roberta", "camembert")

#: Families of other layouts, and what the refusal names.
REFUSED: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "mixtral": (
        lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(**DECODER, num_local_experts=4)),
        "mixture of experts",
    ),
    "phi3": (
        lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**DECODER, pad_token_id=0)),
        "no MLP of nn.Linear layers",
    ),
    "olmo2": (
        lambda: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**DECODER)),
        r"self_attn.q_norm.weight \(32,\) is neither a projection nor a norm within one head",
    ),
    # its o_proj reads hidden_size inputs, whatever the heads: only a second build shows it
    "helium": (
        lambda: transformers.HeliumForCausalLM(transformers.HeliumConfig(**DECODER, head_dim=8)),
        r"sizes self_attn.o_proj as \(64, 64\)",
    ),
}


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": torch.randint(1, 100, (2, 7), generator=generator), "attention_mask": mask}


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs())[0]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_by_structure_extracts_and_exports_exactly(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Supernet(FAMILIES[name]().eval(), example_input=inputs(), stock_config=False)
    assert isinstance(net.adapter, HFEncoderAdapter if name in ENCODERS else HFDecoderAdapter)
    assert {"layers.0.heads", "layers.2.ffn"} <= set(net.space)
    for arch in (net.min_arch(), net.sample_arch(3)):
        with net.use(arch):
            reference = logits(net.model)
        small = net.extract(arch).eval()
        torch.testing.assert_close(logits(small), reference, atol=1e-5, rtol=0)
        assert net.num_params(arch) == sum(p.numel() for p in small.parameters())
    assert not torch.allclose(reference, logits(net.model))
    # All layers kept, the first one wider: no stock config can describe it.
    arch = {**net.min_arch(), "layers.0.ffn": net.space["layers.0.ffn"].choices[-1]}
    arch.update({"depth": 3} if "depth" in arch else {})
    path = export_hf(net, tmp_path / "export", arch)
    reloaded = load_hf(path)
    with net.use(arch):
        torch.testing.assert_close(logits(reloaded), logits(net.model), atol=1e-5, rtol=0)
    assert json.loads((path / "config.json").read_text())["model_type"].startswith("lightning_nas_")


def test_quirks_that_change_the_hidden_size_keep_it_fixed() -> None:
    gemma = Supernet(FAMILIES["gemma3"]().eval(), example_input=inputs(), stock_config=False)
    assert "hidden" not in gemma.space
    assert any("Gemma3TextScaledWordEmbedding" in note and "Gemma3RMSNorm" in note for note in gemma.plan.notes)
    olmo = Supernet(FAMILIES["olmo"]().eval(), example_input=inputs(), stock_config=False)
    assert "hidden" not in olmo.space and "OlmoLayerNorm" in olmo.plan.notes[0]
    granite = Supernet(FAMILIES["granite"]().eval(), example_input=inputs(), stock_config=False)
    assert "hidden" in granite.space  # its RMSNorm is Llama's (probed), so the hidden size is elastic


@pytest.mark.parametrize("name", list(REFUSED))
def test_other_layouts_are_refused_before_any_work(name: str) -> None:
    build, reason = REFUSED[name]
    model = build()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=f"no Hugging Face adapter handles {type(model).__name__} .*{reason}"):
        Supernet(model, example_input=inputs())
    assert calls == []  # refused before the model ran
    assert not any(type(m).__name__.startswith("Elastic") for m in model.modules())
    assert find_adapter(model, "generic").name == "generic"  # tracing stays available when asked for by name


class _CausalLM(L.LightningModule):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.example_input_array = inputs()
        self.steps = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return self.model(input_ids=batch, labels=batch).loss

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randint(1, 100, (8, 7)), batch_size=4)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_callback_refuses_an_unsupported_model_before_training(tmp_path: Path) -> None:
    module = _CausalLM(REFUSED["mixtral"][0]())
    trainer = L.Trainer(
        max_steps=2, callbacks=[SupernetCallback()], default_root_dir=tmp_path, logger=False, enable_progress_bar=False
    )
    with pytest.raises(MisconfigurationException, match="no Hugging Face adapter handles MixtralForCausalLM"):
        trainer.fit(module)
    assert module.steps == 0


def test_stock_config_spaces_by_family() -> None:
    llama_like = Supernet(FAMILIES["arcee"]().eval(), example_input=inputs())
    assert set(llama_like.space) == {"heads", "ffn", "hidden", "depth"}  # head_dim in the config: heads free
    # Query heads per choice: 2 and 4; every hidden size must be divisible by both (the stock config checks).
    assert all(hidden % 4 == 0 for hidden in llama_like.space["hidden"].choices)
    bert_like = Supernet(FAMILIES["xlm-roberta"]().eval(), example_input=inputs())
    assert set(bert_like.space) == {"ffn", "depth"}
    assert "has no head_dim field" in bert_like.plan.notes[0]
    with pytest.raises(ValueError, match="per_layer=True needs stock_config=False"):
        Supernet(FAMILIES["arcee"]().eval(), example_input=inputs(), per_layer=True)


_LOAD_WITHOUT_LIGHTNING_NAS = """
import json, sys, torch, transformers
transformers.utils.logging.set_verbosity_error()
cases = json.loads(sys.argv[1])
for directory, auto in cases:
    model = getattr(transformers, auto).from_pretrained(directory).eval()
    expected = torch.load(directory + "/expected.pt")
    with torch.no_grad():
        actual = model(**expected["inputs"])[0]
    assert (actual - expected["logits"]).abs().max() < 1e-5, directory
assert not any(name.startswith("lightning_nas") for name in sys.modules)
print("loaded", len(cases))
"""


@pytest.mark.slow  # a fresh interpreter importing torch and transformers
def test_default_exports_load_with_plain_transformers_in_a_fresh_process(tmp_path: Path) -> None:
    cases = []
    for name, auto in (
        ("arcee", "AutoModelForCausalLM"),
        ("granite", "AutoModelForCausalLM"),
        ("xlm-roberta", "AutoModelForSequenceClassification"),
    ):
        torch.manual_seed(0)
        net = Supernet(FAMILIES[name]().eval(), example_input=inputs())
        arch = net.min_arch()
        directory = export_hf(net, tmp_path / name, arch)
        with net.use(arch):
            torch.save({"inputs": inputs(), "logits": logits(net.model)}, directory / "expected.pt")
        assert not json.loads((directory / "config.json").read_text())["model_type"].startswith("lightning_nas")
        cases.append((str(directory), auto))
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_LIGHTNING_NAS, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded 3" in result.stdout


@pytest.mark.slow  # fresh interpreters importing torch and transformers
def test_printed_load_instructions_run_verbatim_in_a_fresh_process(tmp_path: Path) -> None:
    from lightning_nas.adapters._hf_compressed import load_instructions

    lines = []
    for stock in (True, False):
        net = Supernet(FAMILIES["granite"]().eval(), example_input=inputs(), stock_config=stock)
        arch = net.min_arch() if stock else {**net.min_arch(), "depth": 3, "layers.0.ffn": 48}
        lines.append(load_instructions(export_hf(net, tmp_path / str(stock), arch), "AutoModelForCausalLM"))
    assert lines[0].startswith("import transformers;") and lines[1].startswith("import lightning_nas.adapters,")
    source = str(Path(lightning_nas.__file__).parents[1])  # this checkout, not another installed copy
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": source}
    for line in lines:  # the second needs the structural family registered from the model type alone
        result = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
