"""benchmarks/smollm2_compress.py: its Taylor-prune baseline, its compute accounting, and ``--quick`` end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

transformers = pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "smollm2_compress.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smollm2_compress", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _llama(tie: bool) -> transformers.LlamaForCausalLM:
    """SmolLM2's proportions in small: 3 key/value groups of 2 query heads, FFN ~2.7 x hidden."""
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=3,
        intermediate_size=256,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_the_uniform_cut_fills_the_budget_with_one_ratio_for_heads_and_mlp(bench, tmp_path: Path) -> None:
    _llama(tie=True).save_pretrained(tmp_path)
    net = bench.space_supernet(tmp_path, block_size=16)
    full = bench.encoder_params(net, net.space.max_arch())
    assert full == 203_232  # 2 x (3 groups x 9,216 + 256 neurons x 288 + 2 norms x 96) + the final norm
    # 75%: 3 groups leave 160 neurons (1 vs 0.625), 2 groups 192 (0.67 vs 0.75), 1 group 224 (0.33 vs 0.875).
    assert bench.uniform_arch(net, 0.75) == {"heads": 2, "ffn": 192}
    # 50%: 2 groups leave 107 neurons (0.67 vs 0.42), 1 group 139 (0.33 vs 0.54): the closer pair wins.
    assert bench.uniform_arch(net, 0.5) == {"heads": 1, "ffn": 139}
    for budget in (0.75, 0.5):
        arch = bench.uniform_arch(net, budget)
        assert bench.encoder_params(net, arch) <= budget * full
        bigger = [c for c in net.space["ffn"].choices if c > arch["ffn"]]
        assert bench.encoder_params(net, {**arch, "ffn": bigger[0]}) > budget * full  # nothing left unused
    with pytest.raises(ValueError, match="no sub-network of the space is within 1% of the parameters"):
        bench.uniform_arch(net, 0.01)


def test_compute_counts_the_tied_output_projection_once(bench) -> None:
    tied, untied = _llama(tie=True), _llama(tie=False)
    head = 100 * 96
    assert bench.output_projection_params(tied) == head and bench.output_projection_params(untied) == 0
    assert bench.forward_params(tied) == bench.dense_encoder_params(tied) + head
    assert bench.forward_params(untied) == bench.dense_encoder_params(untied) == bench.forward_params(tied)


@pytest.mark.slow  # a tiny random Llama through compress (twice per budget), the baseline and the reference
def test_quick_runs_end_to_end_at_equal_compute_and_a_rerun_reuses_the_records(bench, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1]), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    out = out.with_name(out.name + "_quick")
    table = first.stdout[first.stdout.index("| model |") :]
    for row in (
        "pretrained",
        "full model fine-tuned (reference)",
        "ours: compress, 0.75",
        "ours without recovery, 0.50",
        "Taylor prune + FT, 0.50",
    ):
        assert f"| {row}" in table
    assert 'prompt "This movie is"' in table and "- Taylor prune + FT 0.75: " in table

    model_dir = out / "tiny_llama"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model) is transformers.LlamaForCausalLM and model.config.num_key_value_heads == 2
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.eos_token_id is not None
    net = bench.space_supernet(model_dir, block_size=32)
    head = bench.output_projection_params(model)
    full = bench.encoder_params(net, net.space.max_arch())
    records = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    settings = records.pop("settings")  # what a rerun in this --out must match
    assert settings["block_size"] == "32" and settings["prompt"] == "This movie is" and "seeds" not in settings
    assert set(records) == {"pretrained", "reference_s0"} | {
        f"{kind}_s0_{budget}" for kind in ("ours", "prune") for budget in ("0.75", "0.50")
    }
    computes = {}
    for budget in (0.75, 0.5):
        ours, prune = records[f"ours_s0_{budget:.2f}"], records[f"prune_s0_{budget:.2f}"]
        mean_student = sum(p for _, p in bench.archs_within(net, budget)) / len(bench.archs_within(net, budget))
        computes[budget] = bench.training_compute(ours, full + head, mean_student + head)
        assert computes[budget] > 0 and prune["compute"] == pytest.approx(computes[budget])
        assert prune["steps"] == max(1, round(computes[budget] / (3 * (prune["encoder_params"] + head))))
        assert prune["arch"] == bench.uniform_arch(net, budget)
        for record in (ours, ours["no_recovery"], prune):
            assert record["encoder_params"] <= budget * full
            assert 1 < record["val_ppl"] < 10 * len(tokenizer) and 1 < record["test_ppl"] < 10 * len(tokenizer)
            assert record["tokens_per_s"] > 0 and isinstance(record["sample"], str)
        assert ours["supernet_steps"] == 4 and ours["recover_steps"] == 2 and 1 <= len(ours["candidate_params"]) <= 2
        assert ours["final_steps"] == 2 and ours["final_params"] in ours["candidate_params"]
        exported = transformers.AutoModelForCausalLM.from_pretrained(Path(ours["run_dir"]) / "best_model")
        assert bench.dense_encoder_params(exported) == ours["no_recovery"]["encoder_params"]  # the rerun's export
    reference = records["reference_s0"]
    assert reference["steps"] == max(1, round(max(computes.values()) / (3 * (full + head))))

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout[again.stdout.index("| model |") :] == table  # every figure read back, nothing rerun
    assert "[compress" not in again.stdout + again.stderr

    files = sorted(out.rglob("*"))
    other = subprocess.run([*command, "--prompt", "Another prompt"], capture_output=True, text=True, env=env)
    assert other.returncode != 0
    assert f"{out} holds records of other settings (prompt: This movie is there, Another prompt now)" in other.stderr
    assert sorted(out.rglob("*")) == files  # nothing written


def test_the_recovery_loss_comparison_runs_end_to_end_on_a_tiny_llama(tmp_path: Path) -> None:
    script = SCRIPT.with_name("smollm2_recovery_loss.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), "--quick", "--threads", "1", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "loss" not in line]
    assert [row[0].strip() for row in rows] == ["logits", "hidden-mse", "hidden-normalised"]
    assert all(1 < float(row[1]) < 1e6 for row in rows)
    record = json.loads((tmp_path / "out" / "budget_0.50.json").read_text())
    assert set(record["arch"]) == {"heads", "ffn"} and len(record["rows"]) == 3
    bad = subprocess.run([*command, "--budget", "1.5"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--budget is a fraction in (0, 1), got 1.5" in bad.stderr
