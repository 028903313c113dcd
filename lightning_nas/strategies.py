"""Training strategies: which sub-networks each training step runs, the distillation loss, and the
students' half of a supernet training step.

A step trains one *teacher* architecture on labels (with the user's own ``training_step`` under
:class:`~lightning_nas.callbacks.SupernetCallback`, with a loss function in
:func:`~lightning_nas.proxies.warmup`) and then any number of *student* architectures that learn
from the teacher's detached outputs (in-place distillation, BigNAS / AttentiveNAS):
:func:`train_students` is that second half, the one implementation both use.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_map

from lightning_nas.inputs import output_tensor
from lightning_nas.registry import Registry
from lightning_nas.space import Arch, SearchSpace

if TYPE_CHECKING:
    from lightning_nas.supernet import Supernet

__all__ = [
    "STRATEGIES",
    "Attentive",
    "AttentiveChoice",
    "InstaTune",
    "Sandwich",
    "SinglePath",
    "TrainingStrategy",
    "choose_students",
    "distillation_loss",
    "output_tensor",
    "resolve_strategy",
    "train_students",
]

#: ``score(archs, loss=None) -> [loss of each arch on the step's batch]`` (see :func:`choose_students`).
Score = Callable[..., list[float]]


class TrainingStrategy(ABC):
    """Chooses the architectures of one training step."""

    #: Whether the teacher is always the full network (its batch-norm statistics then stay valid
    #: for validating the full network during fit).
    teacher_is_full: bool = False
    #: Whether :meth:`select` chooses students on the step's batch, once the teacher has run
    #: (the trainer must then keep the teacher's inputs even when :meth:`sample` drew no student).
    selects_on_batch: bool = False

    @abstractmethod
    def sample(
        self, space: SearchSpace, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[Arch, list[Arch]]:
        """Return the teacher (trained on labels) and the students (trained by distillation).

        Randomly drawn architectures satisfy ``where`` when it is given (e.g. a deployment
        budget: there is no point training sub-networks that the search may never export).
        """

    def select(
        self,
        supernet: Supernet,
        students: Sequence[Arch],
        score: Score,
        rng: random.Random,
        where: Callable[[Arch], bool] | None = None,
    ) -> list[Arch]:
        """The students the step trains, chosen once the teacher has run on the step's batch.

        ``score(archs)`` returns each architecture's loss on the step's inputs (no gradients,
        batch-norm running statistics untouched); see :func:`choose_students`. By default the
        students of :meth:`sample`, unchanged and unscored.
        """
        return list(students)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Sandwich(TrainingStrategy):
    """The sandwich rule: the largest net on labels, then random nets and the smallest distilled.

    Args:
        num_random: Random sub-networks per step (AttentiveNAS uses 2).
        include_min: Also train the smallest sub-network each step.

    Example:
        >>> space = SearchSpace({"w": [8, 16, 32]})
        >>> teacher, students = Sandwich(num_random=1).sample(space, random.Random(0))
        >>> teacher, students[-1]
        ({'w': 32}, {'w': 8})
    """

    teacher_is_full = True

    def __init__(self, num_random: int = 2, include_min: bool = True) -> None:
        if num_random < 0:
            raise ValueError(f"num_random must be >= 0, got {num_random}")
        self.num_random = num_random
        self.include_min = include_min

    def sample(
        self, space: SearchSpace, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[Arch, list[Arch]]:
        students = [space.sample(rng, where) for _ in range(self.num_random)]
        if self.include_min:
            students.append(space.min_arch())
        return space.max_arch(), students


class InstaTune(Sandwich):
    """InstaTune-style fine-tuning: each step trains the full model on labels and one random
    sub-network distilled from it, so a pretrained model becomes elastic during the fine-tuning
    the user runs anyway.
    """

    def __init__(self) -> None:
        super().__init__(num_random=1, include_min=False)


class SinglePath(TrainingStrategy):
    """Single Path One-Shot (SPOS): one uniformly sampled sub-network per step, on labels.

    Example:
        >>> SinglePath().sample(SearchSpace({"w": [8, 16]}), random.Random(1))[1]
        []
    """

    def sample(
        self, space: SearchSpace, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[Arch, list[Arch]]:
        return space.sample(rng, where), []


@dataclass(frozen=True)
class AttentiveChoice:
    """One Pareto-aware draw of :class:`Attentive`: the target cost, the candidates near it, their
    losses on the step's batch, and the one trained."""

    target: float
    candidates: tuple[Arch, ...]
    costs: tuple[float, ...]
    losses: tuple[float, ...]
    chosen: Arch


class Attentive(TrainingStrategy):
    """AttentiveNAS's Pareto-aware sampling (Wang et al., CVPR 2021): BestUp and WorstUp.

    Each step trains the largest net on labels (the sandwich rule's teacher), then
    ``num_attentive`` students chosen *attentively*, then the smallest net. For each attentive
    student a target cost is drawn from a prior over the space's costs, ``k`` candidates whose
    cost lies within ``tolerance`` of it are drawn, each candidate's loss on the step's batch is
    measured without gradients, and the candidate with the lowest loss (``"bestup"``: the
    estimated Pareto-best net at that cost) or the highest (``"worstup"``: the Pareto-worst) is
    trained by in-place distillation, like every other student.

    As in the authors' code (``train_attentive_nas.py``: ``num_arch_training`` 4, i.e. two
    attentive students; ``num_trials`` 3 for BestUp-3; the target FLOPs drawn from the FLOPs of
    uniformly sampled archs, binned; candidates resampled until their FLOPs fall in the target's
    bin; the minibatch loss as the performance estimate), with three documented choices:

    - ``prior="arch"`` draws the target as the cost of a uniformly drawn architecture (the
      authors' prior without its pre-computed table); ``"uniform"`` draws it uniformly over
      ``[cost(min), cost(max)]``.
    - candidates are drawn uniformly among the architectures within
      ``tolerance · (cost(max) − cost(min))`` of the target (rejection sampling, up to
      ``max_draws`` draws per candidate); when none is found, the nearest draw is kept, as the
      authors' code accepts its last draw.
    - the candidates' loss is ``criterion(output, batch)`` when given (the authors score with
      the label loss), otherwise the students' distillation loss against the teacher's output,
      which needs no knowledge of the batch's layout.

    Under DDP the candidates' losses are averaged over the ranks before choosing (the loss on
    the global batch), so every rank trains the same students.

    Args:
        mode: ``"bestup"`` (default, the paper's best setting) or ``"worstup"``.
        k: Candidates per attentive student (the paper's BestUp-3 / WorstUp-3: 3).
        num_attentive: Attentive students per step.
        include_min: Also train the smallest sub-network each step.
        cost: ``"params"`` (default), ``"flops"`` (the paper's) or ``"latency"`` (the supernet's
            cost functions, :func:`~lightning_nas.search.cost_functions`) or ``cost(arch) -> float``.
            Costs are cached per architecture. Parameters are counted without running the model;
            FLOPs and latency run it once per new architecture, and rejection sampling draws
            several architectures per candidate, which is slow on large models.
        tolerance: Half-width of the band around the target, as a fraction of the cost range,
            in (0, 1].
        prior: ``"arch"`` or ``"uniform"`` (see above).
        criterion: ``criterion(output, batch) -> loss`` to score candidates with (e.g. the
            cross-entropy on the batch's labels).
        max_draws: Draws per candidate before the nearest one is kept.

    Attributes:
        last_choices: The :class:`AttentiveChoice` of each attentive student of the last step.

    Example:
        >>> import torch
        >>> from lightning_nas import Supernet
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
        ...                example_input=torch.zeros(1, 4))
        >>> strategy = Attentive("bestup", k=3, cost="params")
        >>> teacher, students = strategy.sample(net.space, random.Random(0))
        >>> students == [net.min_arch()]
        True
        >>> losses = {8: 0.5, 16: 0.1}  # a stand-in for the losses on a batch, by hidden width
        >>> score = lambda archs, loss=None: [losses.get(next(iter(a.values())), 1.0) for a in archs]
        >>> chosen = strategy.select(net, students, score, random.Random(0))
        >>> len(chosen), chosen[-1] == net.min_arch(), len(strategy.last_choices[0].candidates)
        (3, True, 3)
        >>> all(min(c.losses) == c.losses[c.candidates.index(c.chosen)] for c in strategy.last_choices)
        True
    """

    teacher_is_full = True
    selects_on_batch = True

    def __init__(
        self,
        mode: str = "bestup",
        k: int = 3,
        num_attentive: int = 2,
        include_min: bool = True,
        cost: str | Callable[[Arch], float] = "params",
        tolerance: float = 0.05,
        prior: str = "arch",
        criterion: Callable[[Any, Any], Tensor] | None = None,
        max_draws: int = 100,
    ) -> None:
        if mode not in ("bestup", "worstup"):
            raise ValueError(f"Attentive: mode must be 'bestup' or 'worstup', got {mode!r}")
        for name, value, least in (("k", k, 1), ("num_attentive", num_attentive, 1), ("max_draws", max_draws, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Attentive: {name} must be an integer >= {least}, got {value!r}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance <= 1:
            raise ValueError(f"Attentive: tolerance must be a fraction of the cost range in (0, 1], got {tolerance!r}")
        if prior not in ("arch", "uniform"):
            raise ValueError(f"Attentive: prior must be 'arch' or 'uniform', got {prior!r}")
        if not callable(cost) and cost not in ("params", "flops", "latency"):
            raise ValueError(f"Attentive: cost must be 'params', 'flops', 'latency' or a callable, got {cost!r}")
        self.mode = mode
        self.k = k
        self.num_attentive = num_attentive
        self.include_min = include_min
        self.cost = cost
        self.tolerance = float(tolerance)
        self.prior = prior
        self.criterion = criterion
        self.max_draws = max_draws
        self.last_choices: list[AttentiveChoice] = []
        self._bound: Any = None
        self._cost_of: Callable[[Arch], float] | None = None
        self._costs: dict[tuple, float] = {}

    def __repr__(self) -> str:
        cost = getattr(self.cost, "__name__", self.cost) if callable(self.cost) else self.cost
        return (
            f"Attentive(mode={self.mode!r}, k={self.k}, num_attentive={self.num_attentive}, "
            f"include_min={self.include_min}, cost={cost!r}, tolerance={self.tolerance}, prior={self.prior!r})"
        )

    def sample(
        self, space: SearchSpace, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[Arch, list[Arch]]:
        # The attentive students are chosen in `select`, once the teacher's inputs are known.
        return space.max_arch(), [space.min_arch()] if self.include_min else []

    def cost_of(self, supernet: Supernet, arch: Arch) -> float:
        """The cost of ``arch`` (cached per supernet and architecture)."""
        if self._bound is not supernet:
            from lightning_nas.search import cost_functions  # search imports the callbacks' layer

            self._bound = supernet
            self._cost_of = self.cost if callable(self.cost) else cost_functions(supernet)[self.cost]
            self._costs = {}
        key = tuple(sorted(arch.items()))
        if key not in self._costs:
            self._costs[key] = float(self._cost_of(arch))  # type: ignore[misc]
        return self._costs[key]

    def draw(
        self, supernet: Supernet, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[float, list[Arch]]:
        """A target cost from the prior and ``k`` candidate architectures near it."""
        space = supernet.space
        low, high = self.cost_of(supernet, space.min_arch()), self.cost_of(supernet, space.max_arch())
        if self.prior == "arch":
            target = self.cost_of(supernet, space.sample(rng, where))
        else:
            target = rng.uniform(low, high)
        band = self.tolerance * (high - low)
        candidates = []
        for _ in range(self.k):
            nearest, distance = None, math.inf
            for _ in range(self.max_draws):
                arch = space.sample(rng, where)
                gap = abs(self.cost_of(supernet, arch) - target)
                if gap < distance:
                    nearest, distance = arch, gap
                if gap <= band:
                    break
            candidates.append(nearest)
        return target, candidates

    def select(
        self,
        supernet: Supernet,
        students: Sequence[Arch],
        score: Score,
        rng: random.Random,
        where: Callable[[Arch], bool] | None = None,
    ) -> list[Arch]:
        self.last_choices = []
        chosen = []
        for _ in range(self.num_attentive):
            target, candidates = self.draw(supernet, rng, where)
            losses = score(candidates, self.criterion)
            pick = min if self.mode == "bestup" else max
            index = pick(range(len(candidates)), key=losses.__getitem__)
            chosen.append(candidates[index])
            self.last_choices.append(
                AttentiveChoice(
                    target=target,
                    candidates=tuple(candidates),
                    costs=tuple(self.cost_of(supernet, a) for a in candidates),
                    losses=tuple(losses),
                    chosen=candidates[index],
                )
            )
        return [*chosen, *students]


#: Strategy classes by (case-insensitive) name; register your own with ``@STRATEGIES.register("name")``.
STRATEGIES: Registry[str, Callable[[], TrainingStrategy]] = Registry(
    "training strategy",
    {
        "sandwich": Sandwich,
        "instatune": InstaTune,
        "single_path": SinglePath,
        "spos": SinglePath,
        "attentive": Attentive,
        "bestup": Attentive,
        "worstup": functools.partial(Attentive, "worstup"),
    },
    normalize=str.lower,
)


def resolve_strategy(strategy: str | TrainingStrategy) -> TrainingStrategy:
    """A strategy instance from itself or its name (``"sandwich"``, ``"instatune"``, ``"spos"``,
    ``"attentive"`` / ``"bestup"``, ``"worstup"``).

    Example:
        >>> resolve_strategy("SPOS")
        SinglePath()
        >>> resolve_strategy("bogus")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
          ...
        lightning_nas.registry.UnknownKeyError: unknown training strategy 'bogus'; known: ['attentive', ...]
    """
    if isinstance(strategy, TrainingStrategy):
        return strategy
    return STRATEGIES[strategy]()


def distillation_loss(student: Any, teacher: Any, temperature: float = 1.0) -> Tensor:
    """In-place distillation loss between two model outputs.

    Class scores (last dimension > 1) use the KL divergence of the temperature-softened
    distributions, scaled by ``temperature**2``; this has the gradient of the soft cross-entropy
    that BigNAS uses. Other outputs (regression) use the mean squared error.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(distillation_loss(logits, logits))
        0.0
    """
    student, teacher = output_tensor(student), output_tensor(teacher).detach()
    if student.dim() == 0 or student.shape[-1] == 1:
        return F.mse_loss(student.float(), teacher.float())
    classes = student.shape[-1]
    log_p_student = F.log_softmax(student.float().reshape(-1, classes) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float().reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


#: ``distill(student_output, teacher_output)`` or ``distill(student_output, teacher_output, batch)``.
Distill = Callable[..., Tensor]


def train_students(
    supernet: Supernet,
    students: Sequence[Arch],
    run: Callable[[Any], Any],
    teacher_output: Any,
    batch: Any = None,
    *,
    distill: Distill = distillation_loss,
    backward: Callable[[Tensor], None] = Tensor.backward,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> float:
    """The students' half of a supernet training step; returns their mean distillation loss.

    Each student architecture runs ``run(model)`` (the teacher's inputs) with batch-norm running
    statistics frozen (they describe the teacher's network, not a mix of sub-networks), is
    distilled from the teacher's detached output, and ``backward(loss)`` adds its gradients to the
    teacher's: one optimizer step then sees them all. The architecture active before is restored.

    Args:
        supernet: The supernet being trained.
        students: The student architectures.
        run: Runs the model on the step's inputs, e.g. ``lambda model: call_model(model, batch)``.
        teacher_output: The teacher's output on the same inputs.
        batch: The training batch, given to a ``distill`` that takes three arguments (e.g. to use
            the labels too).
        distill: The distillation loss, default :func:`distillation_loss`.
        backward: Back-propagates one student's loss (a trainer's, with loss scaling and
            accumulation, under Lightning).
        context: A context each student's forward runs in (e.g. autocast).

    Example:
        >>> import torch
        >>> from lightning_nas import Supernet
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)),
        ...                example_input=torch.zeros(1, 4))
        >>> x = torch.randn(5, 4)
        >>> loss = train_students(net, [net.space.min_arch()], lambda model: model(x), net.model(x))
        >>> loss > 0 and net.model[0].weight.grad is not None
        True
    """
    if not students:
        return 0.0
    takes_batch = _required_positional(distill) >= 3
    teacher_output = _detach(teacher_output)
    previous = supernet.arch
    total = 0.0
    try:
        for arch in students:
            supernet.set_arch(arch)
            with context(), supernet.frozen_batchnorm_statistics():
                output = run(supernet.model)
                loss = distill(output, teacher_output, batch) if takes_batch else distill(output, teacher_output)
            total += float(loss.detach())
            backward(loss)
    finally:
        supernet.set_arch(previous)
    return total / len(students)


def choose_students(
    strategy: TrainingStrategy,
    supernet: Supernet,
    students: Sequence[Arch],
    run: Callable[[Any], Any],
    teacher_output: Any,
    batch: Any = None,
    *,
    rng: random.Random,
    where: Callable[[Arch], bool] | None = None,
    distill: Distill = distillation_loss,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> list[Arch]:
    """The students a step trains: ``strategy.select`` with a scorer on the step's inputs.

    Called after the teacher's backward and before :func:`train_students`, with the same
    arguments. The scorer runs each architecture on the teacher's inputs without gradients and
    with batch-norm running statistics frozen, and returns ``loss(output, batch)`` when the
    strategy passes a ``loss``, otherwise the students' ``distill`` loss against the teacher's
    output. The architecture active before is restored. ``reduce`` combines the losses measured
    here with the other processes' (their mean under DDP: the loss of the global batch), so that
    every process chooses the same students.

    Example:
        >>> import torch
        >>> from lightning_nas import Supernet
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)),
        ...                example_input=torch.zeros(1, 4))
        >>> x = torch.randn(5, 4)
        >>> students = choose_students(Attentive(cost="params"), net, [net.min_arch()], lambda m: m(x), net.model(x),
        ...                            rng=random.Random(0))
        >>> len(students)
        3
    """
    if not strategy.selects_on_batch:
        return list(students)
    takes_batch = _required_positional(distill) >= 3
    teacher_output = _detach(teacher_output)

    def score(archs: Sequence[Arch], loss: Callable[[Any, Any], Tensor] | None = None) -> list[float]:
        previous = supernet.arch
        values = []
        try:
            with torch.no_grad(), supernet.frozen_batchnorm_statistics():
                for arch in archs:
                    supernet.set_arch(arch)
                    with context():
                        output = run(supernet.model)
                        if loss is not None:
                            value = loss(output, batch)
                        elif takes_batch:
                            value = distill(output, teacher_output, batch)
                        else:
                            value = distill(output, teacher_output)
                    values.append(float(value))
        finally:
            supernet.set_arch(previous)
        return values if reduce is None else reduce(values)

    return strategy.select(supernet, students, score, rng, where)


def _required_positional(function: Callable[..., Any]) -> int:
    """How many positional arguments without a default ``function`` takes."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: the two-argument form
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in parameters)


def _detach(output: Any) -> Any:
    try:
        return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, output)
    except Exception:  # noqa: BLE001 - outputs that pytree cannot walk are used as they are
        return output
