"""Rebuild a trained supernet from a Lightning checkpoint alone, and search it (one of many workers)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_nas.callbacks._quiet import QUIET_TRAINER
from lightning_nas.callbacks._search import OneShotSearch
from lightning_nas.callbacks._supernet import SupernetCallback, dimension_from_data

__all__ = ["load_supernet_checkpoint", "search_checkpoint"]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _import(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {path!r}: {_first_line(err)}") from None


def _callback_state(checkpoint: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if isinstance(key, str) and key.startswith(name) and isinstance(state, Mapping) and "config" in state:
            return dict(state)
    return None


def load_supernet_checkpoint(
    checkpoint: str | os.PathLike, module_class: str | type[L.LightningModule] | None = None, map_location: Any = "cpu"
) -> tuple[L.LightningModule, SupernetCallback, dict[str, Any]]:
    """The LightningModule of a checkpoint, turned back into its trained supernet.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no pickle of user objects).
    The module class is imported by the path the :class:`SupernetCallback` recorded (or
    ``module_class``) and built from the saved hyperparameters; the callback is rebuilt from its
    saved :meth:`~SupernetCallback.configuration`, then the trained weights and the callback's
    state are loaded. Returns ``(module, callback, checkpoint)``; ``callback.supernet`` is ready.

    Example:
        >>> load_supernet_checkpoint("missing.ckpt")
        Traceback (most recent call last):
        ...
        ValueError: checkpoint missing.ckpt does not exist
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, or pickled objects
        raise ValueError(f"cannot read checkpoint {path}: {_first_line(err)}") from None
    state = _callback_state(data, "SupernetCallback") if isinstance(data, Mapping) else None
    if state is None:
        raise ValueError(f"checkpoint {path} has no SupernetCallback configuration (not saved by a supernet fit)")
    config = state["config"]
    if config.get("not_saved"):
        raise ValueError(
            f"checkpoint {path}: the supernet's {', '.join(config['not_saved'])} are not plain data and were not "
            "saved; rebuild the supernet in Python with the same SupernetCallback"
        )
    cls = module_class if isinstance(module_class, type) else _import(module_class or config.get("module_class") or "")
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"{cls!r} is not a LightningModule class")
    hparams = {k: v for k, v in (data.get("hyper_parameters") or {}).items() if k != "_instantiator"}
    try:
        module = cls(**hparams)
    except TypeError as err:
        raise ValueError(f"cannot build {cls.__name__} from the checkpoint's hyperparameters: {err}") from None
    dimensions = config.get("dimensions")
    callback = SupernetCallback(
        module=config.get("module"),
        space=config.get("space"),
        adapter=config.get("adapter"),
        adapter_options=config.get("adapter_options"),
        dimensions=None if dimensions is None else {n: dimension_from_data(d) for n, d in dimensions.items()},
        example_input=state.get("example_input"),
        limits=config.get("limits"),
        seed=state.get("seed", 0),
    )
    callback.build(module)
    try:
        module.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit {cls.__name__}: {_first_line(err)}") from None
    callback.load_state_dict(state)
    callback._classes = {key: config.get(key) for key in ("module_class", "datamodule_class")}
    return module, callback, data


def search_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    storage: Any = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    metric: str | None = None,
    direction: str | None = None,
    objectives: Sequence[str] | None = None,
    max_params: float | None = None,
    max_flops: float | None = None,
    max_latency: float | None = None,
    datamodule: L.LightningDataModule | None = None,
    module_class: str | type[L.LightningModule] | None = None,
    export_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    calibration_batches: int = 64,
    accelerator: str = "auto",
) -> OneShotSearch:
    """Search the supernet of a checkpoint: one worker of a study that many processes may share.

    Start the same call in several processes or on several machines with one ``storage`` (a
    PostgreSQL URL across machines, a journal file on one machine): the study's ``n_trials``
    is shared, workers draw different architectures, a dead worker's trial is retried, and
    nothing is evaluated twice (see :func:`~lightning_nas.search.one_shot_search`). Settings
    not given here default to the ``OneShotSearch`` saved in the checkpoint (metric, objectives,
    limits, trials, study name), then to the ``SupernetCallback``'s limits. The data come from
    ``datamodule`` or the datamodule class recorded in the checkpoint, built from its saved
    hyperparameters. Everything is checked before the first trial.

    Args:
        checkpoint: A Lightning checkpoint of a fit with a :class:`SupernetCallback`.
        storage: Optuna storage URL or path (default: ``nas.db`` next to the checkpoint).
        export_dir: Export the best sub-network there once the study is complete.

    Returns:
        The :class:`OneShotSearch`, with :attr:`~OneShotSearch.result`.
    """
    path = Path(checkpoint)
    module, callback, data = load_supernet_checkpoint(path, module_class)
    saved = (_callback_state(data, "OneShotSearch") or {}).get("config", {})
    metric = metric or saved.get("metric")
    if not metric:
        raise ValueError(f"checkpoint {path} records no search metric: give the metric (e.g. --metric val_acc)")
    if datamodule is None:
        class_name = callback._classes.get("datamodule_class")
        if not class_name:
            raise ValueError(f"checkpoint {path} records no datamodule: pass one (e.g. --datamodule pkg.DataModule)")
        datamodule = _import(class_name)(**(data.get("datamodule_hyper_parameters") or {}))
    limits: dict[str, float] | None = None
    if max_params is None and max_flops is None and max_latency is None and saved.get("limits") is not None:
        limits = saved["limits"]
    search = OneShotSearch(
        metric=metric,
        direction=direction or saved.get("direction"),
        objectives=tuple(objectives if objectives is not None else saved.get("objectives", ("params",))),
        n_trials=n_trials or saved.get("n_trials", 50),
        max_params=max_params,
        max_flops=max_flops,
        max_latency=max_latency,
        limits=limits,
        storage=storage or saved.get("storage") or f"sqlite:///{path.resolve().parent / 'nas.db'}",
        study_name=study_name or saved.get("study_name", "one-shot-search"),
        export_dir=Path(export_dir) if export_dir else False,
        calibration_batches=calibration_batches,
        seed=saved.get("seed", 0) if seed is None else seed,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        callbacks=[callback, search],
        default_root_dir=str(path.resolve().parent),
        **QUIET_TRAINER,
    )
    search.setup(trainer, module, "validate")  # the checks a fit runs before training
    datamodule.setup("fit")
    search.run(trainer, module, datamodule.val_dataloader(), datamodule.train_dataloader())
    return search
