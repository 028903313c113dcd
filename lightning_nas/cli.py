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


def _dashboard(args: argparse.Namespace) -> int:
    from lightning_nas.dashboard import run_dashboard

    run_dashboard(args.storage, host=args.host, port=args.port, artifact_dir=args.artifact_dir)
    return 0


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

    dashboard = commands.add_parser("dashboard", help="open a study storage in optuna-dashboard")
    dashboard.add_argument(
        "storage", nargs="?", default="nas_runs/demo/nas.db", help="storage URL, or path of a nas.db file / its folder"
    )
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.add_argument("--artifact-dir", default=None, help="artifact folder (default: next to the nas.db)")
    dashboard.set_defaults(run=_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
