"""``OneShotSearch``: after fit, search the trained supernet in an Optuna study and export the best."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_nas._jobs import Console, dashboard_hint, interactive, module_load_instructions
from lightning_nas.callbacks._quiet import QUIET_TRAINER, quiet_lightning, quiet_optuna
from lightning_nas.callbacks._supernet import find_supernet_callback
from lightning_nas.dashboard import ARTIFACT_DIR
from lightning_nas.export._files import check_target
from lightning_nas.export.module import export_subnet, load_subnet
from lightning_nas.inputs import call_model
from lightning_nas.samplers import is_rejection
from lightning_nas.search import (
    COSTS,
    SearchResult,
    TorchmetricsEvaluator,
    check_direction,
    check_feasible,
    check_search_study,
    cost_functions,
    format_cost,
    guess_direction,
    limits_from,
    one_shot_search,
    resolve_limits,
    search_descriptor,
    single_process_metrics,
)
from lightning_nas.space import Arch
from lightning_nas.supernet import Supernet

__all__ = ["LoggedMetricEvaluator", "OneShotSearch"]

log = logging.getLogger(__name__)


class LoggedMetricEvaluator:
    """Scores a sub-network with a metric the LightningModule logs in ``validation_step``.

    Each evaluation runs the user's own validation loop in a separate, quiet ``Trainer`` on the
    given dataloaders, after recalibrating batch-norm statistics for the sub-network (restored
    afterwards).
    """

    def __init__(
        self,
        supernet: Supernet,
        pl_module: L.LightningModule,
        metric: str,
        dataloaders: Any,
        calibration: Iterable[Any] | None = None,
        forward: Callable[[Any, Any], Any] = call_model,
        calibration_batches: int = 64,
        accelerator: Any = "auto",
        precision: Any = None,
    ) -> None:
        self.supernet = supernet
        self.pl_module = pl_module
        self.metric = metric
        self.dataloaders = dataloaders
        self.calibration = calibration
        self.forward = forward
        self.calibration_batches = calibration_batches
        self.accelerator = accelerator
        self.precision = precision

    def __call__(self, arch: Arch) -> float:
        with self.supernet.use(arch), self.supernet.batchnorm_snapshot():
            if self.calibration is not None:
                self.supernet.recalibrate_batchnorm(self.calibration, self.forward, self.calibration_batches)
            return validated_metric(
                self.pl_module, self.dataloaders, self.metric, accelerator=self.accelerator, precision=self.precision
            )


def validated_metric(
    pl_module: L.LightningModule, dataloaders: Any, metric: str, *, accelerator: Any = "auto", precision: Any = None
) -> float:
    """``metric`` as ``pl_module.validation_step`` logs it on ``dataloaders``, in a quiet one-device Trainer.

    Lightning's banners and tips stay off (one Trainer per evaluated model); the module's own
    trainer (if it is being fitted) is restored afterwards.
    """
    previous_trainer = pl_module._trainer
    try:
        with quiet_lightning(), single_process_metrics(pl_module):
            trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, **QUIET_TRAINER)
            results = trainer.validate(pl_module, dataloaders=dataloaders, verbose=False)
    finally:
        pl_module.trainer = previous_trainer
    if metric not in results[0]:
        raise MisconfigurationException(
            f"the metric {metric!r} was not logged by validation_step; logged: {sorted(results[0])}"
        )
    return float(results[0][metric])


class _TrialLines:
    """An Optuna callback printing one line per finished trial, for output without a terminal."""

    def __init__(self, n_trials: int) -> None:
        self.console = Console("search")
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(not is_rejection(t) for t in study.get_trials(deepcopy=False, states=_FINISHED))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            names = study.metric_names or [f"value{i}" for i in range(len(trial.values))]
            shown = ", ".join(
                f"{name} {trial.values[0]:.4f}" if i == 0 else f"{name} {format_cost(name, value)}"
                for i, (name, value) in enumerate(zip(names, trial.values))
            )
        elif trial.state == optuna.trial.TrialState.PRUNED:
            shown = "over budget, not evaluated" if "constraints" in trial.user_attrs else "pruned"
        else:
            shown = trial.state.name.lower()
        self.console.say(f"trial {trial.number} ({done} of {self.n_trials} done): {shown}")


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class OneShotSearch(L.Callback):
    """Search the sub-networks of the trained supernet when fit ends, then export the best one.

    Needs a :class:`~lightning_nas.callbacks.SupernetCallback` in the same trainer. Each trial
    evaluates a sub-network with inherited weights on the validation data: either a metric the
    LightningModule logs (``metric="val_acc"``) through its own ``validation_step``, or a
    torchmetrics ``Metric`` computed on the model outputs. The study goes to a SQLite file under
    the trainer's log directory by default (open it with ``lightning-nas dashboard <file>``) and
    is resumed if it exists.

    While it searches, Optuna's per-trial INFO logs are off (the global Optuna verbosity is restored
    afterwards); progress shows as Optuna's bar on a terminal, or a line per trial otherwise. At the
    end it prints a summary: the Pareto front, the best architecture, where the export went, how
    to load it and how to open the study.

    Args:
        metric: Logged metric name, or a torchmetrics ``Metric`` instance.
        direction: ``"maximize"`` or ``"minimize"``; by default minimise names containing
            ``loss`` or ``error`` and maximise the rest.
        objectives: Costs minimised alongside the metric: ``"params"``, ``"flops"``, ``"latency"``.
        n_trials: Finished trials wanted in the study.
        max_params: Hard limit on parameters; an int, or a float in (0, 1] as a fraction of the
            full network's parameters.
        max_flops: Hard limit on FLOPs (int, or fraction of the full network's FLOPs).
        max_latency: Hard limit on the measured latency of the extracted model, milliseconds.
        costs: Extra cost functions ``arch -> float`` by name, usable as objectives and limits;
            added to the :class:`~lightning_nas.callbacks.SupernetCallback`'s ``costs``.
        limits: Hard limits on any cost by name. Without any limit here (``max_*`` or
            ``limits``), the search takes the ``SupernetCallback``'s ``limits``, so the budget is
            configured once; ``limits={}`` searches without limits.
        storage: Optuna storage URL, file path or object (see
            :func:`~lightning_nas.search.open_storage`); default ``sqlite:///<log dir>/nas.db``.
            The storage and an existing study in it are checked at setup, before training: a
            study of another space, metric, objectives, limits or supernet is refused.
        study_name: Name of the study.
        sampler: Any Optuna sampler (default NSGA-II).
        export_dir: Where the best sub-network goes (default ``<log dir>/best_subnet``);
            ``False`` to skip the export.
        calibration_batches: Training batches used to recalibrate batch norm per sub-network.
        forward: ``forward(model, batch)`` used for calibration and torchmetrics evaluation.
        exporter: ``exporter(supernet, directory, arch, inputs=batches, forward=forward) ->
            directory`` writes the best sub-network and verifies it against the supernet on the
            example input and ``verify_batches`` validation batches; default
            :func:`~lightning_nas.export.export_subnet` (safetensors + ``torch.export`` program,
            no pickle; ``functools.partial(export_subnet, pickle=True)`` adds a pickled
            ``model.pt``), e.g. :func:`~lightning_nas.export.hf.export_hf` for Hugging Face models.
        loader: Reads an export back (``loader(directory) -> model``), to hand the reloaded
            model to the caller as :attr:`best_model`; default: the safetensors weights into your
            own model class (:func:`~lightning_nas.export.load_subnet`).
        verify_batches: Validation batches the exporter checks the export on.
        seed: Seed of the default sampler.
        verbose: Print the summary when the search ends (:meth:`summary`).
        progress: Show the search's progress: Optuna's bar when the trainer has a progress bar
            and stderr is a terminal, else a line per trial on stdout.
        heartbeat_interval: Heartbeat of the trials on a database URL, in seconds (Optuna's);
            a trial of a dead worker is failed after ``grace_period`` and retried.
        grace_period: See ``heartbeat_interval`` (default twice the interval).

    Attributes:
        result: The :class:`~lightning_nas.search.SearchResult` after the search.
        best_model: The exported best sub-network, reloaded from disk.
        export_path: Directory of the export.
    """

    def __init__(
        self,
        metric: str | Any = "val_acc",
        direction: str | None = None,
        objectives: Sequence[str] = ("params",),
        n_trials: int = 50,
        max_params: float | None = None,
        max_flops: float | None = None,
        max_latency: float | None = None,
        costs: Mapping[str, Callable[[Arch], float]] | None = None,
        limits: Mapping[str, float] | None = None,
        storage: str | optuna.storages.BaseStorage | None = None,
        study_name: str = "one-shot-search",
        sampler: optuna.samplers.BaseSampler | None = None,
        export_dir: str | Path | bool | None = None,
        calibration_batches: int = 64,
        forward: Callable[[Any, Any], Any] = call_model,
        exporter: Callable[..., Any] = export_subnet,
        loader: Callable[[Path], Any] | None = None,
        verify_batches: int = 2,
        seed: int = 0,
        verbose: bool = True,
        progress: bool = True,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
    ) -> None:
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"n_trials must be an int >= 1, got {n_trials!r}")
        self.metric = metric
        self.metric_name = metric if isinstance(metric, str) else type(metric).__name__.lower()
        self.direction = check_direction(direction) if direction is not None else guess_direction(self.metric_name)
        self.objectives = tuple(objectives)
        self.n_trials = n_trials
        inherit = max_params is None and max_flops is None and max_latency is None and limits is None
        # None: the SupernetCallback's limits, resolved at setup.
        self.limits_requested: dict[str, float] | None = (
            None if inherit else limits_from(max_params, max_flops, max_latency, limits)
        )
        self.costs = dict(costs or {})
        known = [*COSTS, *self.costs]
        unknown = [o for o in (*self.objectives, *(self.limits_requested or {})) if o not in known]
        if unknown:
            raise ValueError(f"unknown objectives or limits {unknown}; choose from {known}")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.storage = storage
        self.study_name = study_name
        self.sampler = sampler
        self.export_dir = export_dir
        self.calibration_batches = calibration_batches
        self.forward = forward
        self.exporter = exporter
        self.loader = loader
        self.verify_batches = verify_batches
        self.seed = seed
        self.verbose = verbose
        self.progress = progress
        self.storage_used: str | optuna.storages.BaseStorage | None = None
        self.limits_used: dict[str, float] = {}
        self.result: SearchResult | None = None
        self.best_model: Any = None
        self.export_path: Path | None = None
        self._metric_checked = False

    @property
    def state_key(self) -> str:
        # The study names a search, so several (one per budget, say) can share a Trainer and its checkpoints.
        return self._generate_state_key(study_name=self.study_name)

    # checks before training -------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        callback = find_supernet_callback(trainer)
        supernet = callback.build(pl_module)
        self._inherit(callback)
        try:
            limits = self.limits(supernet)
            check_feasible(supernet, limits, cost_functions(supernet, extra=self.costs))
            descriptor = search_descriptor(supernet, self.metric_name, self.direction, self.objectives, limits)
            check_search_study(self._storage_url(trainer, create=False), self.study_name, descriptor)
            if self.export_dir is not False:
                check_target(self.export_target(trainer))
        except (ValueError, TypeError) as err:
            raise MisconfigurationException(f"OneShotSearch: {err}") from err

    def _inherit(self, callback: Any) -> None:
        """Costs and, unless given here, limits of the SupernetCallback: configured once."""
        self.costs = {**callback.costs, **self.costs}
        if self.limits_requested is None:
            self.limits_requested = limits_from(limits=callback.limits)

    def limits(self, supernet: Supernet) -> dict[str, float]:
        """The absolute limits, with fractions resolved against the full network."""
        return resolve_limits(supernet, self.limits_requested or {})

    def _storage_url(self, trainer: L.Trainer, create: bool = True) -> Any:
        if self.storage is not None:
            return self.storage
        root = self.default_root(trainer)
        if create:
            root.mkdir(parents=True, exist_ok=True)
        elif not (root / "nas.db").exists():
            return None  # nothing to resume, nothing to check
        return f"sqlite:///{(root / 'nas.db').resolve()}"

    def state_dict(self) -> dict[str, Any]:
        """The search's settings as plain data (``lightning-nas search CKPT`` defaults to them)."""
        return {
            "config": {
                "metric": self.metric_name if isinstance(self.metric, str) else None,
                "direction": self.direction,
                "objectives": list(self.objectives),
                "limits": self.limits_requested,
                "n_trials": self.n_trials,
                "study_name": self.study_name,
                "storage": self.storage if isinstance(self.storage, str) else None,
                "seed": self.seed,
            }
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Settings come from the constructor; the saved ones serve ``lightning-nas search``."""

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_metric_logged(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_metric_logged(trainer)

    def _check_metric_logged(self, trainer: L.Trainer) -> None:
        if self._metric_checked or not isinstance(self.metric, str):
            return
        self._metric_checked = True
        if self.metric not in trainer.callback_metrics:
            raise MisconfigurationException(
                f"OneShotSearch(metric={self.metric!r}): validation_step never logged it; logged metrics: "
                f"{sorted(trainer.callback_metrics)}"
            )

    # the search -------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted or not trainer.is_global_zero:
            return
        self.run(trainer, pl_module)

    def default_root(self, trainer: L.Trainer) -> Path:
        return Path(trainer.log_dir or trainer.default_root_dir)

    def export_target(self, trainer: L.Trainer) -> Path:
        """Where the best sub-network goes: ``export_dir``, or ``<log dir>/best_subnet``."""
        return Path(self.export_dir) if self.export_dir else self.default_root(trainer) / "best_subnet"

    def run(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        val_dataloaders: Any = None,
        calibration: Iterable[Any] | None = None,
    ) -> SearchResult:
        """Run the search now (also usable on a supernet trained earlier, e.g. loaded from a
        checkpoint: pass its ``val_dataloaders`` and ``calibration`` batches then)."""
        callback = find_supernet_callback(trainer)
        supernet = callback.build(pl_module)
        self._inherit(callback)
        storage = self._storage_url(trainer)
        pl_module.to(trainer.strategy.root_device)
        val_loaders = val_dataloaders if val_dataloaders is not None else trainer.val_dataloaders
        if val_loaders is None and trainer.datamodule is not None:
            val_loaders = trainer.datamodule.val_dataloader()
        if val_loaders is None:
            raise MisconfigurationException("OneShotSearch needs validation data (val_dataloaders or a datamodule)")
        if calibration is None:
            calibration = trainer.train_dataloader
        if calibration is None and trainer.datamodule is not None:
            calibration = trainer.datamodule.train_dataloader()
        if isinstance(self.metric, str):
            evaluate: Callable[[Arch], float] = LoggedMetricEvaluator(
                supernet,
                pl_module,
                self.metric,
                val_loaders,
                calibration,
                self.forward,
                self.calibration_batches,
                accelerator=trainer.accelerator,
                precision=trainer.precision,
            )
        else:
            evaluate = TorchmetricsEvaluator(
                supernet,
                self.metric,
                val_loaders,
                calibration,
                self.forward,
                calibration_batches=self.calibration_batches,
            )
        limits = self.limits(supernet)
        self.storage_used = storage
        self.limits_used = limits
        log.info(
            "one-shot search of %s architectures, study %r in %s", f"{supernet.space.size:,}", self.study_name, storage
        )
        bar = self.progress and trainer.progress_bar_callback is not None and interactive(sys.stderr)
        lines = [_TrialLines(self.n_trials)] if self.progress and not bar else []
        with quiet_optuna(), quiet_lightning():
            self._search(supernet, evaluate, limits, storage, bar, lines)
        if self.result.best is not None and self.export_dir is not False:
            self.export_path = self.export_target(trainer)
            self.best_model = self.export(supernet, self.result.best_arch, calibration, self.export_path, val_loaders)
            self.result.study.set_user_attr("export_path", str(self.export_path))
            if isinstance(storage, str) and storage.startswith("sqlite:///"):
                self._upload_artifacts(storage, self.export_path)
        if self.verbose:
            print(self.summary(), flush=True)
        return self.result

    def _search(
        self,
        supernet: Supernet,
        evaluate: Callable[[Arch], float],
        limits: Mapping[str, float | None],
        storage: Any,
        bar: bool,
        callbacks: Sequence[Any],
    ) -> None:
        self.result = one_shot_search(
            supernet,
            evaluate,
            n_trials=self.n_trials,
            metric_name=self.metric_name,
            direction=self.direction,
            objectives=self.objectives,
            costs=self.costs,
            limits=limits,
            storage=storage,
            study_name=self.study_name,
            sampler=self.sampler,
            seed=self.seed,
            show_progress_bar=bar,
            callbacks=callbacks,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
        )

    def summary(self) -> str:
        """What the search found, as printed at its end: Pareto front, best architecture, export, how to
        load it and how to open the study."""
        if self.result is None:
            return "OneShotSearch: no search has run"
        budget = ", ".join(
            f"{name} <= {limit:,.6g}"
            + (
                f" x full = {self.limits_used.get(name, limit):,.0f}"
                if self.limits_used.get(name, limit) != limit
                else ""
            )
            for name, limit in (self.limits_requested or {}).items()
            if limit is not None
        )
        lines = [
            f"\nPareto front of study {self.study_name!r}"
            + (f" (feasible: {budget})" if budget else "")
            + ", best first",
            self.result.table(),
        ]
        if self.result.best is None:
            lines.append("no sub-network met the limits: raise n_trials or the limits")
        else:
            lines.append(f"Best architecture (trial {self.result.best.number}): {self.result.best_arch}")
        if self.export_path is not None:
            lines.append(f"Exported to {self.export_path} (verified against the supernet)")
            load = self._load_instructions(self.export_path)
            if load:
                lines.append("Load it in Python:")
                lines.extend(f"  {line}" for line in load)
        if self.storage_used is not None:
            lines.append(dashboard_hint(self.storage_used))
        return "\n".join(lines)

    def _load_instructions(self, path: Path) -> list[str]:
        if self.loader is not None:
            name = getattr(self.loader, "__name__", None)
            module = getattr(self.loader, "__module__", None)
            if name is None or module is None or "<" in f"{module}.{name}":
                return []
            return [f"from {module} import {name}; model = {name}({str(path.absolute())!r})"]
        exporter = getattr(self.exporter, "func", self.exporter)  # a functools.partial of export_subnet too
        return module_load_instructions(path) if exporter is export_subnet else []

    def _upload_artifacts(self, storage: str, path: Path) -> None:
        """Attach the exported files to the study, so optuna-dashboard offers them for download.

        (A finished trial cannot take attributes any more, hence the study.)
        """
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        folder = Path(storage[len("sqlite:///") :]).parent / ARTIFACT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(folder))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for file in sorted(p for p in path.iterdir() if p.is_file()):
                upload_artifact(study_or_trial=self.result.study, file_path=str(file), artifact_store=store)

    def export(
        self,
        supernet: Supernet,
        arch: Arch,
        calibration: Iterable[Any] | None,
        path: Path,
        validation: Any = None,
    ) -> Any:
        """Write ``arch`` with recalibrated batch norm through the exporter, and return it reloaded.

        The exporter verifies the files against the supernet on ``verify_batches`` batches of
        ``validation`` (a data loader or a list of them) besides the example input.
        """
        loader = validation[0] if isinstance(validation, (list, tuple)) and validation else validation
        batches = list(itertools.islice(loader, self.verify_batches)) if loader is not None else []
        with supernet.use(arch), supernet.batchnorm_snapshot():
            if calibration is not None:
                supernet.recalibrate_batchnorm(calibration, self.forward, self.calibration_batches)
            path = Path(self.exporter(supernet, path, arch, inputs=batches, forward=self.forward))
        summary = {
            "study": self.study_name,
            "metric": self.metric_name,
            "trial": self.result.best.number,
            "values": self.result.best.values,
        }
        tmp = path / ".search.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path / "search.json")  # never a half-written summary next to a verified export
        return load_subnet(path, supernet) if self.loader is None else self.loader(path)
