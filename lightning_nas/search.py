"""One-shot search: an Optuna study over the sub-networks of a trained supernet.

Every trial suggests an architecture through :meth:`SearchSpace.suggest`, so any Optuna sampler
drives the search; the task metric comes from the supernet's inherited weights, and the costs
(parameters, FLOPs, measured latency of the extracted model) are exact. Resource limits are
checked before evaluation: a trial over budget is recorded as pruned with its constraint values
and costs nothing.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from lightning_nas._table import format_table
from lightning_nas.inputs import batch_targets, call_model, output_tensor, to_device
from lightning_nas.metrics import measure_latency
from lightning_nas.samplers import ConstrainedSampler, is_rejection
from lightning_nas.space import Arch
from lightning_nas.supernet import Supernet

__all__ = [
    "COSTS",
    "SearchResult",
    "SubnetObjective",
    "TorchmetricsEvaluator",
    "check_feasible",
    "cost_functions",
    "create_search_study",
    "enforce_limits",
    "format_cost",
    "one_shot_search",
    "record_costs",
    "resolve_limits",
    "search_result",
]

#: Costs that can be objectives or limits.
COSTS = ("params", "flops", "latency")


class TorchmetricsEvaluator:
    """Scores a sub-network with a torchmetrics metric over a data loader (inherited weights).

    Batch-norm statistics are recalibrated for each sub-network on ``calibration`` batches and
    restored afterwards, so evaluating never changes the supernet.

    Args:
        supernet: The trained supernet.
        metric: A torchmetrics ``Metric`` (reset before each evaluation).
        dataloader: Validation batches.
        calibration: Training batches for batch-norm recalibration (``None``: no recalibration).
        forward: ``forward(model, batch) -> output``; default :func:`~lightning_nas.call_model`.
        target: ``target(batch) -> labels``; default :func:`~lightning_nas.inputs.batch_targets`.
        calibration_batches: At most this many calibration batches.
    """

    def __init__(
        self,
        supernet: Supernet,
        metric: Any,
        dataloader: Iterable[Any],
        calibration: Iterable[Any] | None = None,
        forward: Callable[[nn.Module, Any], Any] = call_model,
        target: Callable[[Any], torch.Tensor] = batch_targets,
        calibration_batches: int = 64,
    ) -> None:
        self.supernet = supernet
        self.metric = metric
        self.dataloader = dataloader
        self.calibration = calibration
        self.forward = forward
        self.target = target
        self.calibration_batches = calibration_batches

    def __call__(self, arch: Arch) -> float:
        model = self.supernet.model
        device = next(model.parameters()).device
        metric = self.metric.to(device)
        metric.reset()
        with self.supernet.use(arch), self.supernet.batchnorm_snapshot():
            if self.calibration is not None:
                self.supernet.recalibrate_batchnorm(self.calibration, self.forward, self.calibration_batches)
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    for batch in self.dataloader:
                        batch = to_device(batch, device)
                        metric.update(output_tensor(self.forward(model, batch)), self.target(batch))
            finally:
                model.train(was_training)
        return float(metric.compute())


CostFunction = Callable[[Arch], float]


def cost_functions(
    supernet: Supernet, latency_input: Any = None, extra: Mapping[str, CostFunction] | None = None
) -> dict[str, CostFunction]:
    """The costs of a sub-network by name: :data:`COSTS` plus ``extra`` (which may override them).

    ``latency`` is the median measured latency, in milliseconds, of the *extracted* model on the
    supernet's device (not of the sliced supernet, whose views and index selects differ).
    """

    def latency(arch: Arch) -> float:
        example = supernet.example_input if latency_input is None else latency_input
        if example is None:
            raise ValueError("measuring latency needs an example input")
        return measure_latency(supernet.extract(arch), example) * 1e3

    functions: dict[str, CostFunction] = {
        "params": lambda arch: float(supernet.num_params(arch)),
        "flops": lambda arch: float(supernet.flops(arch)),
        "latency": latency,
    }
    functions.update(extra or {})
    return functions


def resolve_limits(supernet: Supernet, limits: Mapping[str, float | None]) -> dict[str, float]:
    """Absolute limits: ``None`` dropped, a float in (0, 1] on ``params`` / ``flops`` taken as a
    fraction of the full network's.

    Example:
        >>> import torch
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
        ...                example_input=torch.randn(1, 4))
        >>> resolve_limits(net, {"params": 0.5, "flops": None, "latency": 2.0})
        {'params': 29.0, 'latency': 2.0}
    """
    resolved = {name: value for name, value in limits.items() if value is not None}
    full = {"params": supernet.num_params, "flops": supernet.flops}
    for name, count in full.items():
        value = resolved.get(name)
        if isinstance(value, float) and 0 < value <= 1:
            resolved[name] = value * count(supernet.max_arch())
    return resolved


def check_feasible(supernet: Supernet, limits: Mapping[str, float | None], costs: Mapping[str, CostFunction]) -> None:
    """Raise ``ValueError`` if even the smallest sub-network breaks a limit (checked before any work)."""
    unknown = set(limits) - set(costs)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; limits can be set on {list(costs)}")
    smallest = supernet.min_arch()
    for name, limit in limits.items():
        if limit is None:
            continue
        if limit <= 0:
            raise ValueError(f"max_{name} must be positive, got {limit}")
        value = costs[name](smallest)
        if value > limit:
            raise ValueError(
                f"no architecture can meet max_{name}={limit:,.6g}: the smallest sub-network has {name}={value:,.6g}"
            )


class SubnetObjective:
    """An Optuna objective: suggest an architecture, check limits, evaluate, report the costs.

    Returns ``(metric, *costs)``. Records ``arch`` and every cost as user attributes; limits
    become ``trial.set_constraint`` values (and the user attribute ``constraints``, which
    optuna-dashboard shows). Over-budget trials are pruned before evaluation.

    Args:
        supernet: The supernet whose space is searched.
        evaluate: ``evaluate(arch) -> float``, the task metric with inherited weights.
        objectives: Costs reported after the metric, by name (see :func:`cost_functions`).
        limits: Upper limits by cost name, e.g. ``{"params": 1e5}``.
        costs: Cost functions by name; default :func:`cost_functions` of the supernet.
    """

    def __init__(
        self,
        supernet: Supernet,
        evaluate: Callable[[Arch], float],
        objectives: Sequence[str] = ("params",),
        limits: Mapping[str, float | None] | None = None,
        costs: Mapping[str, CostFunction] | None = None,
    ) -> None:
        self.costs = dict(costs) if costs is not None else cost_functions(supernet)
        unknown = [o for o in objectives if o not in self.costs]
        if unknown:
            raise ValueError(f"unknown objectives {unknown}; choose from {list(self.costs)}")
        self.supernet = supernet
        self.evaluate = evaluate
        self.objectives = tuple(objectives)
        self.limits = {k: v for k, v in (limits or {}).items() if v is not None}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        arch = self.supernet.space.suggest(trial)
        trial.set_user_attr("arch", arch)
        # Limits first: an over-budget trial is pruned before anything else is measured.
        costs = self._measure(trial, arch, self.limits)
        enforce_limits(trial, costs, self.limits)
        costs.update(self._measure(trial, arch, [n for n in ("params", *self.objectives) if n not in costs]))
        value = float(self.evaluate(arch))
        if not math.isfinite(value):
            raise FloatingPointError(f"the metric of {arch} is {value}")
        if not self.objectives:
            return value
        return (value, *(costs[name] for name in self.objectives))

    def _measure(self, trial: optuna.Trial, arch: Arch, names: Iterable[str]) -> dict[str, float]:
        return record_costs(trial, {name: functools.partial(self.costs[name], arch) for name in names})


def record_costs(trial: optuna.Trial, costs: Mapping[str, Callable[[], float]]) -> dict[str, float]:
    """Measure each cost and store it as a user attribute of ``trial``."""
    values = {name: float(measure()) for name, measure in costs.items()}
    for name, value in values.items():
        trial.set_user_attr(name, value)
    return values


def enforce_limits(trial: optuna.Trial, costs: Mapping[str, float], limits: Mapping[str, float]) -> None:
    """Record each limit as a constraint (``cost - limit``) and prune the trial if one is broken.

    The values go to ``trial.set_constraint`` (what Optuna's samplers read) and to the user
    attribute ``constraints`` (what optuna-dashboard shows).
    """
    if not limits:
        return
    violations = {f"max_{name}": costs[name] - limit for name, limit in limits.items()}
    for key, value in violations.items():
        trial.set_constraint(key, value)
    trial.set_user_attr("constraints", violations)
    broken = [key for key, value in violations.items() if value > 0]
    if broken:
        raise optuna.TrialPruned(f"over budget: {', '.join(broken)}")


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        study: The Optuna study (reload it any time with ``optuna.load_study``).
        front: Feasible Pareto-optimal trials, best metric first.
        best: The trial chosen for export: the best metric on the front.
        metric_name: Name of the task metric (first objective).
        cost_names: Costs shown next to the metric (objectives and limited costs).
    """

    study: optuna.Study
    front: list[FrozenTrial]
    best: FrozenTrial | None
    metric_name: str
    cost_names: tuple[str, ...] = ("params",)

    @property
    def best_arch(self) -> Arch | None:
        return None if self.best is None else dict(self.best.user_attrs["arch"])

    def table(self) -> str:
        """The Pareto front as a text table, with what its ``trial`` and ``arch`` columns mean.

        ``arch`` shows ``name=value`` pairs when they are short, else the values in the order a
        legend line below the table names. When a constrained sampler recorded rejected
        over-budget proposals as trials, a line says how many of the trials were evaluated.
        """
        costs = [c for c in self.cost_names if any(c in t.user_attrs for t in self.front)]
        archs = [dict(t.user_attrs["arch"]) for t in self.front]
        pairs = [" ".join(f"{k}={v}" for k, v in arch.items()) for arch in archs]
        as_pairs = all(len(p) <= _ARCH_PAIRS_WIDTH for p in pairs)
        rows = []
        for t, arch, shown in zip(self.front, archs, pairs):
            rows.append(
                [
                    t.number,
                    f"{t.values[0]:.4f}",
                    *(format_cost(c, t.user_attrs.get(c)) for c in costs),
                    shown if as_pairs else "/".join(str(v) for v in arch.values()),
                ]
            )
        header = ["trial", self.metric_name, *(c + (" (ms)" if c == "latency" else "") for c in costs), "arch"]
        lines = [format_table(header, rows)]
        if archs and not as_pairs:
            lines.append("arch = " + "/".join(archs[0]))
        trials = self.study.get_trials(deepcopy=False)
        rejected = sum(is_rejection(t) for t in trials)
        if rejected:
            lines.append(
                f"trial numbers include {rejected} over-budget proposals the sampler rejected unevaluated: "
                f"{len(trials) - rejected} of {len(trials)} trials ran"
            )
        return "\n".join(lines)


#: Longest ``name=value`` list shown as such in the ``arch`` column; longer ones get a legend.
_ARCH_PAIRS_WIDTH = 40


def format_cost(name: str, value: float | None) -> str:
    """A cost as tables show it: latency in ms with 3 decimals, counts with thousands separators.

    Example:
        >>> format_cost("params", 12345.0), format_cost("latency", 1.23456), format_cost("flops", None)
        ('12,345', '1.235', '-')
    """
    if value is None:
        return "-"
    return f"{value:.3f}" if name == "latency" else f"{value:,.0f}"


def create_search_study(
    metric_name: str,
    direction: str,
    objectives: Sequence[str],
    storage: str | optuna.storages.BaseStorage | None,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int | None = 0,
) -> optuna.Study:
    """Create (or resume) the study of a search, with named metrics.

    Raises ``ValueError`` if a study of that name exists with other objectives.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    directions = [direction, *("minimize" for _ in objectives)]
    if sampler is None:
        sampler = optuna.samplers.NSGAIISampler(seed=seed) if objectives else optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(
        storage=storage, study_name=study_name, directions=directions, sampler=sampler, load_if_exists=True
    )
    names = [metric_name, *objectives]
    existing = study.metric_names
    if existing is not None and list(existing) != names:
        raise ValueError(
            f"study {study_name!r} already exists with objectives {existing}; this search has {names}. "
            "Use another study name or storage."
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(f"study {study_name!r} exists with other directions than {directions}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    return study


def one_shot_search(
    supernet: Supernet,
    evaluate: Callable[[Arch], float],
    *,
    n_trials: int = 50,
    metric_name: str = "metric",
    direction: str = "maximize",
    objectives: Sequence[str] = ("params",),
    max_params: float | None = None,
    max_flops: float | None = None,
    max_latency: float | None = None,
    latency_input: Any = None,
    costs: Mapping[str, CostFunction] | None = None,
    limits: Mapping[str, float] | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = "one-shot-search",
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int | None = 0,
    show_progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> SearchResult:
    """Search the supernet's sub-networks in an Optuna study and return the Pareto front.

    The largest and smallest architectures are evaluated first (anchors of the front). Runs
    until the study holds ``n_trials`` finished trials, so calling it again on the same storage
    resumes. Failed trials (an exception, a NaN metric) are recorded as failed and the search
    goes on.

    Args:
        supernet: A trained supernet.
        evaluate: ``evaluate(arch) -> float``, e.g. a :class:`TorchmetricsEvaluator`.
        n_trials: Total finished trials wanted in the study.
        metric_name: Name shown for the metric (``study.metric_names``).
        direction: Of the metric.
        objectives: Costs minimised alongside the metric (``"params"``, ``"flops"``, ``"latency"``).
        max_params: Limit on parameters; ``max_flops`` on FLOPs; ``max_latency`` on the
            extracted model's measured latency in milliseconds.
        latency_input: Input for latency measurement (default: the supernet's example input).
        costs: Extra cost functions ``arch -> float`` by name (usable as objectives and limits),
            e.g. ``{"encoder_params": ...}``; they may also replace the built-in ones.
        limits: Upper limits on any cost by name (``max_params`` etc. are shorthands).
        storage: Any Optuna storage or URL (default: in memory).
        study_name: Name of the study in the storage.
        sampler: Any Optuna sampler (default NSGA-II for several objectives, else TPE, wrapped in
            a :class:`~lightning_nas.samplers.ConstrainedSampler` when there are limits).
        seed: Seed of the default sampler.
        show_progress_bar: Optuna's progress bar over the remaining trials.
        callbacks: Called as ``callback(study, trial)`` after each evaluated trial (as in
            ``study.optimize``), e.g. to print a line per trial.

    Example:
        >>> import optuna, torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        >>> net = Supernet(model, example_input=torch.randn(1, 4))
        >>> result = one_shot_search(net, lambda arch: arch["0"] / 32, n_trials=4, max_params=150,
        ...                          sampler=optuna.samplers.BruteForceSampler(seed=0))
        >>> result.best_arch
        {'0': 16}
    """
    limits = {"params": max_params, "flops": max_flops, "latency": max_latency, **(limits or {})}
    limits = {name: value for name, value in limits.items() if value is not None}
    functions = cost_functions(supernet, latency_input, costs)
    check_feasible(supernet, limits, functions)
    if sampler is None and limits:
        # Over-budget architectures are rejected before they become trials (and the base sampler
        # learns the infeasible region from the recorded rejections).
        base = optuna.samplers.NSGAIISampler(seed=seed) if objectives else optuna.samplers.TPESampler(seed=seed)
        sampler = ConstrainedSampler(base, _limit_constraint(supernet, functions, limits), supernet.space, seed=seed)
    study = create_search_study(metric_name, direction, objectives, storage, study_name, sampler, seed)
    if not study.trials:
        for arch in (supernet.max_arch(), supernet.min_arch()):
            study.enqueue_trial(_as_params(supernet, arch), skip_if_exists=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    evaluated = [t for t in study.get_trials(deepcopy=False, states=finished) if not is_rejection(t)]
    remaining = n_trials - len(evaluated)
    objective = SubnetObjective(supernet, evaluate, objectives, limits, functions)
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(Exception,),
            show_progress_bar=show_progress_bar,
            callbacks=list(callbacks),
        )
    return search_result(study, metric_name, direction, tuple(dict.fromkeys(("params", *objectives, *limits))))


def _limit_constraint(
    supernet: Supernet, costs: Mapping[str, CostFunction], limits: Mapping[str, float]
) -> Callable[[Mapping[str, Any]], list[float]]:
    def constraint(params: Mapping[str, Any]) -> list[float]:
        arch = supernet.space.arch_from_params(params)
        return [costs[name](arch) - limit for name, limit in limits.items()]

    return constraint


def _as_params(supernet: Supernet, arch: Arch) -> dict[str, int]:
    return {name: arch[name] for name in supernet.space}


def search_result(
    study: optuna.Study, metric_name: str, direction: str, cost_names: Sequence[str] = ("params",)
) -> SearchResult:
    """The feasible Pareto front of a study (or its best feasible trial), best metric first."""
    if len(study.directions) > 1:
        front = list(study.best_trials)
    else:
        completed = study.get_trials(states=(TrialState.COMPLETE,))
        feasible = [t for t in completed if all(v <= 0 for v in t.constraints.values())]
        front = [min(feasible, key=lambda t: t.value if direction == "minimize" else -t.value)] if feasible else []
    sign = 1 if direction == "minimize" else -1
    front.sort(key=lambda t: (sign * t.values[0], *t.values[1:]))
    return SearchResult(study, front, front[0] if front else None, metric_name, tuple(cost_names))
