"""One-shot search: an Optuna study over the sub-networks of a trained supernet.

Every trial suggests an architecture through :meth:`SearchSpace.suggest`, so any Optuna sampler
drives the search; the task metric comes from the supernet's inherited weights, and the costs
(parameters, FLOPs, measured latency of the extracted model) are exact. Resource limits are
checked before evaluation: a trial over budget is recorded as pruned with its constraint values
and costs nothing.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from lightning_nas._table import format_table
from lightning_nas.inputs import batch_targets, call_model, output_tensor, to_device
from lightning_nas.metrics import measure_latency
from lightning_nas.samplers import ConstrainedSampler, is_rejection
from lightning_nas.space import Arch, SearchSpace
from lightning_nas.supernet import Supernet

__all__ = [
    "COSTS",
    "SEARCH_ATTR",
    "SearchResult",
    "SubnetObjective",
    "TorchmetricsEvaluator",
    "check_direction",
    "check_feasible",
    "check_search_study",
    "cost_functions",
    "create_search_study",
    "enforce_limits",
    "fail_dead_trials",
    "format_cost",
    "guess_direction",
    "limits_from",
    "one_shot_search",
    "open_storage",
    "record_costs",
    "resolve_limits",
    "search_descriptor",
    "search_result",
    "supernet_fingerprint",
    "worker_id",
]

log = logging.getLogger(__name__)

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
        with single_process_metrics(metric):
            return float(metric.compute())


def _not_distributed() -> bool:
    return False


@contextmanager
def single_process_metrics(module: nn.Module) -> Iterator[None]:
    """Inside the block, the torchmetrics metrics in ``module`` compute without syncing processes.

    The search evaluates in one process (rank 0 after a DDP fit, while the process group is still
    up): each metric's state is complete there, and a cross-process sync would wait on ranks that
    are not evaluating.
    """
    metrics = [m for m in module.modules() if hasattr(m, "distributed_available_fn")]
    saved = [m.distributed_available_fn for m in metrics]
    for m in metrics:
        m.distributed_available_fn = _not_distributed
    try:
        yield
    finally:
        for m, available in zip(metrics, saved):
            m.distributed_available_fn = available


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
    resolved = limits_from(limits=limits)
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

    def top(self, k: int) -> list[FrozenTrial]:
        """The ``k`` best evaluated trials within the limits by the task metric, one per architecture, best first.

        Unlike :attr:`front`, a trial dominated in cost still counts: this is the shortlist of
        candidates that are good enough and affordable (e.g. for
        :func:`~lightning_nas.recovery.recover`). Ties go to the first objective cost.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        sign = -1 if self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        feasible = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("copy_of") is None and all(v <= 0 for v in (t.constraints or {}).values())
        ]
        feasible.sort(key=lambda t: (sign * t.values[0], *t.values[1:], t.number))
        seen: set[str] = set()
        top = []
        for trial in feasible:
            key = _arch_key(trial.user_attrs["arch"])
            if key not in seen:
                seen.add(key)
                top.append(trial)
        return top[:k]

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


def check_direction(direction: str) -> str:
    """``direction`` if it is ``"maximize"`` or ``"minimize"``, else a one-line ``ValueError``."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    return direction


def guess_direction(metric_name: str) -> str:
    """``"minimize"`` for names that contain ``loss`` or ``err``, else ``"maximize"``.

    Example:
        >>> guess_direction("val_loss"), guess_direction("val_acc")
        ('minimize', 'maximize')
    """
    lowered = metric_name.lower()
    return "minimize" if "loss" in lowered or "err" in lowered else "maximize"


def limits_from(
    max_params: float | None = None,
    max_flops: float | None = None,
    max_latency: float | None = None,
    limits: Mapping[str, float | None] | None = None,
) -> dict[str, float]:
    """The limits by cost name from the ``max_*`` shorthands and ``limits``, ``None`` dropped.

    Every value must be a positive number (a str such as ``"0.5"`` is refused here, with its name,
    rather than failing later inside a comparison).

    Example:
        >>> limits_from(max_params=0.5, limits={"latency": 2.0})
        {'params': 0.5, 'latency': 2.0}
        >>> limits_from(max_params="0.5")
        Traceback (most recent call last):
        ...
        TypeError: max_params must be a number, got '0.5' (str)
    """
    merged = {"params": max_params, "flops": max_flops, "latency": max_latency, **(limits or {})}
    result = {}
    for name, value in merged.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"max_{name} must be a number, got {value!r} ({type(value).__name__})")
        if not value > 0:
            raise ValueError(f"max_{name} must be positive, got {value}")
        result[name] = value
    return result


# Storages ---------------------------------------------------------------------------------------
#: Study user attribute that records what a search searches (see :func:`search_descriptor`).
SEARCH_ATTR = "lightning_nas:search"

_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def _retry_callback(max_retry: int | None) -> Callable[[optuna.Study, FrozenTrial], None]:
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is None:  # Optuna < 4.9
        retry = optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return retry(max_retry=max_retry)


def _retry_history(trial: FrozenTrial) -> list[int]:
    return list(trial.system_attrs.get("retry_history", ()))


def open_storage(
    storage: str | os.PathLike | optuna.storages.BaseStorage | None,
    *,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> optuna.storages.BaseStorage | None:
    """An Optuna storage for a search from a URL or a file path, checked before any work.

    * ``postgresql://...``, ``mysql://...`` and other database URLs: an ``RDBStorage`` with
      Optuna's heartbeat, so that a trial whose worker died (``kill -9``, a lost machine) is
      failed after ``grace_period`` seconds and retried up to ``max_retry`` times.
    * ``sqlite:///path.db`` or a path ending in ``.db``: SQLite, without heartbeat (its writer
      thread would contend for the file lock); a dead worker's trial on this machine is failed
      and retried by the next search that looks (see :func:`fail_dead_trials`).
    * a path ending in ``.log``, ``.journal`` or ``.jsonl``: a journal file
      (``JournalFileBackend``), for many workers on one machine or a shared file system.
    * a storage object is used as it is; ``None`` is an in-memory storage.

    A directory that does not exist or a database that cannot be reached raises a one-line
    ``ValueError``.

    Example:
        >>> open_storage("/no/such/dir/nas.db")
        Traceback (most recent call last):
        ...
        ValueError: storage 'sqlite:////no/such/dir/nas.db': the directory /no/such/dir does not exist
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, (str, os.PathLike)):
        raise TypeError(f"storage must be a URL, a path or an Optuna storage, got {type(storage).__name__}")
    text = os.fspath(storage)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        if path.suffix in _JOURNAL_SUFFIXES:
            _check_directory(text, path.parent)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        text = f"sqlite:///{path}"
    if text.startswith("sqlite:"):
        file = text.split(":///", 1)[-1]
        if file and file != ":memory:":
            _check_directory(text, Path(file).expanduser().parent)
        options: dict[str, Any] = {}
    else:
        options = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": _retry_callback(max_retry),
        }
    from sqlalchemy.exc import IntegrityError

    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(text, **options)
            except IntegrityError:
                # Workers starting together on a new database all create its tables: the losers
                # of that race find them created when they try again.
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except Exception as err:  # noqa: BLE001 - driver errors differ; all of them mean "cannot open"
        raise ValueError(f"cannot open the study database {_redact(text)}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _local_file(storage: Any) -> Path | None:
    """The file of a SQLite URL or a path (SQLite or journal); ``None`` for servers and objects."""
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return None
    text = os.fspath(storage)
    if "://" not in text:
        return Path(text).expanduser().resolve()
    if text.startswith("sqlite:"):
        file = text.split(":///", 1)[-1]
        return Path(file).expanduser().resolve() if file and file != ":memory:" else None
    return None


def _check_directory(url: str, directory: Path) -> None:
    if not directory.is_dir():
        raise ValueError(f"storage {url!r}: the directory {directory} does not exist")


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy parses: show it as given
        return url


def _heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval is not None


# Workers ----------------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """Start time of a live (not zombie) process from /proc, ``None`` if it is gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def worker_id() -> str:
    """``host:pid:start`` of this process, recorded on each trial it runs (user attribute ``worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or ''}"


def _worker_alive(worker: str) -> bool:
    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine: only a heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc").is_dir():
        return True
    current = _process_start(int(pid))
    return current is not None and (not start or current == start)  # a reused pid is another process


def fail_dead_trials(
    study: optuna.Study,
    max_retry: int | None = 3,
    grace_period: float = 60.0,
    trials: Sequence[FrozenTrial] | None = None,
) -> list[int]:
    """Fail the RUNNING trials whose worker process on this machine is gone, and retry each.

    For storages without a heartbeat (SQLite, journal files): a ``kill -9`` leaves the trial
    RUNNING for ever. Each trial records its worker (``host:pid:start``); a trial of a dead
    process on this host, or one that never recorded a worker (killed while sampling) and started
    more than ``grace_period`` seconds (at least a minute) ago, is marked FAIL, and a copy is enqueued as Optuna's
    heartbeat retry does (system attributes ``failed_trial`` and ``retry_history``), up to
    ``max_retry`` times. Trials of workers on other machines are left alone: use an RDB storage
    with a heartbeat there (:func:`open_storage`). ``trials``: the study's trials if just read.
    Returns the numbers of the failed trials.
    """
    failed = []
    now = datetime.datetime.now()
    retry = _retry_callback(max_retry)
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        worker = trial.user_attrs.get("worker")
        if worker is None:
            # Sampling (before the objective records the worker) can take a while under load.
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() < max(grace_period, 60.0):
                continue
        elif _worker_alive(worker):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        log.warning("trial %d of a dead worker (%s) failed; retrying it", trial.number, worker or "unknown")
        retry(study, study.get_trials(deepcopy=False)[trial.number])
        failed.append(trial.number)
    return failed


# The study --------------------------------------------------------------------------------------
def supernet_fingerprint(supernet: Supernet) -> str:
    """A short hash of the supernet's dimensions and parameter shapes: equal for the same network."""
    dims = {name: [type(d).__name__, list(d.choices), int(d.size)] for name, d in supernet.plan.dimensions.items()}
    shapes = [[name, list(p.shape)] for name, p in supernet.model.named_parameters()]
    return hashlib.sha256(json.dumps([dims, shapes], sort_keys=True).encode()).hexdigest()[:16]


def search_descriptor(
    supernet: Supernet,
    metric_name: str,
    direction: str,
    objectives: Sequence[str],
    limits: Mapping[str, float],
) -> dict[str, Any]:
    """What a search searches, recorded on its study (user attribute :data:`SEARCH_ATTR`).

    A search that resumes a study compares it with its own and refuses a different one (another
    space, metric, direction, objectives, limits or supernet), naming the difference.
    """
    return {
        "space": supernet.space.to_dict(),
        "metric": metric_name,
        "direction": direction,
        "objectives": list(objectives),
        "limits": {name: float(value) for name, value in sorted(limits.items())},
        "supernet": supernet_fingerprint(supernet),
    }


def _descriptor_difference(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    for key, value in wanted.items():
        there = existing.get(key)
        if there == value:
            continue
        if key == "space" and isinstance(there, Mapping):
            for name in dict.fromkeys([*there, *value]):
                if there.get(name) != value.get(name):
                    return f"dimension {name!r}: {there.get(name)} there, {value.get(name)} here"
        return f"{key}: {there!r} there, {value!r} here"
    return None


def check_search_study(
    storage: str | os.PathLike | optuna.storages.BaseStorage | None,
    study_name: str,
    descriptor: Mapping[str, Any],
) -> None:
    """Raise a one-line ``ValueError`` if ``storage`` cannot be opened or holds a study of that name
    that searches something else than ``descriptor``. Writes nothing (run before training)."""
    file = _local_file(storage)
    if file is not None and not file.exists():
        # Opening would create the file: check only that it can be created, as opening does.
        _check_directory(str(storage), file.parent)
        return
    storage = open_storage(storage)
    if storage is None:
        return
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return
    _check_study(study, study_name, descriptor)


def _check_study(study: optuna.Study, study_name: str, descriptor: Mapping[str, Any], wait: float = 0.0) -> None:
    existing = study.user_attrs.get(SEARCH_ATTR)
    deadline = time.monotonic() + wait
    while existing is None and time.monotonic() < deadline:  # its creator is still writing it
        time.sleep(0.2)
        existing = study.user_attrs.get(SEARCH_ATTR)
    if existing is None:
        if not study.get_trials(deepcopy=False):
            return
        raise ValueError(
            f"study {study_name!r} exists but does not record what it searches (written by another tool); "
            "use another study name or storage"
        )
    difference = _descriptor_difference(existing, descriptor)
    if difference:
        raise ValueError(
            f"study {study_name!r} searches something else ({difference}); use another study name or storage"
        )


def create_search_study(
    metric_name: str,
    direction: str,
    objectives: Sequence[str],
    storage: str | os.PathLike | optuna.storages.BaseStorage | None,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int | None = 0,
    *,
    descriptor: Mapping[str, Any] | None = None,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> optuna.Study:
    """Create (or resume) the study of a search, with named metrics.

    Exactly one of several workers starting together creates the study (Optuna's
    ``DuplicatedStudyError`` settles it); that one records ``descriptor`` and enqueues the
    ``enqueue`` parameters (e.g. the max/min anchors) once per study. The others load it and
    check that it searches what they search.

    Raises ``ValueError`` if a study of that name exists with other objectives or directions, or
    (with ``descriptor``) searches something else.
    """
    check_direction(direction)
    directions = [direction, *("minimize" for _ in objectives)]
    if sampler is None:
        sampler = _default_sampler(bool(objectives), seed)
    storage = open_storage(storage)
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=directions, sampler=sampler, load_if_exists=False
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        created = False
    names = [metric_name, *objectives]
    existing = study.metric_names
    if existing is not None and list(existing) != names:
        raise ValueError(
            f"study {study_name!r} already exists with objectives {existing}; this search has {names}. "
            "Use another study name or storage."
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(f"study {study_name!r} exists with other directions than {directions}")
    if descriptor is not None:
        if created:
            study.set_user_attr(SEARCH_ATTR, dict(descriptor))
        else:
            _check_study(study, study_name, descriptor, wait=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    if created:
        for params in enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


def _default_sampler(multi_objective: bool, seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed) if multi_objective else optuna.samplers.TPESampler(seed=seed)


class _PerTrialSeeds(optuna.samplers.BaseSampler):
    """A fresh sampler for each trial, seeded from ``(seed, trial number)``.

    Trial numbers are unique in a study, so workers sharing it draw different architectures
    (one seed for every worker would make them propose the same ones), a resumed search does not
    replay the draws it already made, and a single worker stays reproducible. Model-based
    samplers (TPE, NSGA-II) keep learning: their state is the study's trials.
    """

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler], seed: int | None) -> None:
        self._make = make
        self._seed = seed
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            seed = None
            if self._seed is not None:
                seed = int(hashlib.sha256(f"{self._seed}:{trial.number}".encode()).hexdigest()[:8], 16)
            sampler = self._samplers[trial.number] = self._make(seed)
        return sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        sampler = self._samplers.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._seed = None


def _arch_key(arch: Mapping[str, int]) -> str:
    return json.dumps(dict(arch), sort_keys=True)


@dataclass
class _Budget:
    done: int
    active: int
    waiting: int


def _budget(trials: Sequence[FrozenTrial]) -> _Budget:
    """Trials that count towards ``n_trials``: not rejections of a constrained sampler, not surplus
    trials, and not failures that a retry replaced."""
    replaced = {number for t in trials for number in _retry_history(t)}
    done = active = waiting = 0
    for t in trials:
        if is_rejection(t) or t.user_attrs.get("surplus") or (t.state == TrialState.FAIL and t.number in replaced):
            continue
        if t.state.is_finished():
            done += 1
        elif t.state == TrialState.RUNNING:
            active += 1
        else:
            waiting += 1
    return _Budget(done, active, waiting)


def _counted_before(trials: Sequence[FrozenTrial], number: int) -> int:
    replaced = {n for t in trials for n in _retry_history(t)}
    return sum(
        1
        for t in trials
        if t.number < number
        and not is_rejection(t)
        and not t.user_attrs.get("surplus")
        and not (t.state == TrialState.FAIL and t.number in replaced)
    )


class _SearchWorker:
    """Runs trials of one study in this process until the study's budget is spent.

    The budget is global: a trial counts whichever worker ran it, and a trial numbered past the
    budget (workers that started together) is pruned as ``surplus`` without evaluation. An
    architecture already completed in the study is not evaluated again: the trial copies the
    completed trial's values and costs (user attribute ``copy_of``), so samplers still see the
    result. A trial whose architecture a lower-numbered trial is evaluating right now waits for
    it. (Two workers that draw the same architecture within the same instant can still both
    evaluate it; the later one is then the copy in the results.)
    """

    def __init__(
        self,
        space: SearchSpace,
        objective: Callable[[optuna.Trial], Any],
        n_trials: int,
        metric_name: str,
        max_nan_trials: int,
        max_retry: int | None,
        grace_period: float,
        heartbeat: bool,
        poll: float = 0.5,
    ) -> None:
        self.space = space
        self.objective = objective
        self.n_trials = n_trials
        self.metric_name = metric_name
        self.max_nan_trials = max_nan_trials
        self.max_retry = max_retry
        self.grace_period = grace_period
        self.heartbeat = heartbeat
        self.poll = poll
        self.worker = worker_id()
        self._nan_streak = 0
        self._last_nan: str | None = None
        self._current: int | None = None
        self.max_storage_errors = 5

    def run(
        self,
        study: optuna.Study,
        show_progress_bar: bool = False,
        callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    ) -> None:
        progress = None
        storage_errors = 0
        while True:
            if self.heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            if not self.heartbeat and fail_dead_trials(study, self.max_retry, self.grace_period, trials):
                trials = study.get_trials(deepcopy=False)
            budget = _budget(trials)
            if show_progress_bar and progress is None:
                from tqdm.auto import tqdm

                progress = tqdm(total=self.n_trials, initial=min(budget.done, self.n_trials), desc="search")
            if progress is not None:
                progress.update(min(budget.done, self.n_trials) - progress.n)
            if budget.done >= self.n_trials or self._exhausted(trials):
                break
            if budget.done + budget.active + budget.waiting >= self.n_trials and not budget.waiting:
                time.sleep(self.poll)  # the last trials run elsewhere; stay to retry them if they die
                continue
            self._current = None
            try:
                study.optimize(self, n_trials=1, catch=(Exception,), callbacks=list(callbacks))
                storage_errors = 0
            except Exception as err:  # noqa: BLE001 - the objective's errors are caught inside: a storage error
                storage_errors += 1
                if storage_errors > self.max_storage_errors:
                    raise
                self._fail_current(study, err)
            if self._nan_streak >= self.max_nan_trials:
                self._raise_nan()
        if progress is not None:
            progress.close()
        if self._nan_streak and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._raise_nan()  # every trial failed on a non-finite metric: no result, so no silent success

    def _raise_nan(self) -> None:
        raise ValueError(
            f"the metric {self.metric_name!r} was not finite in {self._nan_streak} consecutive trials "
            f"(last: {self._last_nan}); the search stops: check the evaluation"
        )

    def _fail_current(self, study: optuna.Study, err: Exception) -> None:
        """After a storage error (e.g. SQLite busy with other writers): fail and retry the trial."""
        log.warning("storage error in trial %s (%s); the trial is retried", self._current, _first_line(err))
        if self._current is None:
            return
        try:
            trial = study.get_trials(deepcopy=False)[self._current]
            if trial.state == TrialState.RUNNING:
                study.tell(self._current, state=TrialState.FAIL)
                _retry_callback(self.max_retry)(study, study.get_trials(deepcopy=False)[self._current])
        except Exception as again:  # noqa: BLE001 - still unreachable: left to the dead-trial checks
            log.warning("could not fail trial %s: %s", self._current, _first_line(again))

    def _exhausted(self, trials: Sequence[FrozenTrial]) -> bool:
        """Every architecture of the space is known (evaluated, over budget or rejected)."""
        size = self.space.size
        if size > len(trials):
            return False
        known = set()
        for t in trials:
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get("surplus"):
                try:
                    known.add(_arch_key(self.space.arch_from_params(t.params)))
                except (KeyError, ValueError):
                    continue
        return len(known) >= size

    def __call__(self, trial: optuna.Trial) -> Any:
        self._current = trial.number
        trial.set_user_attr("worker", self.worker)
        arch = self.space.suggest(trial)
        trial.set_user_attr("arch", arch)  # before reading the study: see _completed
        trials = trial.study.get_trials(deepcopy=False)
        if _counted_before(trials, trial.number) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study's trial budget is spent")
        original = self._completed(trial, arch, trials)
        if original is not None:
            for key, value in original.user_attrs.items():
                if key not in ("worker", "copy_of"):
                    trial.set_user_attr(key, value)
            for key, value in original.user_attrs.get("constraints", {}).items():
                trial.set_constraint(key, value)
            trial.set_user_attr("copy_of", original.number)
            self._nan_streak = 0
            return original.values if len(original.values) > 1 else original.values[0]
        try:
            value = self.objective(trial)
        except FloatingPointError as err:
            self._nan_streak += 1
            self._last_nan = str(err)
            raise
        self._nan_streak = 0
        return value

    def _completed(self, trial: optuna.Trial, arch: Arch, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
        """The completed evaluation of ``arch`` in the study, waiting for one in progress.

        ``trials`` were read after this trial recorded its architecture, so of two trials drawing
        the same architecture at once, at least the later reader sees the other.
        """
        key = _arch_key(arch)
        while True:
            busy = False
            for t in trials:
                if t.number == trial.number or t.user_attrs.get("copy_of") is not None:
                    continue
                if _arch_key(t.user_attrs.get("arch", {})) != key:
                    continue
                if t.state == TrialState.COMPLETE:
                    return t
                busy |= t.state == TrialState.RUNNING and t.number < trial.number
            if not busy:
                return None
            time.sleep(self.poll)
            trials = trial.study.get_trials(deepcopy=False)
            if not self.heartbeat and fail_dead_trials(trial.study, self.max_retry, self.grace_period, trials):
                trials = trial.study.get_trials(deepcopy=False)


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
    storage: str | os.PathLike | optuna.storages.BaseStorage | None = None,
    study_name: str = "one-shot-search",
    sampler: optuna.samplers.BaseSampler | None = None,
    seed: int | None = 0,
    show_progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    max_nan_trials: int = 5,
    candidates: Sequence[Mapping[str, int]] = (),
) -> SearchResult:
    """Search the supernet's sub-networks in an Optuna study and return the Pareto front.

    The largest and smallest architectures are evaluated first (anchors of the front), then the
    ``candidates``. Runs
    until the study holds ``n_trials`` finished trials, so calling it again on the same storage
    resumes, and several processes (or machines) running the same call on one storage share the
    work: the budget is the study's, not each worker's. Failed trials (an exception, a NaN
    metric) are recorded as failed and the search goes on, unless the metric is NaN in
    ``max_nan_trials`` trials in a row.

    Many workers: each trial of the default sampler is seeded from ``(seed, trial number)``, so
    workers draw different architectures; the anchors are enqueued once, by the worker that
    creates the study; an architecture completed once is never evaluated again (a later trial
    that draws it copies its values, user attribute ``copy_of``); a trial whose worker died is
    failed and retried (Optuna's heartbeat on database URLs, :func:`fail_dead_trials` on SQLite
    and journal files). The study records what it searches (:func:`search_descriptor`): resuming
    a study of another space, metric, objectives, limits or supernet fails before any trial.

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
        storage: Any Optuna storage, URL or file path (see :func:`open_storage`; default: in memory).
        study_name: Name of the study in the storage.
        sampler: Any Optuna sampler (default NSGA-II for several objectives, else TPE, wrapped in
            a :class:`~lightning_nas.samplers.ConstrainedSampler` when there are limits). A sampler
            given here is shared as it is: give each worker its own seed.
        seed: Seed of the default sampler.
        show_progress_bar: Optuna's progress bar over the remaining trials.
        callbacks: Called as ``callback(study, trial)`` after each evaluated trial (as in
            ``study.optimize``), e.g. to print a line per trial.
        heartbeat_interval: Seconds between heartbeats of a trial on a database URL;
            ``grace_period`` (default twice that) after the last one, the trial counts as dead.
        max_retry: How often a dead worker's trial is retried.
        max_nan_trials: Consecutive trials of this worker with a non-finite metric that stop the
            search with an error.
        candidates: Architectures to evaluate before the sampler's own (e.g. a hand-picked or
            pre-filtered shortlist). Like the anchors, they are enqueued once, by the worker that creates
            the study; one equal to an anchor or an earlier candidate is evaluated once, and one over
            the limits is pruned without evaluation, like the sampler's. They count towards ``n_trials``.

    Example:
        >>> import optuna, torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        >>> net = Supernet(model, example_input=torch.randn(1, 4))
        >>> result = one_shot_search(net, lambda arch: arch["0"] / 32, n_trials=4, max_params=150,
        ...                          sampler=optuna.samplers.BruteForceSampler(seed=0))
        >>> result.best_arch
        {'0': 16}

        Evaluate a shortlist first: with the two anchors, three trials cover it.

        >>> result = one_shot_search(net, lambda arch: arch["0"] / 32, n_trials=3, candidates=[{"0": 24}])
        >>> sorted(t.params["0"] for t in result.study.trials)
        [8, 24, 32]
    """
    check_direction(direction)
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if isinstance(candidates, Mapping):
        raise TypeError("candidates must be a sequence of architectures, got a single mapping; wrap it in a list")
    try:
        shortlist = [supernet.space.validate(arch) for arch in candidates]
    except ValueError as error:
        raise ValueError(f"candidates: {error}") from None
    limits = limits_from(max_params, max_flops, max_latency, limits)
    functions = cost_functions(supernet, latency_input, costs)
    check_feasible(supernet, limits, functions)
    if sampler is None:
        if limits:
            # Over-budget architectures are rejected before they become trials (and the base sampler
            # learns the infeasible region from the recorded rejections).
            constraint = _limit_constraint(supernet, functions, limits)

            def make(trial_seed: int | None) -> optuna.samplers.BaseSampler:
                base = _default_sampler(bool(objectives), trial_seed)
                return ConstrainedSampler(base, constraint, supernet.space, seed=trial_seed)

        else:

            def make(trial_seed: int | None) -> optuna.samplers.BaseSampler:
                return _default_sampler(bool(objectives), trial_seed)

        sampler = _PerTrialSeeds(make, seed)
    storage = open_storage(
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry
    )
    descriptor = search_descriptor(supernet, metric_name, direction, objectives, limits)
    anchors = [_as_params(supernet, arch) for arch in (supernet.max_arch(), supernet.min_arch())]
    # Dict keys are insertion-ordered: anchors first, each distinct architecture once.
    enqueue = list({tuple(p.items()): p for p in [*anchors, *(_as_params(supernet, a) for a in shortlist)]}.values())
    study = create_search_study(
        metric_name, direction, objectives, storage, study_name, sampler, seed, descriptor=descriptor, enqueue=enqueue
    )
    objective = SubnetObjective(supernet, evaluate, objectives, limits, functions)
    worker = _SearchWorker(
        supernet.space,
        objective,
        n_trials,
        metric_name,
        max_nan_trials,
        max_retry,
        grace_period if grace_period is not None else 2 * heartbeat_interval,
        heartbeat=storage is not None and _heartbeat_enabled(storage),
    )
    worker.run(study, show_progress_bar, callbacks)
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
        front = [t for t in study.best_trials if t.user_attrs.get("copy_of") is None]
    else:
        completed = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("copy_of") is None]
        feasible = [t for t in completed if all(v <= 0 for v in t.constraints.values())]
        front = [min(feasible, key=lambda t: t.value if direction == "minimize" else -t.value)] if feasible else []
    sign = 1 if direction == "minimize" else -1
    front.sort(key=lambda t: (sign * t.values[0], *t.values[1:]))
    return SearchResult(study, front, front[0] if front else None, metric_name, tuple(cost_names))
