"""The ``lightning-nas`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from lightning_nas.demo import run_demo

    run_demo(
        args.out, epochs=args.epochs, n_trials=args.trials, max_params=args.max_params, width=args.width, seed=args.seed
    )
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lightning_nas.compress import compress

    model_dir = args.model_dir
    if model_dir == "minilm":
        from lightning_nas.datasets import minilm_model_dir

        model_dir = minilm_model_dir()
    report = compress(
        model_dir,
        args.out,
        dataset=args.data,
        max_encoder_params=args.max_params,
        epochs=args.epochs,
        n_trials=args.trials,
        max_length=args.max_length,
        batch_size=args.batch_size,
        lr=args.lr,
        max_train=args.max_train,
        strategy=args.strategy,
        per_layer=args.per_layer,
        elastic_hidden=args.elastic_hidden,
        elastic_depth=args.elastic_depth,
        seed=args.seed,
    )
    print("\n" + report.table())
    print(f"\nExported to {report.export_path}: AutoModelForSequenceClassification.from_pretrained(...) loads it")
    print(f"Open the study: optuna-dashboard {report.study_storage}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from lightning_nas.dashboard import run_dashboard

    run_dashboard(args.storage, host=args.host, port=args.port, artifact_dir=args.artifact_dir)
    return 0


def _search(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_nas.callbacks import search_checkpoint

    try:
        search = search_checkpoint(
            args.checkpoint,
            storage=args.storage,
            study_name=args.study,
            n_trials=args.n_trials,
            metric=args.metric,
            direction=args.direction,
            objectives=None if args.objectives is None else [o for o in args.objectives.split(",") if o],
            max_params=args.max_params,
            max_flops=args.max_flops,
            max_latency=args.max_latency,
            module_class=args.model_class,
            export_dir=args.export,
            seed=args.seed,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
        )
    except (ValueError, TypeError, MisconfigurationException) as err:
        print(f"lightning-nas search: {err}", file=sys.stderr)
        return 2
    print(search.result.table())
    if search.export_path is not None:
        print(f"\nExported to {search.export_path}")
    return 0


def _add_search_command(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="search the supernet of a checkpoint; start it in several processes or machines to share one study",
        description="One worker of a one-shot search over the supernet saved in a Lightning checkpoint. Workers "
        "on the same --storage and --study share the trial budget, draw different architectures, retry the "
        "trials of dead workers and never evaluate an architecture twice.",
    )
    search.add_argument("checkpoint", help="Lightning checkpoint of a fit with SupernetCallback (e.g. last.ckpt)")
    search.add_argument(
        "--storage",
        default=None,
        help="postgresql://user@host/db (many machines), a journal file *.log (one machine), a *.db SQLite file; "
        "default: nas.db next to the checkpoint",
    )
    search.add_argument("--study", default=None, help="study name (default: the one saved in the checkpoint)")
    search.add_argument("--n-trials", type=int, default=None, help="trials of the whole study (all workers together)")
    search.add_argument("--metric", default=None, help="metric logged by validation_step (default: the saved one)")
    search.add_argument("--direction", default=None, choices=["maximize", "minimize"])
    search.add_argument("--objectives", default=None, help="comma-separated costs: params,flops,latency")
    search.add_argument("--max-params", type=float, default=None, help="parameter limit (a fraction if <= 1)")
    search.add_argument("--max-flops", type=float, default=None, help="FLOPs limit (a fraction if <= 1)")
    search.add_argument("--max-latency", type=float, default=None, help="latency limit of the extracted model, ms")
    search.add_argument("--model-class", default=None, help="LightningModule class path (default: the saved one)")
    search.add_argument("--export", default=None, help="export the best sub-network to this directory at the end")
    search.add_argument("--seed", type=int, default=None)
    search.add_argument("--heartbeat-interval", type=int, default=10, help="seconds, database storages")
    search.add_argument("--grace-period", type=int, default=None, help="seconds without heartbeat before a retry")
    search.set_defaults(run=_search)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-nas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="train a CNN supernet on bundled digits, search it, export the best sub-network"
    )
    demo.add_argument("--out", default="nas_runs/demo", help="output directory (study, export)")
    demo.add_argument("--epochs", type=int, default=8, help="supernet training epochs")
    demo.add_argument("--trials", type=int, default=40, help="Optuna trials of the one-shot search")
    demo.add_argument("--max-params", type=float, default=0.25, help="parameter budget, fraction of the full net")
    demo.add_argument("--width", type=int, default=32, help="channels of the full network's first stage")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    compress = commands.add_parser(
        "compress", help="fine-tune a pretrained HF encoder as a supernet, search it, export a smaller model"
    )
    compress.add_argument(
        "model_dir", help="Hugging Face model directory, or 'minilm' for the bundled all-MiniLM-L6-v2"
    )
    compress.add_argument("--task", default="sequence-classification", choices=["sequence-classification"])
    compress.add_argument("--data", default="rotten_tomatoes", help="bundled dataset name")
    compress.add_argument("--max-params", type=float, default=0.5, help="budget: fraction of the encoder's parameters")
    compress.add_argument("--out", default="nas_runs/compress", help="output directory (study, export)")
    compress.add_argument("--epochs", type=int, default=1)
    compress.add_argument("--trials", type=int, default=30)
    compress.add_argument("--max-length", type=int, default=64)
    compress.add_argument("--batch-size", type=int, default=32)
    compress.add_argument("--lr", type=float, default=1e-4)
    compress.add_argument("--max-train", type=int, default=None, help="use at most this many training texts")
    compress.add_argument("--strategy", default="instatune", choices=["instatune", "sandwich", "spos"])
    compress.add_argument("--per-layer", action="store_true", help="one heads/FFN width per layer (larger space)")
    compress.add_argument("--elastic-hidden", action="store_true", help="also shrink the hidden size")
    compress.add_argument("--elastic-depth", action="store_true", help="also drop layers")
    compress.add_argument("--seed", type=int, default=0)
    compress.set_defaults(run=_compress)

    dashboard = commands.add_parser("dashboard", help="open a study storage in optuna-dashboard")
    dashboard.add_argument(
        "storage", nargs="?", default="nas_runs/demo/nas.db", help="storage URL, or path of a nas.db file / its folder"
    )
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.add_argument("--artifact-dir", default=None, help="artifact folder (default: next to the nas.db)")
    dashboard.set_defaults(run=_dashboard)
    _add_search_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
