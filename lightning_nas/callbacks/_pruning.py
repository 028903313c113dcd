"""Early stopping of Optuna trials that train with Lightning: the :class:`TrialPruning` callback and
the :class:`CostAwarePruner` for accuracy-vs-cost studies (used by :func:`~lightning_nas.hpo.joint_search`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import lightning as L
import numpy as np
import optuna
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["INTERMEDIATE_VALUES", "CostAwarePruner", "TrialPruning"]

#: User attribute holding ``{step: value}`` of the monitored metric in multi-objective studies,
#: where Optuna does not store intermediate values.
INTERMEDIATE_VALUES = "intermediate_values"


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
