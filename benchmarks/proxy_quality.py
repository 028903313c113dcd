"""How well do zero-cost / sub-one-shot proxies rank sub-networks? Digits, plain PyTorch, CPU.

Samples sub-networks of a small ``DigitsCNN`` supernet, trains each one *stand-alone* (extracted,
every module re-initialised with ``reset_parameters()``, the same fixed budget for all) to get its
test accuracy, and scores each one with every proxy of ``lightning_nas.proxies.PROXIES`` inside
the supernet (inherited weights): on the freshly initialised supernet (zero-shot) and after a
SiGeo-style warm-up on a fraction of the training data (sub-one-shot). Reports the Spearman rank
correlation (and Kendall tau) of each proxy with the stand-alone accuracy, plus the one-shot
reference: the sub-network's validation accuracy with inherited weights after batch-norm
recalibration.

Usage::

    python benchmarks/proxy_quality.py                  # the default run recorded in RESULTS.md
    python benchmarks/proxy_quality.py --archs 8 --epochs 1 --no-record   # quick smoke run

The table and the exact command go to ``benchmarks/RESULTS.md`` under ``## Proxy quality (digits)``
(only that section is rewritten) unless ``--no-record`` is given.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from torch import nn
from torch.utils.data import DataLoader

from lightning_nas import Arch, Supernet
from lightning_nas.demo import DigitsCNN, DigitsDataModule
from lightning_nas.proxies import PROXIES, compute_proxy, sigeo_terms, warmup

SECTION = "## Proxy quality (digits)"
RESULTS = Path(__file__).with_name("RESULTS.md")
ONE_SHOT = "one-shot val acc"
# SiGeo's three terms on their own, to see which one carries (or spoils) the ranking.
TERMS = {"sigeo: zico term": "zico", "sigeo: fisher-rao term": "fisher_rao", "sigeo: -loss term": "loss"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=50, help="number of distinct sub-networks")
    parser.add_argument("--width", type=int, default=16, help="DigitsCNN width of the supernet")
    parser.add_argument("--blocks", type=int, default=2, help="DigitsCNN residual blocks per stage")
    parser.add_argument("--hidden", type=int, default=64, help="DigitsCNN hidden units of the head")
    parser.add_argument("--epochs", type=int, default=6, help="stand-alone training epochs (same for all)")
    parser.add_argument(
        "--standalone-seeds",
        type=int,
        default=3,
        help="stand-alone runs averaged per arch (with 2+, the seed-to-seed rank correlation is reported)",
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (stand-alone and warm-up)")
    parser.add_argument("--proxy-batches", type=int, default=4, help="batches each proxy sees")
    parser.add_argument("--proxy-batch-size", type=int, default=64)
    parser.add_argument("--warmup-fractions", type=float, nargs="*", default=[0.1, 0.2], help="warm-up data fractions")
    parser.add_argument("--warmup-epochs", type=int, default=10, help="passes over the warm-up subset")
    parser.add_argument("--warmup-batch-size", type=int, default=16)
    parser.add_argument("--proxies", nargs="*", default=list(PROXIES), choices=list(PROXIES))
    parser.add_argument("--seed", type=int, default=0)
    # One thread: these convolutions are too small to gain from two, and spinning OpenMP threads
    # waste most of the CPU when the cores are shared with other jobs.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to record the table in")
    parser.add_argument("--no-record", action="store_true", help="print only, do not touch RESULTS.md")
    return parser.parse_args(argv)


def make_supernet(args: argparse.Namespace) -> Supernet:
    """The same initial supernet every time (seeded), so settings differ only by the warm-up."""
    torch.manual_seed(args.seed)
    model = DigitsCNN(width=args.width, blocks=args.blocks, hidden=args.hidden)
    return Supernet(model, example_input=torch.zeros(1, 1, 8, 8))


def sample_archs(supernet: Supernet, count: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    archs: list[Arch] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    while len(archs) < count:
        arch = supernet.sample_arch(rng)
        key = tuple(sorted(arch.items()))
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    return archs


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / total


def standalone_accuracy(
    supernet: Supernet, arch: Arch, data: DigitsDataModule, args: argparse.Namespace, seed: int
) -> float:
    """Test accuracy of ``arch`` trained from scratch with the fixed budget."""
    torch.manual_seed(seed)
    model = supernet.extract(arch)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loader = DataLoader(data.train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    # A one-cycle schedule ends at a small learning rate: with a constant one the final accuracy
    # depends on the seed as much as on the architecture.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader))
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return accuracy(model, data.test_dataloader())


def one_shot_accuracy(supernet: Supernet, arch: Arch, data: DigitsDataModule) -> float:
    """Validation accuracy with inherited weights, batch-norm statistics recalibrated for ``arch``."""
    with supernet.use(arch), supernet.batchnorm_snapshot():
        supernet.recalibrate_batchnorm(DataLoader(data.train_set, batch_size=64), max_batches=8)
        return accuracy(supernet.model, data.val_dataloader())


def score_setting(
    supernet: Supernet, archs: list[Arch], batches: list, data: DigitsDataModule, proxies: list[str]
) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {name: [] for name in [*proxies, *TERMS, ONE_SHOT]}
    for arch in archs:
        for name in proxies:
            scores[name].append(compute_proxy(name, supernet, batches, arch=arch))
        terms = sigeo_terms(supernet, batches, arch=arch)
        for row, field in TERMS.items():
            value = getattr(terms, field)
            scores[row].append(-value if field == "loss" else value)
        scores[ONE_SHOT].append(one_shot_accuracy(supernet, arch, data))
    return scores


def correlations(scores: list[float], target: list[float]) -> tuple[float, float]:
    if not all(math.isfinite(s) for s in scores) or len(set(scores)) < 2:
        return math.nan, math.nan
    return float(spearmanr(scores, target).statistic), float(kendalltau(scores, target).statistic)


def fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:+.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start, start_cpu = time.perf_counter(), time.process_time()
    data = DigitsDataModule(batch_size=64, seed=args.seed)
    data.setup()
    supernet = make_supernet(args)
    archs = sample_archs(supernet, args.archs, args.seed)
    print(supernet.describe().splitlines()[-2], f"; {len(archs)} sampled sub-networks", flush=True)

    t0 = time.perf_counter()
    runs = np.zeros((len(archs), args.standalone_seeds))
    for i, arch in enumerate(archs):
        for s in range(args.standalone_seeds):
            runs[i, s] = standalone_accuracy(supernet, arch, data, args, seed=1000 * s + i)
        print(
            f"  stand-alone {i + 1:>3}/{len(archs)}: {supernet.num_params(arch):>7,} params, "
            f"test acc {' '.join(f'{a:.3f}' for a in runs[i])}",
            flush=True,
        )
    accs = [float(a) for a in runs.mean(axis=1)]
    # How reproducible the ground truth itself is: no proxy can be expected to rank better.
    noise = correlations(list(runs[:, 0]), list(runs[:, 1])) if args.standalone_seeds > 1 else None
    standalone_s = time.perf_counter() - t0

    proxy_loader = DataLoader(
        data.train_set,
        batch_size=args.proxy_batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    batches = [batch for _, batch in zip(range(args.proxy_batches), proxy_loader)]

    settings: dict[str, dict[str, list[float]]] = {}
    timings: dict[str, float] = {}
    warmup_notes: list[str] = []
    t0 = time.perf_counter()
    settings["no warm-up"] = score_setting(supernet, archs, batches, data, args.proxies)
    timings["no warm-up"] = time.perf_counter() - t0
    for fraction in args.warmup_fractions:
        label = f"warm-up {fraction:.0%}"
        t0 = time.perf_counter()
        warm = make_supernet(args)
        loader = DataLoader(
            data.train_set,
            batch_size=args.warmup_batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(args.seed + 2),
        )
        result = warmup(warm, loader, fraction=fraction, epochs=args.warmup_epochs, lr=args.lr, seed=args.seed)
        first, last = result.losses[: result.num_batches], result.losses[-result.num_batches :]
        warmup_notes.append(
            f"{label}: {result.num_batches} batches x {args.warmup_epochs} passes = {result.steps} steps, "
            f"training loss {np.mean(first):.2f} (first pass) -> {np.mean(last):.2f} (last pass)"
        )
        print(f"  {warmup_notes[-1]}", flush=True)
        settings[label] = score_setting(warm, archs, batches, data, args.proxies)
        timings[label] = time.perf_counter() - t0

    rows = [*args.proxies, *TERMS, ONE_SHOT]
    header = ["proxy", *settings]
    table = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    rho_of: dict[tuple[str, str], float] = {}
    for name in rows:
        cells = []
        for label, scores in settings.items():
            rho, tau = correlations(scores[name], accs)
            rho_of[(label, name)] = rho
            cells.append(f"{fmt(rho)} ({fmt(tau)})")
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    beating = [
        f"{label}: " + (", ".join(n for n in args.proxies if rho_of[(label, n)] > rho_of[(label, "params")]) or "none")
        for label in settings
    ]
    total_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    command = shlex.join(["python", "benchmarks/proxy_quality.py", *(sys.argv[1:] if argv is None else argv)])
    summary = [
        f"Supernet `DigitsCNN(width={args.width}, blocks={args.blocks}, hidden={args.hidden})` "
        f"({supernet.space.size:,} sub-networks), {len(archs)} distinct uniformly sampled sub-networks "
        f"({min(supernet.num_params(a) for a in archs):,}-{max(supernet.num_params(a) for a in archs):,} params).",
        f"Ground truth: stand-alone test accuracy (270 test images) after {args.epochs} epoch(s) of AdamW "
        f"(one-cycle, max lr {args.lr}, batch 64) from a fresh init, mean of {args.standalone_seeds} seed(s); "
        f"range {min(accs):.3f}-{max(accs):.3f}, median {float(np.median(accs)):.3f}"
        + (
            f"; seed 0 vs seed 1 of the ground truth itself: Spearman {fmt(noise[0])}, Kendall {fmt(noise[1])}."
            if noise is not None
            else "."
        ),
        f"Proxies: {args.proxy_batches} training batches of {args.proxy_batch_size}, scored inside the supernet "
        f"(inherited weights). Warm-up: SPOS (one uniform sub-network per step), AdamW lr {args.lr}, "
        f"batch {args.warmup_batch_size}, {args.warmup_epochs} passes over the fraction of the 1,257 training images. "
        "SiGeo uses (1, 1, 0) without and (1, 50, 1) with warm-up. " + "; ".join(warmup_notes) + ".",
        f"`{ONE_SHOT}`: reference, not a proxy: validation accuracy with inherited weights after "
        "batch-norm recalibration (8 batches).",
        "Cells: Spearman rho (Kendall tau) against the stand-alone accuracy. Higher Spearman than "
        "the #params baseline: " + "; ".join(beating) + ".",
        f"Wall time {total_s:.0f} s, CPU time {cpu_s:.0f} s, {args.threads} torch thread(s) "
        f"on {os.cpu_count()} cores shared with other jobs (stand-alone training "
        f"{standalone_s:.0f} s; warm-up and scoring per setting: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"); torch {torch.__version__}, Python {platform.python_version()}.",
    ]
    print()
    print("\n".join(table))
    print()
    print("\n".join(summary))
    if not args.no_record:
        record(args.results, command, table, summary)
        print(f"\nrecorded in {args.results}")


def record(path: Path, command: str, table: list[str], summary: list[str]) -> None:
    """Rewrite this benchmark's section of ``path``, leaving every other section untouched."""
    body = "\n".join([SECTION, "", "```", command, "```", "", *table, "", *(f"- {line}" for line in summary), ""])
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    if SECTION in lines:
        begin = lines.index(SECTION)
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:begin] + body.splitlines() + ([""] + lines[end:] if end < len(lines) else [])
    else:
        new = lines + [""] + body.splitlines()
    path.write_text("\n".join(new).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
