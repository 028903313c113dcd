"""Training strategies: which sub-networks each training step runs, the distillation loss, and the
students' half of a supernet training step.

A step trains one *teacher* architecture on labels (with the user's own ``training_step`` under
:class:`~lightning_nas.callbacks.SupernetCallback`, with a loss function in
:func:`~lightning_nas.proxies.warmup`) and then any number of *student* architectures that learn
from the teacher's detached outputs (in-place distillation, BigNAS / AttentiveNAS):
:func:`train_students` is that second half, the one implementation both use.
"""

from __future__ import annotations

import inspect
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

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
    "InstaTune",
    "Sandwich",
    "SinglePath",
    "TrainingStrategy",
    "distillation_loss",
    "output_tensor",
    "resolve_strategy",
    "train_students",
]


class TrainingStrategy(ABC):
    """Chooses the architectures of one training step."""

    #: Whether the teacher is always the full network (its batch-norm statistics then stay valid
    #: for validating the full network during fit).
    teacher_is_full: bool = False

    @abstractmethod
    def sample(
        self, space: SearchSpace, rng: random.Random, where: Callable[[Arch], bool] | None = None
    ) -> tuple[Arch, list[Arch]]:
        """Return the teacher (trained on labels) and the students (trained by distillation).

        Randomly drawn architectures satisfy ``where`` when it is given (e.g. a deployment
        budget: there is no point training sub-networks that the search may never export).
        """

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
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


#: Strategy classes by (case-insensitive) name; register your own with ``@STRATEGIES.register("name")``.
STRATEGIES: Registry[str, type[TrainingStrategy]] = Registry(
    "training strategy",
    {"sandwich": Sandwich, "instatune": InstaTune, "single_path": SinglePath, "spos": SinglePath},
    normalize=str.lower,
)


def resolve_strategy(strategy: str | TrainingStrategy) -> TrainingStrategy:
    """A strategy instance from itself or its name (``"sandwich"``, ``"instatune"``, ``"spos"``).

    Example:
        >>> resolve_strategy("SPOS")
        SinglePath()
        >>> resolve_strategy("bogus")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
          ...
        lightning_nas.registry.UnknownKeyError: unknown training strategy 'bogus'; known: ['instatune', ...]
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
