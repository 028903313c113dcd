"""How well does a trained supernet rank its sub-networks? One-shot vs stand-alone Kendall tau, CPU.

The task is built so that the ranking is measurable: a 3-hidden-layer tanh MLP on scikit-learn's
digits (64 pixels, 10 classes) whose hidden widths range over 1..16. Capacity then limits the
accuracy (a width-1 bottleneck caps it near 30 %, widths >= 8 reach ~90 %), so stand-alone
accuracies spread widely and two training seeds of the same architecture agree: the
seed-to-seed Kendall tau of stand-alone training (the *ceiling* no ranking method can be
expected to beat) is measured first and reported. The accuracy is not a function of the
parameter count (a narrow layer anywhere is a bottleneck, whatever the others cost), so the
#params and FLOPs baselines are beatable.

Measured, on ``--archs`` sub-networks stratified by parameter count (sorted by params, split
into equal strata, one drawn per stratum):

1. the ceiling: tau between stand-alone seed 0 and seed 1; the ground truth is the mean
   stand-alone accuracy over ``--standalone-seeds`` seeds;
2. for each training strategy (sandwich, spos, instatune, attentive BestUp / WorstUp), trained
   with :class:`~lightning_nas.callbacks.SupernetCallback` in a real ``Trainer.fit`` at *equal
   training compute* (the same number of sub-network forward+backward passes; a forward without
   gradient, as AttentiveNAS's candidate scoring, counts 1/3), for ``--supernet-seeds`` seeds:
   tau of the inherited-weight accuracy with the ground truth, mean +- std over the seeds;
3. the #params and FLOPs baselines;
4. the hypervolume (accuracy vs params) of the Pareto front of a short one-shot search
   (:func:`~lightning_nas.one_shot_search`, NSGA-II, on the validation split) on each supernet,
   with the front's inherited-weight accuracy measured on the test split;
5. SiGeo without and with a 10 % / 50 % warm-up against ZiCo and #params, term by term (issue 11 item 3).

Usage::

    python benchmarks/ranking.py                   # the run recorded in RESULTS.md
    python benchmarks/ranking.py --archs 6 --epochs 2 --budgets 120 --search-trials 6 --no-record  # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import platform
import random
import shlex
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import nn
from torch.utils.data import DataLoader

from lightning_nas import Arch, Supernet, one_shot_search
from lightning_nas._optuna import hypervolume
from lightning_nas.callbacks import SupernetCallback
from lightning_nas.demo import DigitsDataModule
from lightning_nas.proxies import SIGEO_WARMED_UP_WEIGHTS, SIGEO_ZERO_SHOT_WEIGHTS, sigeo_terms, warmup, zico
from lightning_nas.strategies import Attentive, InstaTune, Sandwich, SinglePath, TrainingStrategy

SECTION = "## Ranking: one-shot vs stand-alone (digits MLP, issue 11 items 1, 3, 4)"
RESULTS = Path(__file__).with_name("RESULTS.md")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--choices", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16], help="hidden widths")
    parser.add_argument("--layers", type=int, default=3, help="hidden layers")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="tanh")
    parser.add_argument("--archs", type=int, default=32, help="sub-networks, stratified by params")
    parser.add_argument("--epochs", type=int, default=15, help="stand-alone training epochs")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam max learning rate (one-cycle), all training")
    parser.add_argument("--standalone-seeds", type=int, default=2)
    parser.add_argument(
        "--strategies", nargs="+", default=["sandwich", "spos", "instatune", "bestup", "worstup"], help="strategies"
    )
    parser.add_argument("--supernet-seeds", type=int, default=2)
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[4800, 1200],
        help="sub-network forward+backward passes per supernet training (one run per budget)",
    )
    parser.add_argument("--search-trials", type=int, default=40, help="one-shot search trials per supernet")
    parser.add_argument("--hv-strategies", nargs="+", default=["sandwich", "bestup", "worstup"])
    parser.add_argument("--warmup-fractions", type=float, nargs="+", default=[0.1, 0.5], help="SiGeo warm-ups")
    parser.add_argument("--warmup-epochs", type=int, default=10, help="passes over the warm-up subset")
    parser.add_argument("--proxy-batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true", help="print only, do not touch RESULTS.md")
    return parser.parse_args(argv)


# the task ---------------------------------------------------------------------------------------
def mlp(widths: tuple[int, ...], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    size = 64
    for width in widths:
        layers += [nn.Linear(size, width), activation()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 10))


class Data:
    """The digits splits as tensors: train (1,257), validation (270), test (270)."""

    def __init__(self, seed: int) -> None:
        module = DigitsDataModule(seed=seed)
        module.setup()
        self.train = module.train_set
        self.val_x, self.val_y = module.val_set.tensors
        self.test_x, self.test_y = module.test_set.tensors
        # The ranking is measured on validation + test (540 images): nothing is selected on them.
        self.eval_x = torch.cat([self.val_x, self.test_x])
        self.eval_y = torch.cat([self.val_y, self.test_y])

    def loader(self, seed: int) -> DataLoader:
        return DataLoader(self.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        value = float((model(x).argmax(dim=1) == y).float().mean())
    model.train(was)
    return value


def standalone(widths: tuple[int, ...], data: Data, args: argparse.Namespace, seed: int) -> float:
    """Accuracy of the architecture trained alone from a fresh initialisation (fixed budget)."""
    torch.manual_seed(seed)
    model = mlp(widths, ACTIVATIONS[args.activation])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = data.loader(seed)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader))
    for _ in range(args.epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return accuracy(model, data.eval_x, data.eval_y)


# supernet training ------------------------------------------------------------------------------
class Classifier(L.LightningModule):
    """An ordinary LightningModule: cross-entropy, Adam with a one-cycle schedule over ``steps``."""

    def __init__(self, model: nn.Module, lr: float, steps: int) -> None:
        super().__init__()
        self.model, self.lr, self.steps = model, lr, steps
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def label_loss(output: torch.Tensor, batch) -> torch.Tensor:
    return F.cross_entropy(output, batch[1])


def make_strategy(name: str) -> tuple[TrainingStrategy, float]:
    """The strategy and its compute per step, in sub-network forward+backward passes."""
    if name == "sandwich":
        return Sandwich(num_random=2), 4.0
    if name == "spos":
        return SinglePath(), 1.0
    if name == "instatune":
        return InstaTune(), 2.0
    if name in ("bestup", "worstup"):
        # BestUp-3 / WorstUp-3 on FLOPs with the label loss, as the AttentiveNAS paper: the max
        # net, 2 attentive nets (3 candidates each, scored without gradients) and the min net.
        strategy = Attentive(name, k=3, num_attentive=2, cost="flops", criterion=label_loss)
        return strategy, 4.0 + 2 * 3 / 3.0
    raise ValueError(f"unknown strategy {name!r}")


def space_of(args: argparse.Namespace, net: nn.Module) -> dict[str, list[int]]:
    linear = [name for name, m in net.named_children() if isinstance(m, nn.Linear)][:-1]
    return {name: list(args.choices) for name in linear}


def train_supernet(
    name: str, budget: int, data: Data, args: argparse.Namespace, seed: int
) -> tuple[Supernet, float, int]:
    strategy, per_step = make_strategy(name)
    steps = max(1, round(budget / per_step))
    torch.manual_seed(seed)
    net = mlp((max(args.choices),) * args.layers, ACTIVATIONS[args.activation])
    callback = SupernetCallback(strategy=strategy, module="model", space=space_of(args, net), seed=seed)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[callback],
    )
    start = time.perf_counter()
    trainer.fit(Classifier(net, args.lr, steps), data.loader(seed))
    return callback.supernet, time.perf_counter() - start, steps


def widths_of(supernet: Supernet, arch: Arch) -> tuple[int, ...]:
    return tuple(arch[name] for name in sorted(arch, key=int))


def stratified(supernet: Supernet, count: int, seed: int) -> list[Arch]:
    """``count`` architectures: all sorted by params, split into equal strata, one drawn from each."""
    names = list(supernet.space)
    archs = [dict(zip(names, values)) for values in itertools.product(*(supernet.space[n].choices for n in names))]
    archs.sort(key=lambda a: (supernet.num_params(a), sorted(a.items())))
    rng = random.Random(seed)
    return [archs[rng.choice(list(stratum))] for stratum in np.array_split(np.arange(len(archs)), count)]


def tau(x: list[float], y: list[float]) -> float:
    if len(set(x)) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


def mean_std(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "nan"
    return f"{np.mean(values):+.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:+.3f}"


def front_hypervolume(supernet: Supernet, data: Data, args: argparse.Namespace, seed: int) -> tuple[float, int]:
    """Hypervolume of (1 - test accuracy, params / full params) over a short search's front."""

    def evaluate(arch: Arch) -> float:
        with supernet.use(arch):
            return accuracy(supernet.model, data.val_x, data.val_y)

    result = one_shot_search(supernet, evaluate, n_trials=args.search_trials, objectives=("params",), seed=seed)
    full = supernet.num_params(supernet.max_arch())
    points = []
    for trial in result.front:
        arch = dict(trial.user_attrs["arch"])
        with supernet.use(arch):
            test = accuracy(supernet.model, data.test_x, data.test_y)
        points.append([1.0 - test, supernet.num_params(arch) / full])
    return hypervolume(np.array(points), np.array([1.0, 1.0])), len(points)


# the run ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*(does not have many workers|isinstance\\(treespec|LeafSpec|is experimental).*")
    start, start_cpu = time.perf_counter(), time.process_time()
    data = Data(args.seed)
    full = mlp((max(args.choices),) * args.layers, ACTIVATIONS[args.activation])
    reference = Supernet(full, example_input=torch.zeros(1, 1, 8, 8), space=space_of(args, full))
    archs = stratified(reference, args.archs, args.seed)
    params = [float(reference.num_params(a)) for a in archs]
    flops = [float(reference.flops(a)) for a in archs]
    print(f"{reference.space.size} sub-networks; {len(archs)} stratified by params", flush=True)

    t0 = time.perf_counter()
    runs = np.array(
        [
            [standalone(widths_of(reference, a), data, args, 1000 * s + i) for s in range(args.standalone_seeds)]
            for i, a in enumerate(archs)
        ]
    )
    truth = [float(v) for v in runs.mean(axis=1)]
    ceiling = tau(list(runs[:, 0]), list(runs[:, 1]))
    standalone_s = time.perf_counter() - t0
    print(f"stand-alone: accuracy {min(truth):.3f}-{max(truth):.3f}, ceiling tau {ceiling:+.3f} ({standalone_s:.0f} s)")

    # One-shot ranking of each strategy at each budget; the front's hypervolume at the first budget.
    rows: dict[tuple[int, str], list[float]] = {}
    timings: dict[tuple[int, str], float] = {}
    steps_of: dict[tuple[int, str], int] = {}
    hv: dict[str, list[float]] = {}
    front_sizes: dict[str, list[int]] = {}
    for budget in args.budgets:
        for name in args.strategies:
            key = (budget, name)
            rows[key] = []
            for seed in range(args.supernet_seeds):
                supernet, seconds, steps = train_supernet(name, budget, data, args, seed)
                timings[key] = timings.get(key, 0.0) + seconds
                steps_of[key] = steps
                one_shot = []
                for arch in archs:
                    with supernet.use(arch):
                        one_shot.append(accuracy(supernet.model, data.eval_x, data.eval_y))
                rows[key].append(tau(one_shot, truth))
                if budget == args.budgets[0] and name in args.hv_strategies:
                    volume, size = front_hypervolume(supernet, data, args, seed)
                    hv.setdefault(name, []).append(volume)
                    front_sizes.setdefault(name, []).append(size)
                print(
                    f"  {budget} passes, {name} seed {seed}: tau {rows[key][-1]:+.3f} ({seconds:.0f} s, {steps} steps)",
                    flush=True,
                )

    # SiGeo (issue 11 item 3): the same archs scored in a freshly initialised supernet and after warm-ups.
    proxy_rows: dict[str, dict[str, float]] = {}
    spreads: dict[str, str] = {}
    proxy_loader = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(7))
    batches = [b for _, b in zip(range(args.proxy_batches), proxy_loader)]
    t0 = time.perf_counter()
    warm_notes = []
    for fraction in [0.0, *args.warmup_fractions]:
        setting = f"warm-up {fraction:.0%}" if fraction else "no warm-up"
        torch.manual_seed(args.seed)
        net = mlp((max(args.choices),) * args.layers, ACTIVATIONS[args.activation])
        supernet = Supernet(net, example_input=torch.zeros(1, 1, 8, 8), space=space_of(args, net))
        if fraction:
            loader = DataLoader(data.train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
            result = warmup(supernet, loader, fraction=fraction, epochs=args.warmup_epochs, lr=args.lr, seed=args.seed)
            warm_notes.append(
                f"{setting}: {result.num_batches} batches of 16 x {args.warmup_epochs} passes = {result.steps} "
                f"SPOS steps, loss {np.mean(result.losses[: result.num_batches]):.2f} -> "
                f"{np.mean(result.losses[-result.num_batches :]):.2f}"
            )
        weights = SIGEO_WARMED_UP_WEIGHTS if fraction else SIGEO_ZERO_SHOT_WEIGHTS
        terms = [sigeo_terms(supernet, batches, arch=a) for a in archs]
        scores = {
            "sigeo, the setting's λ (paper)": [t.score(weights) for t in terms],
            f"sigeo, λ = {SIGEO_ZERO_SHOT_WEIGHTS}": [t.score(SIGEO_ZERO_SHOT_WEIGHTS) for t in terms],
            f"sigeo, λ = {SIGEO_WARMED_UP_WEIGHTS}": [t.score(SIGEO_WARMED_UP_WEIGHTS) for t in terms],
            "zico": [zico(supernet, batches, arch=a) for a in archs],
            "term: zico (Bessel std)": [t.zico for t in terms],
            "term: fisher-rao": [t.fisher_rao for t in terms],
            "term: -loss": [-t.loss for t in terms],
            "#params": params,
        }
        proxy_rows[setting] = {k: tau(v, truth) for k, v in scores.items()}
        # How much each weighted term moves the score across the archs: the largest one decides the ranking.
        spreads[setting] = ", ".join(
            f"{label} {np.std([weight * value(t) for t in terms]):.2f}"
            for label, weight, value in (
                ("zico", weights[0], lambda t: t.zico),
                ("fisher-rao", weights[1], lambda t: t.fisher_rao),
                ("loss", weights[2], lambda t: t.loss),
            )
        )
    proxy_s = time.perf_counter() - t0

    # tables
    last = args.budgets[0]
    best = max(args.strategies, key=lambda n: np.nanmean(rows[(last, n)]))
    table = [
        "| ranking by | " + " | ".join(f"tau, {b} passes" for b in args.budgets) + " | steps | training s |",
        "|---|" + "---:|" * (len(args.budgets) + 2),
        f"| ceiling: stand-alone seed 0 vs seed 1 | {ceiling:+.3f} |" + " |" * (len(args.budgets) + 1),
        *(
            f"| one-shot, {n} | "
            + " | ".join(mean_std(rows[(b, n)]) for b in args.budgets)
            + f" | {' / '.join(str(steps_of[(b, n)]) for b in args.budgets)}"
            + f" | {' / '.join(f'{timings[(b, n)]:.0f}' for b in args.budgets)} |"
            for n in args.strategies
        ),
        f"| #params | {tau(params, truth):+.3f} |" + " |" * (len(args.budgets) + 1),
        f"| FLOPs | {tau(flops, truth):+.3f} |" + " |" * (len(args.budgets) + 1),
    ]
    hv_table = [
        f"| supernet ({last} passes) | hypervolume (test acc vs params) | front size |",
        "|---|---:|---:|",
        *(f"| {n} | {mean_std(hv[n])} | {np.mean(front_sizes[n]):.1f} |" for n in args.hv_strategies if hv.get(n)),
    ]
    settings = list(proxy_rows)
    proxy_table = [
        "| proxy | " + " | ".join(settings) + " |",
        "|---|" + "---:|" * len(settings),
        *(
            f"| {k} | " + " | ".join(f"{proxy_rows[s].get(k, math.nan):+.3f}" for s in settings) + " |"
            for k in dict.fromkeys(k for s in settings for k in proxy_rows[s])
        ),
    ]
    total_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    command = shlex.join(["python", "benchmarks/ranking.py", *(sys.argv[1:] if argv is None else argv)])
    summary = [
        f"Task: {args.layers}-hidden-layer {args.activation} MLP on digits, hidden widths {args.choices} "
        f"({reference.space.size} sub-networks); {len(archs)} sub-networks stratified by params "
        f"({int(min(params))}-{int(max(params))} params).",
        f"Ground truth: stand-alone accuracy on validation + test (540 images) after {args.epochs} epochs of Adam "
        f"(one-cycle, max lr {args.lr}, batch 64), mean of {args.standalone_seeds} seeds; range "
        f"{min(truth):.3f}-{max(truth):.3f}. Ceiling: Kendall tau between seed 0 and seed 1 = {ceiling:+.3f}.",
        f"Supernets: each strategy trained with SupernetCallback in Trainer.fit for {args.budgets} sub-network "
        "forward+backward passes (sandwich 4/step, spos 1, instatune 2, BestUp-3 / WorstUp-3 4 + 6 no-grad "
        "scoring forwards counted 1/3 each = 6/step), Adam one-cycle max lr "
        f"{args.lr}, batch 64; {args.supernet_seeds} seeds, mean ± std. Best at {last} passes: {best} "
        f"({np.nanmean(rows[(last, best)]):+.3f} = {np.nanmean(rows[(last, best)]) / ceiling:.2f} × ceiling).",
        f"Hypervolume: NSGA-II one-shot search ({args.search_trials} trials, validation accuracy vs params) on each "
        "supernet; its front's inherited-weight *test* accuracy; objectives (1 − acc, params / full params), "
        "reference (1, 1).",
        f"SiGeo: {args.proxy_batches} batches of 64, inside a freshly initialised supernet (paper's λ (1, 1, 0)) and "
        f"after a warm-up (paper's λ (1, 50, 1)); " + "; ".join(warm_notes) + ". Spread (std over the archs) of "
        "each λ-weighted term: " + "; ".join(f"{k}: {v}" for k, v in spreads.items()) + ".",
        f"Wall time {total_s:.0f} s, CPU {cpu_s:.0f} s (stand-alone {standalone_s:.0f} s, proxies {proxy_s:.0f} s), "
        f"1 torch thread, {os.cpu_count()} cores shared with other jobs; torch {torch.__version__}, "
        f"Python {platform.python_version()}.",
    ]
    print()
    for block in (table, hv_table, proxy_table):
        print("\n".join(block))
        print()
    print("\n".join(summary))
    if not args.no_record:
        record(args.results, command, [table, hv_table, proxy_table], summary)
        print(f"\nrecorded in {args.results}")


def record(path: Path, command: str, tables: list[list[str]], summary: list[str]) -> None:
    """Rewrite this benchmark's section of ``path``, leaving every other section untouched."""
    body = [SECTION, "", "```", command, "```", ""]
    for block in tables:
        body += [*block, ""]
    body += [f"- {line}" for line in summary]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    if SECTION in lines:
        begin = lines.index(SECTION)
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:begin] + body + ([""] + lines[end:] if end < len(lines) else [])
    else:
        new = lines + [""] + body
    path.write_text("\n".join(new).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
