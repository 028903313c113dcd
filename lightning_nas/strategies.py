"""Training strategies: which sub-networks each training step runs, and the distillation loss.

A step trains one *teacher* architecture with the user's own ``training_step`` (labels, dropout,
everything the user wrote) and then any number of *student* architectures that learn from the
teacher's detached outputs (in-place distillation, BigNAS / AttentiveNAS).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lightning_nas.inputs import output_tensor
from lightning_nas.space import Arch, SearchSpace

__all__ = [
    "InstaTune",
    "Sandwich",
    "SinglePath",
    "TrainingStrategy",
    "distillation_loss",
    "output_tensor",
    "resolve_strategy",
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


_BY_NAME: dict[str, type[TrainingStrategy]] = {
    "sandwich": Sandwich,
    "instatune": InstaTune,
    "single_path": SinglePath,
    "spos": SinglePath,
}


def resolve_strategy(strategy: str | TrainingStrategy) -> TrainingStrategy:
    """A strategy instance from itself or its name (``"sandwich"``, ``"instatune"``, ``"spos"``)."""
    if isinstance(strategy, TrainingStrategy):
        return strategy
    try:
        return _BY_NAME[strategy.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown training strategy {strategy!r}; choose one of {sorted(_BY_NAME)}") from None


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
