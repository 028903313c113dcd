"""`compress` vs Torch-Pruning + fine-tuning on MiniLM at equal training compute (issue 8).

For each seed and each budget on the encoder parameters (``--budgets``, fractions of the
parameters outside ``nn.Embedding``), on the vendored rotten_tomatoes reviews (fit / validation
carved from the train split by :func:`~lightning_nas.datasets.train_validation_split`; the test
split only for the final figures):

- **reference**: the full all-MiniLM-L6-v2 fine-tuned for ``--epochs`` (plain Lightning, no NAS);
- **ours**: :func:`lightning_nas.compress.compress` as a user runs it (InstaTune supernet with
  students within the budget, one-shot search, recovery distillation of the top ``--recover-top-k``
  candidates from the fine-tuned full model, export, reload, test), plus the same run without
  recovery (``recover_steps=0``: the search's best with the supernet's weights; it reuses the
  trained supernet and study, so costs no training);
- **Torch-Pruning + FT**: whole heads and FFN neurons removed from the pretrained model with group
  Taylor importance (``benchmarks/minilm_compress.py``'s ``prune_model``), the same widths in
  every layer, then fine-tuned with labels for as many steps as give it **the same training
  compute as ours at that budget**.

How compute is counted: a forward pass costs the network's encoder parameters (per token, about
half the FLOPs: ``2 x params`` multiply-adds; the attention-score matmuls, under 4% here at 64
tokens, are left out), a training step forward + backward three times that, a frozen teacher's
forward once. Ours per budget = ``S x 3 x (P_full + E[P_student])`` for the ``S`` supernet steps
(one full model and one student drawn uniformly among the sub-networks within the budget, its
mean ``E[P_student]`` computed over that set) ``+ K x R x (P_full + 3 x P_candidate)`` for the
ranking distillations ``+ F x (P_full + 3 x P_chosen)`` for the chosen candidate's final one.
The baseline then gets ``ours / (3 x P_pruned)`` fine-tuning steps at the same batch size. The
search's evaluation passes (inference) are reported apart. Each budget has its own supernet
(students within that budget), so no cost is shared between budgets: producing all three costs
the sum, for both methods.

``--one-supernet`` adds the other way to produce all budgets: **one** ``compress`` run with every
budget (``max_encoder_params=[0.75, 0.5, 0.33]``: one supernet whose students are drawn within the
largest budget, then per budget a search, recovery and export). Its compute is
``S x 3 x (P_full + E[P_student within the largest]) + sum over budgets of (ranking + final
distillation)``, set against the three Torch-Pruning runs above (whose compute is the sum of the
per-budget runs'). It needs ``--allow-custom-config`` when a budget is below the stock space's
reach (33% of MiniLM's encoder is).

Usage::

    # one process per seed (benchmarks/RESULTS.md has the recorded commands)
    python benchmarks/compress_equal_compute.py --seeds 0 --budgets 0.5 --max-fit 2000 --trials 12 --max-val 400 \
        --threads 1 --allow-custom-config
    python benchmarks/compress_equal_compute.py --quick                      # pipeline check, numbers meaningless

Needs ``torch-pruning`` (``pip install 'lightning-nas[bench]'``). Results go to ``--out`` (one JSON
per seed and budget; a rerun skips what is done).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
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

from minilm_compress import prune_model  # noqa: E402

from lightning_nas.apps import TextClassifier, TextDataModule, evaluate_accuracy  # noqa: E402
from lightning_nas.apps.text_classification import load_with_new_head  # noqa: E402
from lightning_nas.callbacks._quiet import quiet_lightning  # noqa: E402
from lightning_nas.compress import NARROW_FFN_FRACTIONS, WIDTH_FRACTIONS, compress, dense_encoder_params  # noqa: E402
from lightning_nas.datasets import load_text_classification, minilm_model_dir, train_validation_split  # noqa: E402
from lightning_nas.search import search_result  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load={os.getloadavg()[0]:.1f}] {message}", flush=True)


def load_splits(max_fit: int | None, max_val: int | None) -> dict[str, tuple[list[str], list[int]]]:
    data = load_text_classification("rotten_tomatoes")
    fit_x, fit_y, val_x, val_y = train_validation_split(data.train_texts, data.train_labels)
    return {
        "train": (fit_x[:max_fit], fit_y[:max_fit]),
        "validation": (val_x[:max_val], val_y[:max_val]),
        "test": (data.test_texts, data.test_labels),
    }


def as_dataset(split: tuple[list[str], list[int]]) -> Any:
    import datasets

    return datasets.Dataset.from_dict({"text": split[0], "label": split[1]})


def encoder_params_of(heads: int, ffn: int, model: Any) -> float:
    """Encoder parameters of MiniLM with ``heads`` heads and ``ffn`` FFN neurons in every layer."""
    config = model.config
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = hidden // config.num_attention_heads
    per_head, per_neuron = 4 * hidden * head_dim + 3 * head_dim, 2 * hidden + 1
    full = dense_encoder_params(model)
    fixed = full - layers * (config.num_attention_heads * per_head + config.intermediate_size * per_neuron)
    return fixed + layers * (heads * per_head + ffn * per_neuron)


def mean_student_params(model: Any, budget: float, stock_config: bool) -> float:
    """Mean encoder params of the sub-networks within the budget, in compress's default space on BERT.

    With stock configs every head stays and one FFN width is searched (1/24 to all); with custom
    configs, one heads and one FFN width (1/4 to all, in steps of 1/24).
    """
    config = model.config
    if stock_config:
        heads = [config.num_attention_heads]
        ffn_fractions = {*NARROW_FFN_FRACTIONS, *WIDTH_FRACTIONS}
    else:
        heads = sorted({max(1, round(f * config.num_attention_heads)) for f in WIDTH_FRACTIONS})
        ffn_fractions = set(WIDTH_FRACTIONS)
    ffns = sorted({max(1, round(f * config.intermediate_size)) for f in ffn_fractions})
    limit = budget * dense_encoder_params(model)
    within = [p for h, f in itertools.product(heads, ffns) if (p := encoder_params_of(h, f, model)) <= limit]
    return statistics.fmean(within)


def fine_tune_steps(module: TextClassifier, datamodule: TextDataModule, steps: int) -> float:
    with quiet_lightning():
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            accelerator="auto",  # the CPU here, one GPU where there is one (also used by smollm2_compress.py)
            devices=1,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule)
    return time.perf_counter() - start


def run_reference(out: Path, splits: dict, tokenizer: Any, args: argparse.Namespace, seed: int) -> dict:
    record_path = out / f"reference_s{seed}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    L.seed_everything(seed, verbose=False)
    datamodule = TextDataModule(tokenizer, splits["train"], splits["validation"], splits["test"], 64, 32, seed)
    module = TextClassifier(minilm_model_dir(), 2, lr=args.lr)
    steps = args.epochs * len(datamodule.train_dataloader())
    seconds = fine_tune_steps(module, datamodule, steps)
    record = {
        "steps": steps,
        "train_s": seconds,
        "test_acc": evaluate_accuracy(module.model, datamodule.test_dataloader()),
    }
    record_path.write_text(json.dumps(record, indent=2))
    log(f"reference seed {seed}: {record}")
    return record


def run_ours(out: Path, splits: dict, budget: float, args: argparse.Namespace, seed: int) -> dict:
    record_path = out / f"ours_s{seed}_{budget:.2f}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    run_dir = out / f"compress_s{seed}_{budget:.2f}"
    common = {
        "train": as_dataset(splits["train"]),
        "validation": as_dataset(splits["validation"]),
        "test": as_dataset(splits["test"]),
        "max_encoder_params": budget,
        "epochs": args.epochs,
        "n_trials": args.trials,
        "lr": args.lr,
        "seed": seed,
        "stock_config": args.stock_config,
        "recover_top_k": args.recover_top_k,
        "recover_hidden_weight": args.hidden_weight,
        "recover_label_weight": args.label_weight,
        "recover_rank_by": args.recover_rank_by,
        "limit_train_batches": args.limit_train_batches,
    }
    start = time.perf_counter()
    report = compress(
        minilm_model_dir(),
        run_dir,
        recover_steps=args.recover_steps,
        recover_final_steps=args.recover_final_steps,
        **common,
    )
    seconds = time.perf_counter() - start
    original, compressed = report.rows
    arch = json.loads((report.export_path / "arch.json").read_text())["arch"]
    study = optuna.load_study(study_name="compress", storage=report.study_storage)
    top = search_result(study, "val_acc", "maximize").top(args.recover_top_k)
    # Rerun in the same directory without recovery: the fine-tuning checkpoint and the study are
    # reused (nothing retrained), and the search's best is exported with the supernet's weights.
    plain = compress(minilm_model_dir(), run_dir, recover_steps=0, **common)
    steps_per_epoch = -(-len(splits["train"][0]) // 32)
    if args.limit_train_batches:
        steps_per_epoch = min(steps_per_epoch, args.limit_train_batches)
    record = {
        "budget": budget,
        "seconds": seconds,
        "test_acc": compressed["test_acc"],
        "test_acc_no_recovery": plain.rows[1]["test_acc"],
        "arch_no_recovery": top[0].user_attrs["arch"] if top else None,
        "encoder_params": compressed["encoder_params"],
        "full_encoder_params": original["encoder_params"],
        "supernet_full_test_acc": original["test_acc"],
        "arch": arch,
        "supernet_steps": args.epochs * steps_per_epoch,
        "recover_steps": args.recover_steps if args.recover_steps is not None else max(1, steps_per_epoch // 4),
        "candidate_params": [t.user_attrs["encoder_params"] for t in top],
        "final_steps": args.recover_final_steps if args.recover_final_steps is not None else steps_per_epoch,
        "final_params": compressed["encoder_params"],
        "search_trials": args.trials,
        "recover_rank_by": args.recover_rank_by,
        "run_dir": str(run_dir),
    }
    record_path.write_text(json.dumps(record, indent=2))
    log(f"ours seed {seed} budget {budget}: {record}")
    return record


def run_ours_shared(out: Path, splits: dict, budgets: list[float], args: argparse.Namespace, seed: int) -> dict:
    """One ``compress`` run for all ``budgets`` (one supernet); a record per budget and the run's."""
    record_path = out / f"shared_s{seed}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    run_dir = out / f"compress_shared_s{seed}"
    start = time.perf_counter()
    report = compress(
        minilm_model_dir(),
        run_dir,
        train=as_dataset(splits["train"]),
        validation=as_dataset(splits["validation"]),
        test=as_dataset(splits["test"]),
        max_encoder_params=budgets,
        epochs=args.epochs,
        n_trials=args.trials,
        lr=args.lr,
        seed=seed,
        stock_config=args.stock_config,
        recover_top_k=args.recover_top_k,
        recover_steps=args.recover_steps,
        recover_final_steps=args.recover_final_steps,
        recover_hidden_weight=args.hidden_weight,
        recover_label_weight=args.label_weight,
        recover_rank_by=args.recover_rank_by,
        limit_train_batches=args.limit_train_batches,
    )
    seconds = time.perf_counter() - start
    steps_per_epoch = -(-len(splits["train"][0]) // 32)
    if args.limit_train_batches:
        steps_per_epoch = min(steps_per_epoch, args.limit_train_batches)
    original, *rows = report.rows
    per_budget = {}
    for row in rows:
        budget = row["max_encoder_params"]
        study = optuna.load_study(study_name=report.study_names[budget], storage=report.study_storage)
        top = search_result(study, "val_acc", "maximize").top(args.recover_top_k)
        per_budget[f"{budget:.2f}"] = {
            "test_acc": row["test_acc"],
            "encoder_params": row["encoder_params"],
            "arch": json.loads((report.export_paths[budget] / "arch.json").read_text())["arch"],
            "candidate_params": [t.user_attrs["encoder_params"] for t in top],
            "final_params": row["encoder_params"],
        }
    record = {
        "budgets": budgets,
        "seconds": seconds,
        "supernet_full_test_acc": original["test_acc"],
        "full_encoder_params": original["encoder_params"],
        "supernet_steps": args.epochs * steps_per_epoch,
        "recover_steps": args.recover_steps if args.recover_steps is not None else max(1, steps_per_epoch // 4),
        "final_steps": args.recover_final_steps if args.recover_final_steps is not None else steps_per_epoch,
        "per_budget": per_budget,
        "run_dir": str(run_dir),
    }
    record_path.write_text(json.dumps(record, indent=2))
    log(f"one supernet, seed {seed}: {record}")
    return record


def shared_compute(record: dict, full: float, mean_student: float) -> float:
    """The one-supernet run's compute for all its budgets: the supernet once, recovery per budget."""
    supernet = training_compute({**record, "candidate_params": [], "final_steps": 0}, full, mean_student)
    return supernet + sum(
        training_compute({**record, **budget, "supernet_steps": 0}, full, mean_student)
        for budget in record["per_budget"].values()
    )


def shared_table(records: dict, budgets: list[float], seeds: list[int], full: float, mean_student: float) -> str:
    """Producing every budget: one supernet vs one pruning run per budget (test accuracy, compute)."""
    shared = [records["shared"][s] for s in seeds]
    lines = [
        "| budget | one supernet for all budgets | its own supernet per budget | Torch-Pruning + FT | arch (seed 0) |",
        "|---|---|---|---|---|",
    ]
    for budget in budgets:
        key = f"{budget:.2f}"
        own = [records["ours"][(s, budget)]["test_acc"] for s in seeds if (s, budget) in records["ours"]]
        prune = [records["prune"][(s, budget)]["test_acc"] for s in seeds if (s, budget) in records["prune"]]
        lines.append(
            f"| {key} | {spread([r['per_budget'][key]['test_acc'] for r in shared])} "
            f"| {spread(own) if own else '-'} | {spread(prune) if prune else '-'} "
            f"| {shared[0]['per_budget'][key]['arch']} "
            f"({100 * shared[0]['per_budget'][key]['encoder_params'] / full:.1f}%) |"
        )
    one = statistics.fmean(shared_compute(r, full, mean_student) for r in shared)
    pruning = [
        sum(records["prune"][(s, b)]["compute"] for b in budgets)
        for s in seeds
        if all((s, b) in records["prune"] for b in budgets)
    ]
    total = f"{statistics.fmean(pruning) / (3 * full):.0f}" if pruning else "-"
    lines += [
        "",
        f"Compute for all {len(budgets)} budgets, in full-model training steps: one supernet {one / (3 * full):.0f}; "
        f"one Torch-Pruning run per budget (each at the compute of its own-supernet run) {total}.",
    ]
    return "\n".join(lines)


def training_compute(record: dict, full: float, mean_student: float) -> float:
    """Ours at one budget, in parameter-passes (see the module docstring)."""
    supernet = record["supernet_steps"] * 3 * (full + mean_student)
    recovery = sum(record["recover_steps"] * (full + 3 * p) for p in record["candidate_params"])
    final = record.get("final_steps", 0) * (full + 3 * record["final_params"]) if record.get("final_steps") else 0.0
    return supernet + recovery + final


def run_prune(out: Path, splits: dict, tokenizer: Any, budget: float, compute: float, args, seed: int) -> dict:
    from transformers import AutoModelForSequenceClassification

    record_path = out / f"prune_s{seed}_{budget:.2f}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    L.seed_everything(seed, verbose=False)
    datamodule = TextDataModule(tokenizer, splits["train"], splits["validation"], splits["test"], 64, 32, seed)
    model = load_with_new_head(AutoModelForSequenceClassification, minilm_model_dir(), num_labels=2)
    batches = list(itertools.islice(datamodule.train_dataloader(), 8))
    widths = prune_model(model, batches, budget, "taylor")
    params = dense_encoder_params(model)
    steps = max(1, round(compute / (3 * params)))
    log(f"prune seed {seed} budget {budget}: {widths}, {params:,} encoder params; fine-tuning {steps} steps")
    module = TextClassifier(model.train(), 2, lr=args.lr)
    seconds = fine_tune_steps(module, datamodule, steps)
    record = {
        "budget": budget,
        **widths,
        "encoder_params": params,
        "steps": steps,
        "train_s": seconds,
        "compute": compute,
        "test_acc": evaluate_accuracy(module.model, datamodule.test_dataloader()),
    }
    record_path.write_text(json.dumps(record, indent=2))
    log(f"prune seed {seed} budget {budget}: {record}")
    return record


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def table(records: dict, budgets: list[float], seeds: list[int]) -> str:
    reference = [records["reference"][s]["test_acc"] for s in seeds]
    ref = statistics.fmean(reference)
    lines = [
        f"reference (full fine-tune): test acc {spread(reference)} (mean ± half-range over seeds {seeds})",
        "",
        "| budget | ours: compress (% of ref) | ours without recovery | Torch-Pruning + FT, equal compute (% of ref) "
        "| ours - TP per seed | compute (full-model steps) | TP FT steps | ours arch (seed 0) | TP widths |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in budgets:
        ours = [records["ours"][(s, budget)] for s in seeds]
        prune = [records["prune"][(s, budget)] for s in seeds]
        acc = [r["test_acc"] for r in ours]
        tp = [r["test_acc"] for r in prune]
        full = ours[0]["full_encoder_params"]
        diffs = " / ".join(f"{100 * (a - b):+.2f}" for a, b in zip(acc, tp))
        lines.append(
            f"| {budget:.2f} | {spread(acc)} ({100 * statistics.fmean(acc) / ref:.1f}%) "
            f"| {spread([r['test_acc_no_recovery'] for r in ours])} "
            f"| {spread(tp)} ({100 * statistics.fmean(tp) / ref:.1f}%) | {diffs} "
            f"| {statistics.fmean(p['compute'] for p in prune) / (3 * full):.0f} "
            f"| {statistics.fmean(p['steps'] for p in prune):.0f} "
            f"| {ours[0]['arch']} ({100 * ours[0]['encoder_params'] / full:.1f}%) "
            f"| heads {prune[0]['heads']} ffn {prune[0]['ffn']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nas_runs/compress_equal_compute"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.75, 0.5, 0.33])
    parser.add_argument("--max-fit", type=int, default=4000, help="training examples (of ~8.9k)")
    parser.add_argument("--max-val", type=int, default=500, help="validation examples (of ~1k)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--recover-top-k", type=int, default=3)
    parser.add_argument("--recover-steps", type=int, default=None, help="default: a quarter of an epoch")
    parser.add_argument("--recover-final-steps", type=int, default=None, help="default: one epoch")
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument(
        "--label-weight", type=float, default=None, help="recovery's weight of the label loss (default: compress's)"
    )
    parser.add_argument("--recover-rank-by", choices=["metric", "distillation"], default="distillation")
    space = parser.add_mutually_exclusive_group()
    space.add_argument("--stock-config", dest="stock_config", action="store_true", default=True)
    space.add_argument(
        "--allow-custom-config", dest="stock_config", action="store_false", help="also shrink heads (global)"
    )
    parser.add_argument(
        "--one-supernet", action="store_true", help="also one compress run for all --budgets (one supernet)"
    )
    parser.add_argument("--limit-train-batches", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="pipeline check: tiny data, numbers meaningless")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_fit, args.max_val, args.trials, args.seeds = 256, 64, 3, args.seeds[:1]
        args.recover_top_k, args.recover_steps, args.recover_final_steps = 2, 2, 2
        args.out = args.out.with_name(args.out.name + "_quick")
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.max_fit, args.max_val)
    if args.quick:
        splits["test"] = (splits["test"][0][:128], splits["test"][1][:128])
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
    pretrained = load_with_new_head(AutoModelForSequenceClassification, minilm_model_dir(), num_labels=2)
    full = dense_encoder_params(pretrained)
    records: dict[str, dict] = {"reference": {}, "ours": {}, "prune": {}, "shared": {}}
    for seed in args.seeds:
        records["reference"][seed] = run_reference(args.out, splits, tokenizer, args, seed)
        if args.one_supernet:
            records["shared"][seed] = run_ours_shared(args.out, splits, args.budgets, args, seed)
        for budget in args.budgets:
            ours = run_ours(args.out, splits, budget, args, seed)
            compute = training_compute(ours, full, mean_student_params(pretrained, budget, args.stock_config))
            records["ours"][(seed, budget)] = ours
            records["prune"][(seed, budget)] = run_prune(args.out, splits, tokenizer, budget, compute, args, seed)
    print(table(records, args.budgets, args.seeds))
    if args.one_supernet:
        print()
        largest = mean_student_params(pretrained, max(args.budgets), args.stock_config)
        print(shared_table(records, args.budgets, args.seeds, full, largest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
