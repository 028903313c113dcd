"""Joint NAS + hyperparameter search: each Optuna trial picks an architecture and hyperparameters,
trains them with a real Lightning ``Trainer``, and is stopped early once it falls behind.

The pieces work in any Optuna code, and :func:`joint_search` ties them together:

- :class:`JointObjective`: an Optuna objective. It suggests an architecture from a
  :class:`~lightning_nas.SearchSpace` and hyperparameters from Optuna distributions, builds the
  LightningModule (and datamodule) with your ``build`` function, trains it and returns the
  validation metric, plus the model's costs in multi-objective studies.
- :class:`~lightning_nas.callbacks.TrialPruning`: a Lightning callback that reports the monitored
  metric to the trial after every validation run and raises ``optuna.TrialPruned`` when the
  study's pruner says so.
- :class:`~lightning_nas.callbacks.CostAwarePruner`: early stopping for accuracy-vs-cost studies, where Optuna's
  ``Trial.report`` is refused. A trial is stopped when, at the same step, it is worse than the
  completed trials that cost no more than it does. Such a trial is heading for the dominated part
  of the front.
- :func:`~lightning_nas.supernet.at_arch`: a freshly initialised model cut down to an architecture through a
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

# TrialPruning, CostAwarePruner and at_arch live with their kind; they stay importable from here.
from lightning_nas.callbacks._pruning import INTERMEDIATE_VALUES, CostAwarePruner, TrialPruning
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
from lightning_nas.supernet import at_arch

__all__ = [
    "INTERMEDIATE_VALUES",
    "CostAwarePruner",
    "JointObjective",
    "TrialPruning",
    "at_arch",
    "joint_search",
]

Built = L.LightningModule | tuple[L.LightningModule, L.LightningDataModule | None]
Hyperparameters = Mapping[str, BaseDistribution] | Callable[[optuna.Trial], Mapping[str, Any]]

_TRAINER_DEFAULTS = QUIET_TRAINER


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
