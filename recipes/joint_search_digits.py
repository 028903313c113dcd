"""Joint NAS + hyperparameter search on scikit-learn's bundled digits, with early pruning.

Every trial samples a sub-network of ``DigitsCNN`` (widths, depths, kernel sizes), a learning rate,
a weight decay and a batch size. It trains that network from scratch with Lightning and reports
``val_acc`` after each epoch, so the pruner stops trials that fall behind. The study goes to a
SQLite file (open it with ``optuna-dashboard sqlite:///nas_runs/joint/joint.db``), and running
the command again resumes it.

Run:
    python recipes/joint_search_digits.py --trials 30 --epochs 8 --pruner hyperband
    python recipes/joint_search_digits.py --objectives params            # accuracy vs parameters
    # several workers: the same command in each terminal, one journal file, one seed per worker
    python recipes/joint_search_digits.py --journal nas_runs/joint/journal.log --seed 1
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from lightning_nas import Supernet
from lightning_nas.demo import DigitsClassifier, DigitsCNN, DigitsDataModule
from lightning_nas.hpo import CostAwarePruner, at_arch, joint_search

HYPERPARAMETERS = {
    "lr": FloatDistribution(1e-4, 3e-2, log=True),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
}


def make_pruner(name: str, epochs: int, multi_objective: bool) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if multi_objective:
        if name != "cost-aware":
            raise SystemExit(f"--pruner {name} cannot prune an accuracy-vs-cost study; use cost-aware or none")
        return CostAwarePruner(n_min_trials=3, n_warmup_steps=1)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    raise SystemExit(f"--pruner {name} needs --objectives (it is for accuracy-vs-cost studies)")


def batches(text: str) -> int | float:
    """Lightning's meaning: an int is a number of batches, a float a fraction of the epoch."""
    return float(text) if "." in text else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30, help="trials wanted in the study, in total")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of a trial that is not pruned")
    parser.add_argument("--width", type=int, default=32, help="channels of the largest network")
    parser.add_argument(
        "--pruner",
        choices=["median", "hyperband", "cost-aware", "none"],
        default=None,
        help="default: hyperband for one objective, cost-aware with --objectives",
    )
    parser.add_argument(
        "--objectives",
        nargs="*",
        default=[],
        choices=["params", "flops"],
        help="costs minimised alongside val_acc (a multi-objective study)",
    )
    parser.add_argument("--max-params", type=float, default=None, help="skip networks with more parameters")
    parser.add_argument("--limit-train-batches", type=batches, default=1.0, help="fraction or number per epoch")
    parser.add_argument("--out", default="nas_runs/joint", help="directory of the SQLite study")
    parser.add_argument("--journal", default=None, help="journal file instead of SQLite, for parallel workers")
    parser.add_argument("--study-name", default="joint-digits")
    parser.add_argument("--seed", type=int, default=0, help="give each parallel worker its own seed")
    args = parser.parse_args()

    example = torch.zeros(1, 1, 8, 8)
    model_kwargs = {"width": args.width, "hidden": 2 * args.width, "blocks": 3}
    space = Supernet(DigitsCNN(**model_kwargs), example_input=example).space

    def build(arch: dict[str, int], hparams: dict[str, Any]) -> tuple[DigitsClassifier, DigitsDataModule]:
        module = DigitsClassifier(lr=hparams["lr"], weight_decay=hparams["weight_decay"], **model_kwargs)
        return at_arch(module, arch, submodule="model"), DigitsDataModule(hparams["batch_size"], seed=args.seed)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.journal:
        storage: Any = JournalStorage(JournalFileBackend(args.journal))
    else:
        storage = f"sqlite:///{out / 'joint.db'}"
    pruner_name = args.pruner or ("cost-aware" if args.objectives else "hyperband")
    result = joint_search(
        build,
        space,
        HYPERPARAMETERS,
        n_trials=args.trials,
        monitor="val_acc",
        objectives=args.objectives,
        max_params=args.max_params,
        trainer_kwargs={"max_epochs": args.epochs, "limit_train_batches": args.limit_train_batches},
        storage=storage,
        study_name=args.study_name,
        pruner=make_pruner(pruner_name, args.epochs, bool(args.objectives)),
        seed=args.seed,
    )
    states = Counter(t.state.name.lower() for t in result.study.trials)
    print(f"\n{len(space)} architecture dimensions, {space.size:,} architectures; trials: {dict(states)}")
    if result.best is None:
        print("no trial completed")
        return
    print("\nBest trials\n" + result.table())
    best = result.best
    print(f"\nBest: trial {best.number}, val_acc {best.values[0]:.4f}, {int(best.user_attrs['params']):,} params")
    print(
        "hyperparameters:",
        {k: round(v, 6) if isinstance(v, float) else v for k, v in best.user_attrs["hparams"].items()},
    )
    if not args.journal:
        print(f"Open the study: optuna-dashboard {storage}")


if __name__ == "__main__":
    main()
