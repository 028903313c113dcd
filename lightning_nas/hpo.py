"""Joint NAS + hyperparameter search: each Optuna trial picks an architecture and hyperparameters,
trains them with a real Lightning ``Trainer``, and is stopped early once it falls behind.

The pieces work in any Optuna code, and :func:`joint_search` ties them together:

- :class:`JointObjective`: an Optuna objective. It suggests an architecture from a
  :class:`~lightning_nas.SearchSpace` and hyperparameters from Optuna distributions, builds the
  LightningModule (and datamodule) with your ``build`` function, trains it and returns the
  validation metric, plus the model's costs in multi-objective studies.
- :class:`TrialPruning`: a Lightning callback that reports the monitored metric to the trial after
  every validation run and raises ``optuna.TrialPruned`` when the study's pruner says so.
- :class:`CostAwarePruner`: early stopping for accuracy-vs-cost studies, where Optuna's
  ``Trial.report`` is refused. A trial is stopped when, at the same step, it is worse than the
  completed trials that cost no more than it does. Such a trial is heading for the dominated part
  of the front.
- :func:`at_arch`: a freshly initialised model cut down to an architecture through a
  :class:`~lightning_nas.Supernet`, so that you write one model class for the whole space.

Parallel workers: run the same :func:`joint_search` call in several processes with one storage
and a different ``seed`` in each. On one machine or a shared file system, use a journal file
(``optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))``). Across
many machines, use an RDB server (PostgreSQL, MySQL). SQLite is fine for a single worker and for
optuna-dashboard. It also works for a few workers, but every write locks the whole file, so many
concurrent writers can fail with ``database is locked``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import lightning as L
import numpy as np
import optuna
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from lightning_nas.callbacks._quiet import QUIET_TRAINER, quiet_lightning
from lightning_nas.metrics import count_flops, count_params, measure_latency
from lightning_nas.search import (
    COSTS,
    SearchResult,
    check_direction,
    create_search_study,
    enforce_limits,
    guess_direction,
    limits_from,
    record_costs,
    search_result,
)
from lightning_nas.space import Arch, SearchSpace
from lightning_nas.supernet import Supernet

__all__ = [
    "INTERMEDIATE_VALUES",
    "CostAwarePruner",
    "JointObjective",
    "TrialPruning",
    "at_arch",
    "joint_search",
]

#: User attribute holding ``{step: value}`` of the monitored metric in multi-objective studies,
#: where Optuna does not store intermediate values.
INTERMEDIATE_VALUES = "intermediate_values"

Built = L.LightningModule | tuple[L.LightningModule, L.LightningDataModule | None]
Hyperparameters = Mapping[str, BaseDistribution] | Callable[[optuna.Trial], Mapping[str, Any]]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

_TRAINER_DEFAULTS = QUIET_TRAINER


def at_arch(
    module: ModuleT,
    arch: Mapping[str, int],
    submodule: str | None = None,
    example_input: Any = None,
    **supernet_options: Any,
) -> ModuleT:
    """Cut a freshly initialised model down to ``arch``, keeping the leading slice of its weights.

    The network (``module`` or its ``submodule``) becomes a :class:`~lightning_nas.Supernet`,
    which then extracts the dense sub-network. Dimension names are the ones that
    ``Supernet(network, example_input=...).space`` shows, and missing dimensions keep their full
    size. The initial weights are slices of the full network's initialisation, so their scale
    follows the full layer sizes (for example the fan-in of a Linear layer).

    Args:
        module: The model, e.g. a LightningModule built with a trial's hyperparameters.
        arch: Architecture to keep, by dimension name.
        submodule: Attribute path of the network inside ``module`` (e.g. ``"model"``). It is
            replaced in place and ``module`` itself is returned. Without it, the whole ``module``
            is the network and a new, dense copy of it is returned.
        example_input: Input for tracing; defaults to ``module.example_input_array``.
        **supernet_options: Passed to :class:`~lightning_nas.Supernet` (``dimensions``,
            ``adapter``, adapter options).

    Returns:
        The model at ``arch``.

    Example:
        >>> from lightning_nas.demo import DigitsClassifier
        >>> module = at_arch(DigitsClassifier(width=8, hidden=16), {"fc": 4}, submodule="model")
        >>> module.model.fc
        Linear(in_features=64, out_features=4, bias=True)
    """
    network = module.get_submodule(submodule) if submodule else module
    if example_input is None:
        example_input = getattr(module, "example_input_array", None)
    dense = Supernet(network, example_input=example_input, **supernet_options).extract(arch)
    if not submodule:
        return dense
    parent, _, name = submodule.rpartition(".")
    setattr(module.get_submodule(parent), name, dense)
    return module


class TrialPruning(L.Callback):
    """Reports the monitored metric to an Optuna trial after each validation run and prunes it.

    In a single-objective study the value goes to ``trial.report``, so any Optuna pruner
    (median, percentile, Hyperband/ASHA, ...) decides through ``trial.should_prune``. Optuna refuses
    both calls in multi-objective studies. There the values are kept in the trial's
    :data:`INTERMEDIATE_VALUES` user attribute, and a :class:`CostAwarePruner` set as the study's
    pruner decides. With any other pruner the trial only records its values.

    The step is the index of the validation run (the epoch when validating once per epoch), so
    trials with different batch sizes are compared after the same amount of data. One trial
    trains in one process: run more workers instead of distributed training per trial.

    Args:
        trial: The running trial.
        monitor: Metric logged in ``validation_step``, e.g. ``"val_acc"``.

    Example:
        >>> import optuna
        >>> from lightning_nas.demo import DigitsClassifier, DigitsDataModule
        >>> def objective(trial):
        ...     module = DigitsClassifier(lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True), width=8, hidden=16)
        ...     trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False,
        ...                         enable_checkpointing=False, enable_progress_bar=False,
        ...                         enable_model_summary=False, callbacks=[TrialPruning(trial, "val_acc")])
        ...     trainer.fit(module, DigitsDataModule())
        ...     return trainer.callback_metrics["val_acc"].item()
        >>> study = optuna.create_study(direction="maximize")
        >>> study.optimize(objective, n_trials=1)
        >>> sorted(study.trials[0].intermediate_values)
        [0, 1]
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self._values: dict[int, float] = {}

    @property
    def _multi_objective(self) -> bool:
        return len(self.trial.study.directions) > 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            raise MisconfigurationException(
                "TrialPruning runs one trial in one process; scale out with several workers on one "
                f"Optuna storage instead of world_size={trainer.world_size}"
            )
        self._values = {}
        pruner = self.trial.study.pruner
        if self._multi_objective and not isinstance(pruner, (CostAwarePruner, optuna.pruners.NopPruner)):
            warnings.warn(
                f"{type(pruner).__name__} cannot prune trials of a multi-objective study (Optuna refuses "
                "Trial.report there); set CostAwarePruner as the study's pruner to stop bad trials early",
                stacklevel=2,
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise MisconfigurationException(
                f"TrialPruning: the metric {self.monitor!r} was not logged in validation; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        step = len(self._values)
        self._values[step] = value
        if self._multi_objective:
            self.trial.set_user_attr(INTERMEDIATE_VALUES, dict(self._values))
            prune = self._should_prune_multi_objective()
        else:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"{self.monitor}={value:.6g} at step {step}")

    def _should_prune_multi_objective(self) -> bool:
        study = self.trial.study
        if not isinstance(study.pruner, CostAwarePruner):
            return False
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        frozen = next(t for t in running if t.number == self.trial.number)
        return study.pruner.prune(study, frozen)


class CostAwarePruner(optuna.pruners.BasePruner):
    """Prunes a trial that does worse than cheaper completed trials did at the same step.

    This is for accuracy-vs-cost studies, where ``Trial.report`` is refused. A trial is compared
    only with completed trials whose every cost is at most its own (times ``1 + cost_tolerance``),
    including trials of the same architecture with other hyperparameters. If the trial's
    intermediate metric at this step is not among the best ``percentile`` percent of theirs, it
    will most likely end up dominated by them, so it is stopped. The cheapest trials are never pruned, because
    their cost alone can put them on the Pareto front. Intermediate values come from the
    :data:`INTERMEDIATE_VALUES` user attribute in multi-objective studies and from
    ``trial.intermediate_values`` in single-objective ones. Costs come from the user attributes
    that :class:`JointObjective` records (``params``, ``flops``, ``latency``).

    Args:
        percentile: Keep a trial only while it is within the best ``percentile`` percent of its
            peers (50: better than their median; lower prunes more, as in Optuna's
            ``PercentilePruner``).
        n_min_trials: Number of comparable completed trials with a value at the step that must
            exist before pruning starts.
        n_warmup_steps: Do not prune before this step.
        cost_tolerance: Peers may cost up to ``1 + cost_tolerance`` times this trial's cost.
        costs: Names of the cost user attributes. The default is the study's objective names after
            the metric (``study.metric_names[1:]``, as :func:`joint_search` sets them).

    Example:
        >>> import optuna
        >>> pruner = CostAwarePruner(n_min_trials=1, costs=("params",))
        >>> study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
        >>> study.add_trial(optuna.trial.create_trial(
        ...     values=[0.9, 100], user_attrs={"params": 100, INTERMEDIATE_VALUES: {"0": 0.8}}))
        >>> trial = study.ask()
        >>> trial.set_user_attr("params", 200)
        >>> trial.set_user_attr(INTERMEDIATE_VALUES, {"0": 0.5})
        >>> study.pruner.prune(study, study.trials[-1])
        True
    """

    def __init__(
        self,
        percentile: float = 50.0,
        n_min_trials: int = 3,
        n_warmup_steps: int = 0,
        cost_tolerance: float = 0.0,
        costs: Sequence[str] | None = None,
    ) -> None:
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
        if n_min_trials < 1:
            raise ValueError(f"n_min_trials must be at least 1, got {n_min_trials}")
        if cost_tolerance < 0:
            raise ValueError(f"cost_tolerance must be non-negative, got {cost_tolerance}")
        self.percentile = percentile
        self.n_min_trials = n_min_trials
        self.n_warmup_steps = n_warmup_steps
        self.cost_tolerance = cost_tolerance
        self.costs = None if costs is None else tuple(costs)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        values = _intermediate_values(study, trial)
        if not values:
            return False
        step = max(values)
        if step < self.n_warmup_steps:
            return False
        value = values[step]
        if math.isnan(value):
            return True
        names = self._cost_names(study)
        missing = [name for name in names if name not in trial.user_attrs]
        if missing:
            raise ValueError(f"CostAwarePruner: trial {trial.number} has no user attributes {missing} (its costs)")
        limits = [trial.user_attrs[name] * (1.0 + self.cost_tolerance) for name in names]
        peers = []
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            other_value = _intermediate_values(study, other).get(step)
            if other_value is None:
                continue
            if all(other.user_attrs.get(name, math.inf) <= limit for name, limit in zip(names, limits)):
                peers.append(other_value)
        if len(peers) < self.n_min_trials:
            return False
        if study.directions[0] == StudyDirection.MAXIMIZE:
            return value < float(np.nanpercentile(peers, 100.0 - self.percentile))
        return value > float(np.nanpercentile(peers, self.percentile))

    def _cost_names(self, study: optuna.Study) -> tuple[str, ...]:
        if self.costs is not None:
            return self.costs
        names = study.metric_names
        if len(study.directions) < 2 or names is None:
            raise ValueError(
                "CostAwarePruner needs the names of the costs: pass costs=(...) or name the study's "
                "objectives with study.set_metric_names([metric, *costs])"
            )
        return tuple(names[1:])


def _intermediate_values(study: optuna.Study, trial: FrozenTrial) -> dict[int, float]:
    if len(study.directions) == 1:
        return trial.intermediate_values
    return {int(step): float(value) for step, value in trial.user_attrs.get(INTERMEDIATE_VALUES, {}).items()}


def _check_hyperparameters(hyperparameters: Hyperparameters, space: SearchSpace) -> None:
    if callable(hyperparameters):
        return
    clash = sorted(set(hyperparameters) & set(space))
    if clash:
        raise ValueError(f"hyperparameters {clash} have the names of architecture dimensions; rename them")
    for name, distribution in hyperparameters.items():
        if not isinstance(distribution, (FloatDistribution, IntDistribution, CategoricalDistribution)):
            raise TypeError(
                f"hyperparameter {name!r}: expected an optuna.distributions FloatDistribution, IntDistribution "
                f"or CategoricalDistribution, got {type(distribution).__name__}"
            )


def _suggest(trial: optuna.Trial, hyperparameters: Hyperparameters) -> dict[str, Any]:
    if callable(hyperparameters):
        return dict(hyperparameters(trial))
    values: dict[str, Any] = {}
    for name, dist in hyperparameters.items():
        if isinstance(dist, FloatDistribution):
            values[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[name] = trial.suggest_categorical(name, dist.choices)
    return values


class JointObjective:
    """An Optuna objective that samples an architecture and hyperparameters, then trains them.

    For each trial it:

    1. suggests ``arch`` with ``space.suggest(trial)`` and the hyperparameters from their
       distributions (or your function);
    2. records them as the user attributes ``arch`` and ``hparams``;
    3. calls ``build(arch, hparams)`` for a LightningModule, or a ``(LightningModule, datamodule)``
       pair;
    4. records the built model's costs (always ``params``, and whatever is in ``objectives`` or
       ``limits``), sets ``limits`` as Optuna constraints (mirrored in the ``constraints`` user
       attribute), and prunes an over-budget trial before training;
    5. trains with a new ``L.Trainer`` that has :class:`TrialPruning` on ``monitor`` in its callbacks;
    6. returns the metric of the last validation, followed by the ``objectives`` costs when there are any.

    Args:
        build: ``build(arch, hparams)`` -> LightningModule or ``(LightningModule, datamodule)``.
            :func:`at_arch` turns one model class into the model of any ``arch``.
        space: The architecture dimensions searched.
        hyperparameters: Optuna distributions by name, e.g.
            ``{"lr": FloatDistribution(1e-4, 1e-1, log=True)}``, or ``suggest(trial) -> dict`` for
            conditional ones (e.g. a LoRA rank only when LoRA is on).
        monitor: Metric logged in ``validation_step``; reported each validation, and returned.
        objectives: Costs minimised alongside the metric, from ``("params", "flops", "latency")``.
        limits: Upper limits by cost name, e.g. ``{"params": 1e5}``; latency in milliseconds.
        trainer_kwargs: ``L.Trainer`` arguments, or ``trainer_kwargs(trial) -> dict`` when trials need
            their own loggers. Callbacks in a mapping are copied for each trial, so that stateful
            ones such as ``EarlyStopping`` start afresh. Logging, checkpointing, the progress bar
            and the model summary are off unless you turn them on.
        example_input: Input used to measure FLOPs and latency; defaults to the LightningModule's
            ``example_input_array``.
        seed: ``seed + trial.number`` seeds each trial (``L.seed_everything``); ``None`` leaves
            the seeds alone.

    Example:
        >>> import optuna
        >>> from optuna.distributions import FloatDistribution
        >>> from lightning_nas.demo import DigitsClassifier, DigitsDataModule
        >>> objective = JointObjective(
        ...     lambda arch, hp: (DigitsClassifier(lr=hp["lr"], width=arch["width"], hidden=16), DigitsDataModule()),
        ...     SearchSpace({"width": [4, 8]}), {"lr": FloatDistribution(1e-3, 1e-1, log=True)},
        ...     trainer_kwargs={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})
        >>> study = optuna.create_study(direction="maximize")
        >>> study.optimize(objective, n_trials=1)
        >>> sorted(study.trials[0].user_attrs)
        ['arch', 'hparams', 'params']
    """

    def __init__(
        self,
        build: Callable[[Arch, dict[str, Any]], Built],
        space: SearchSpace,
        hyperparameters: Hyperparameters | None = None,
        monitor: str = "val_acc",
        objectives: Sequence[str] = (),
        limits: Mapping[str, float | None] | None = None,
        trainer_kwargs: Mapping[str, Any] | Callable[[optuna.Trial], Mapping[str, Any]] | None = None,
        example_input: Any = None,
        seed: int | None = 0,
    ) -> None:
        hyperparameters = {} if hyperparameters is None else hyperparameters
        _check_hyperparameters(hyperparameters, space)
        limits = {name: value for name, value in (limits or {}).items() if value is not None}
        unknown = [name for name in (*objectives, *limits) if name not in COSTS]
        if unknown:
            raise ValueError(f"unknown costs {unknown}; objectives and limits can be {list(COSTS)}")
        for name, limit in limits.items():
            if limit <= 0:
                raise ValueError(f"the limit on {name} must be positive, got {limit}")
        self.build = build
        self.space = space
        self.hyperparameters = hyperparameters
        self.monitor = monitor
        self.objectives = tuple(objectives)
        self.limits = limits
        self.trainer_kwargs = trainer_kwargs or {}
        self.example_input = example_input
        self.seed = seed

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        arch = self.space.suggest(trial)
        hparams = _suggest(trial, self.hyperparameters)
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("hparams", hparams)
        if self.seed is not None:
            L.seed_everything(self.seed + trial.number, verbose=False)
        built = self.build(dict(arch), dict(hparams))
        module, datamodule = built if isinstance(built, tuple) else (built, None)
        costs = self._record_costs(trial, module)
        with quiet_lightning():
            trainer = L.Trainer(**self._trainer_arguments(trial))
            trainer.fit(module, datamodule=datamodule)
        if self.monitor not in trainer.callback_metrics:
            raise MisconfigurationException(
                f"the metric {self.monitor!r} was not logged by validation; logged: {sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.monitor} of trial {trial.number} is {value}")
        if not self.objectives:
            return value
        return (value, *(costs[name] for name in self.objectives))

    def _record_costs(self, trial: optuna.Trial, module: L.LightningModule) -> dict[str, float]:
        example = module.example_input_array if self.example_input is None else self.example_input
        names = list(dict.fromkeys(("params", *self.objectives, *self.limits)))
        if example is None and set(names) - {"params"}:
            raise ValueError(
                "measuring flops or latency needs an example input: set example_input_array or example_input="
            )
        measures = {
            "params": lambda: count_params(module),
            "flops": lambda: count_flops(module, example),
            "latency": lambda: measure_latency(module, example) * 1e3,  # milliseconds, as the limits
        }
        costs = record_costs(trial, {name: measures[name] for name in names})
        enforce_limits(trial, costs, self.limits)
        return costs

    def _trainer_arguments(self, trial: optuna.Trial) -> dict[str, Any]:
        if callable(self.trainer_kwargs):
            kwargs = dict(self.trainer_kwargs(trial))
            callbacks = list(kwargs.pop("callbacks", None) or [])
        else:
            kwargs = dict(self.trainer_kwargs)
            callbacks = copy.deepcopy(list(kwargs.pop("callbacks", None) or []))
        return {**_TRAINER_DEFAULTS, **kwargs, "callbacks": [*callbacks, TrialPruning(trial, self.monitor)]}


def joint_search(
    build: Callable[[Arch, dict[str, Any]], Built],
    space: SearchSpace,
    hyperparameters: Hyperparameters | None = None,
    *,
    n_trials: int = 20,
    monitor: str = "val_acc",
    direction: str | None = None,
    objectives: Sequence[str] = (),
    max_params: float | None = None,
    max_flops: float | None = None,
    max_latency: float | None = None,
    trainer_kwargs: Mapping[str, Any] | Callable[[optuna.Trial], Mapping[str, Any]] | None = None,
    example_input: Any = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = "joint-search",
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    seed: int | None = 0,
    show_progress_bar: bool = False,
) -> SearchResult:
    """Search architectures and hyperparameters together by training each trial, pruning bad ones.

    Each trial runs :class:`JointObjective`: it suggests an architecture and hyperparameters,
    builds and trains the model with Lightning, and reports ``monitor`` after each validation so
    that the pruner can stop it. With ``objectives`` the study is multi-objective (the metric and
    the costs), and bad trials are stopped by a :class:`CostAwarePruner`. For a single objective
    under a budget, use the ``max_*`` limits instead.

    A failed trial (an exception, a NaN metric) is recorded as failed and the search goes on. The
    search runs until ``n_trials`` trials of the study have started (enqueued trials count once
    they run), so calling it again on the same storage resumes and tops up to ``n_trials``, and
    several workers share the count. Each
    worker stops once the study is full, but workers that ask for a trial at the same moment may
    create up to one extra trial each (as with Optuna's ``MaxTrialsCallback``). A trial left
    running by a killed worker still counts; with ``optuna.storages.RDBStorage(url,
    heartbeat_interval=...)`` Optuna marks such trials failed.

    Args:
        build: ``build(arch, hparams)`` -> LightningModule or ``(LightningModule, datamodule)``.
        space: The architecture dimensions searched.
        hyperparameters: Optuna distributions by name, or ``suggest(trial) -> dict``.
        n_trials: Trials wanted in the study, in total.
        monitor: Metric logged in ``validation_step``.
        direction: Direction of the metric. By default, names containing ``loss`` or ``err`` are
            minimised and the rest maximised.
        objectives: Costs minimised alongside the metric: ``"params"``, ``"flops"``, ``"latency"``.
        max_params: Limit on parameters; ``max_flops`` on FLOPs; ``max_latency`` on measured latency
            in milliseconds. Trials over a limit are pruned before training.
        trainer_kwargs: ``L.Trainer`` arguments (set ``max_epochs``), or a function of the trial.
        example_input: Input used to measure FLOPs and latency (default: ``example_input_array``).
        storage: Any Optuna storage or URL (default: in memory). See the module notes on workers.
        study_name: Name of the study in the storage.
        sampler: Any Optuna sampler. The default is TPE with ``constant_liar``, which handles pruned
            trials, several objectives and parallel workers, and finds good configurations in the
            few trials that training allows.
        pruner: Single objective: any Optuna pruner (default Optuna's ``MedianPruner``;
            ``HyperbandPruner(min_resource=1, max_resource=max_epochs)`` for ASHA-style budgets).
            Several objectives: a :class:`CostAwarePruner` (the default) or ``NopPruner``.
        seed: Seed of the default sampler and of each trial (``seed + trial.number``). Give every
            parallel worker its own seed, or their first random trials would be the same.
        show_progress_bar: Optuna's progress bar.

    Returns:
        The :class:`~lightning_nas.search.SearchResult`. The best trial's hyperparameters are in
        ``result.best.user_attrs["hparams"]``.

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> from lightning_nas.demo import DigitsClassifier, DigitsDataModule
        >>> def build(arch, hp):
        ...     return DigitsClassifier(lr=hp["lr"], width=arch["width"], hidden=16), DigitsDataModule()
        >>> result = joint_search(build, SearchSpace({"width": [4, 8]}),
        ...                       {"lr": FloatDistribution(1e-3, 1e-1, log=True)}, n_trials=2,
        ...                       trainer_kwargs={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})
        >>> len(result.study.trials), sorted(result.best.user_attrs["hparams"])
        (2, ['lr'])
    """
    direction = check_direction(direction) if direction else guess_direction(monitor)
    limits = limits_from(max_params, max_flops, max_latency)
    objective = JointObjective(
        build, space, hyperparameters, monitor, objectives, limits, trainer_kwargs, example_input, seed
    )
    if objectives:
        pruner = CostAwarePruner() if pruner is None else pruner
        if not isinstance(pruner, (CostAwarePruner, optuna.pruners.NopPruner)):
            raise ValueError(
                f"{type(pruner).__name__} cannot prune a multi-objective study (Optuna refuses Trial.report there); "
                "use CostAwarePruner or NopPruner, or search a single objective under max_params/max_flops"
            )
    if sampler is None:
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = create_search_study(monitor, direction, objectives, storage, study_name, sampler, seed)
    if pruner is not None:
        study.pruner = pruner
    started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=started))
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=started)],
            show_progress_bar=show_progress_bar,
        )
    return search_result(study, monitor, direction, ("params", *objectives))
