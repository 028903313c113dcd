"""Joint NAS + hyperparameter search from a YAML config (jsonargparse), for any LightningModule.

LightningCLI drives one ``fit``; a joint search trains one model per trial, so this script parses
the same ``class_path`` / ``init_args`` blocks and hands them to :func:`lightning_nas.hpo.joint_search`.
Each trial cuts ``model`` down to a sampled architecture (:func:`lightning_nas.hpo.at_arch` on its
``submodule``), sets the sampled hyperparameters (``model.<init arg>`` or ``data.<init arg>``, each an
Optuna distribution) and trains it; the pruner stops trials that fall behind.

Run:
    python recipes/joint_search.py --config recipes/joint_digits.yaml
    python recipes/joint_search.py --config recipes/joint_digits.yaml --n_trials=4 --trainer.max_epochs=2
    python recipes/joint_search.py --print_config     # every option, with its default
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from optuna.distributions import BaseDistribution

from lightning_nas import Supernet
from lightning_nas.hpo import at_arch, joint_search

_PARTS = ("model", "data")


def _parts_parser() -> ArgumentParser:
    """The ``model`` and ``data`` blocks alone: instantiated afresh for every trial."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    return parser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__, default_config_files=[])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    parser.add_argument("--submodule", type=str | None, default="model", help="the searched network inside model")
    parser.add_argument(
        "--hyperparameters",
        type=dict[str, BaseDistribution],
        default={},
        help="'model.<init arg>' or 'data.<init arg>' -> an Optuna distribution (class_path + init_args)",
    )
    parser.add_argument("--monitor", type=str, default="val_acc", help="metric logged in validation_step")
    parser.add_argument("--objectives", type=list[str], default=[], help="costs minimised too: params, flops")
    parser.add_argument("--max_params", type=float | None, default=None, help="skip larger networks")
    parser.add_argument("--n_trials", type=int, default=20, help="trials wanted in the study, in total")
    parser.add_argument("--trainer", type=dict[str, Any], default={}, help="Trainer arguments of every trial")
    parser.add_argument("--pruner", type=optuna.pruners.BasePruner | None, default=None)
    parser.add_argument("--storage", type=str | None, default=None, help="default: sqlite:///<out>/joint.db")
    parser.add_argument("--out", type=str, default="nas_runs/joint", help="directory of the default study")
    parser.add_argument("--study_name", type=str, default="joint-search")
    parser.add_argument("--seed", type=int, default=0, help="give each parallel worker its own seed")
    return parser


def check_hyperparameters(config: Namespace, names: Mapping[str, Any]) -> None:
    """Refuse, before any training, a hyperparameter that names no init argument of ``model`` or ``data``."""
    for name in names:
        part, _, arg = name.partition(".")
        if part not in _PARTS or not arg:
            raise SystemExit(f"hyperparameter {name!r}: name it 'model.<init arg>' or 'data.<init arg>'")
        init_args = config[part].get("init_args") or Namespace()
        if arg not in init_args:
            raise SystemExit(f"hyperparameter {name!r}: {config[part].class_path} has no init argument {arg!r}")


def run(args: list[str] | None = None) -> optuna.Study:
    """Parse ``args`` (default: the command line), run the search and print its best trials."""
    parser = build_parser()
    config = parser.parse_args(args)
    check_hyperparameters(config, config.hyperparameters)
    init = parser.instantiate(config)  # distributions, pruner and the full model
    hyperparameters = dict(init.hyperparameters)
    parts = _parts_parser()
    blocks = Namespace(model=config.model, data=config.data)

    def instantiate(values: Mapping[str, Any]) -> tuple[L.LightningModule, L.LightningDataModule]:
        trial_blocks = copy.deepcopy(blocks)
        for name, value in values.items():
            part, _, arg = name.partition(".")
            trial_blocks[part].init_args[arg] = value
        built = parts.instantiate(trial_blocks)
        return built.model, built.data

    full = init.model
    network = full.get_submodule(config.submodule) if config.submodule else full
    space = Supernet(network, example_input=full.example_input_array).space

    def build(arch: dict[str, int], hparams: dict[str, Any]) -> tuple[L.LightningModule, L.LightningDataModule]:
        module, data = instantiate(hparams)
        return at_arch(module, arch, submodule=config.submodule), data

    storage = config.storage
    if storage is None:
        out = Path(config.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{out / 'joint.db'}"
    result = joint_search(
        build,
        space,
        hyperparameters,
        n_trials=config.n_trials,
        monitor=config.monitor,
        objectives=config.objectives,
        max_params=config.max_params,
        trainer_kwargs=config.trainer,
        storage=storage,
        study_name=config.study_name,
        pruner=init.pruner,
        seed=config.seed,
    )
    states = Counter(t.state.name.lower() for t in result.study.trials)
    print(f"{len(space)} architecture dimensions, {space.size:,} architectures; trials: {dict(states)}")
    if result.best is None:
        print("no trial completed")
    else:
        print("Best trials\n" + result.table())
        print(f"Open the study: lightning-nas dashboard {storage}")
    return result.study


if __name__ == "__main__":
    run()
