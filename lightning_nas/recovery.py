"""Recovery distillation: briefly distil the search's best candidates from the full model, then choose.

A sub-network with inherited weights was only ever trained as a part of the supernet, and the
one-shot scores of close candidates differ by less than their noise. Minitron (Sreenivas et al.,
2024) therefore distils each of the top-K candidates of its search for a short while before it
picks one; the ranking after this recovery is the one that counts. Here each candidate is
extracted as a dense model and trained by a :class:`Distiller` to match the fine-tuned full model:

- its output distribution (KL divergence of the temperature-softened logits, per token for
  language models), as in every distillation method;
- its hidden states, layer by layer (mean squared error over the real tokens), as DynaBERT and
  CoFi do for encoders: with fewer layers, student layer ``j`` of ``n`` matches teacher layer
  ``round(j * N / n)`` of ``N``; with a narrower hidden size, the teacher's first channels, the
  supernet's own slicing convention;
- optionally the task's labels.

:func:`recover` runs this for every candidate and returns them best first by the validation
metric the user's LightningModule logs; with ``final_steps``, the winner is then distilled for
longer (Minitron's last stage: the short runs only choose, the long one trains the export).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_nas.callbacks._quiet import QUIET_TRAINER, quiet_lightning
from lightning_nas.callbacks._search import validated_metric
from lightning_nas.inputs import call_model, hidden_states, output_loss, output_tensor, split_batch
from lightning_nas.search import check_direction
from lightning_nas.space import Arch
from lightning_nas.strategies import distillation_loss
from lightning_nas.supernet import Supernet

__all__ = ["HIDDEN_LOSSES", "RANK_BY", "Distiller", "Recovered", "hidden_state_loss", "recover"]

RANK_BY = ("metric", "distillation")  # what recover() can rank the candidates by
HIDDEN_LOSSES = ("mse", "normalised")  # Distiller's hidden_loss: hidden_state_loss(normalise=False / True)


def hidden_state_loss(
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    attention_mask: Tensor | None = None,
    *,
    normalise: bool = False,
) -> Tensor:
    """Mean squared error between each student layer's output and its teacher layer's.

    Both are sequences of hidden states as Hugging Face models return them with
    ``output_hidden_states=True`` (the embeddings' output first, then one per layer); the
    embeddings' output is not matched. Student layer ``j`` of ``n`` is matched to teacher layer
    ``round(j * N / n)`` of ``N``, and to the teacher's first ``d`` channels when it has only
    ``d``. With an ``attention_mask``, only real tokens count. With ``normalise``, each layer's
    error is divided by the mean square of its teacher states (1: as far off as all zeros), so
    that every layer counts alike whatever its scale: a decoder's residual stream grows with
    depth and carries a few channels orders of magnitude larger than the rest.

    Example:
        >>> states = (torch.zeros(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4))
        >>> float(hidden_state_loss(states, states))
        0.0
        >>> float(hidden_state_loss(states[:2], (states[0], torch.zeros(1, 2, 4), torch.ones(1, 2, 4) * 3)))
        4.0
        >>> round(float(hidden_state_loss(states[:2], (states[0], torch.zeros(1, 2, 4), torch.ones(1, 2, 4) * 3),
        ...                               normalise=True)), 4)
        0.4444
    """
    layers, teacher_layers = len(student) - 1, len(teacher) - 1
    if layers < 1 or teacher_layers < 1:
        raise ValueError("hidden-state distillation needs at least one layer's hidden states on both sides")
    total = student[1].new_zeros((), dtype=torch.float32)
    for j in range(1, layers + 1):
        s = student[j].float()
        t = teacher[round(j * teacher_layers / layers)][..., : s.shape[-1]].detach().float()
        error = _token_mean((s - t).pow(2).mean(-1), attention_mask)
        if normalise:
            error = error / _token_mean(t.pow(2).mean(-1), attention_mask).clamp(min=1e-12)
        total = total + error
    return total / layers


def _token_mean(values: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean of per-token ``values`` over the real tokens (all of them without a matching mask)."""
    if attention_mask is not None and attention_mask.shape == values.shape:
        mask = attention_mask.to(values.dtype)
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return values.mean()


class Distiller(L.LightningModule):
    """Trains ``student`` to reproduce a frozen ``teacher`` on the batches of a task.

    The loss is ``distillation_loss(student, teacher, temperature) + hidden_weight *``
    :func:`hidden_state_loss` (normalised per layer with ``hidden_loss="normalised"``)
    ``+ label_weight *`` the task loss on the batch's labels (the
    model's own ``.loss`` for Hugging Face models, else cross-entropy). AdamW on the student
    only, linear warm-up over ``warmup`` of the steps, then linear decay. The teacher is set to
    eval mode and ``requires_grad_(False)`` in place and stays in eval mode while the student
    trains.

    Args:
        student: The model to train (e.g. :meth:`~lightning_nas.Supernet.extract` of a candidate).
        teacher: The model to reproduce (e.g. the fine-tuned full model).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: Fraction of the steps of linear warm-up.
        temperature: Softmax temperature of the logits' KL divergence.
        hidden_weight: Weight of the hidden-state loss (0: logits only; needs models that return
            ``hidden_states``, asked for with ``output_hidden_states=True``).
        hidden_loss: ``"mse"`` (plain mean squared error) or ``"normalised"`` (each layer's
            error relative to its teacher states' mean square; see :func:`hidden_state_loss`).
        label_weight: Weight of the task loss on the batch's labels (0: distillation only).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                     intermediate_size=32)
        >>> teacher, student = BertForSequenceClassification(config), BertForSequenceClassification(config)
        >>> batch = {"input_ids": torch.randint(0, 50, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}
        >>> bool(Distiller(student, teacher).loss(batch) > 0)
        True
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        temperature: float = 1.0,
        hidden_weight: float = 1.0,
        hidden_loss: str = "mse",
        label_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.check_options(
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            temperature=temperature,
            hidden_weight=hidden_weight,
            hidden_loss=hidden_loss,
            label_weight=label_weight,
        )
        self.save_hyperparameters(ignore=["student", "teacher"])
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)

    @staticmethod
    def check_options(
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        temperature: float = 1.0,
        hidden_weight: float = 1.0,
        hidden_loss: str = "mse",
        label_weight: float = 0.0,
    ) -> None:
        """Raise a one-line ``ValueError`` naming the first bad option (and ``TypeError`` for an unknown one)."""
        for name, value in (("lr", lr), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (
            ("weight_decay", weight_decay),
            ("hidden_weight", hidden_weight),
            ("label_weight", label_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup}")
        if hidden_loss not in HIDDEN_LOSSES:
            raise ValueError(f"hidden_loss must be one of {', '.join(HIDDEN_LOSSES)}, got {hidden_loss!r}")

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # no dropout in the targets
        return self

    def loss(self, batch: Any) -> Tensor:
        """The distillation loss of the student on one batch."""
        hp = self.hparams
        inputs, targets = split_batch(batch)
        keyword = isinstance(inputs, Mapping)
        options = {"output_hidden_states": True} if hp.hidden_weight and keyword else {}
        with torch.no_grad():
            teacher = call_model(self.teacher, batch, **options)
        with_labels = hp.label_weight > 0 and targets is not None
        if keyword and with_labels:
            student = self.student(**inputs, labels=targets, **options)
        else:
            student = call_model(self.student, batch, **options)
        loss = distillation_loss(student, teacher, hp.temperature)
        if hp.hidden_weight:
            student_states, teacher_states = hidden_states(student), hidden_states(teacher)
            if student_states is None or teacher_states is None:
                raise ValueError(
                    f"hidden_weight={hp.hidden_weight} needs outputs with hidden states; "
                    f"{type(self.student).__name__} returned none (pass hidden_weight=0)"
                )
            mask = inputs.get("attention_mask") if keyword else None
            normalise = hp.hidden_loss == "normalised"
            loss = loss + hp.hidden_weight * hidden_state_loss(
                student_states, teacher_states, mask, normalise=normalise
            )
        if with_labels:
            task = output_loss(student) if keyword else None
            if task is None:
                task = F.cross_entropy(output_tensor(student), targets)
            loss = loss + hp.label_weight * task
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("distill_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # How far the student is from the teacher on held-out data: a continuous, low-variance score.
        self.log("val_distill_loss", self.loss(batch))

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.student.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup * steps)

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (steps - step) / max(1, steps - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@dataclass
class Recovered:
    """A candidate after recovery distillation.

    Attributes:
        arch: Its architecture.
        model: The distilled dense model.
        score: Its validation metric after distillation.
        score_before: Its validation metric with inherited weights (the search's), if known.
        steps: Distillation steps it got in all.
        score_ranked: For the winner of a ranking followed by a final distillation, its score
            after the ranking's short distillation (``score`` is the final one); else ``None``.
        distill_loss: Its :class:`Distiller` loss on the validation data, every term of it (lower:
            closer to the teacher, and with ``label_weight``, to the labels).
        distill_loss_ranked: Like ``score_ranked``, for ``distill_loss``.
    """

    arch: Arch
    model: nn.Module
    score: float
    score_before: float | None = None
    steps: int = 0
    score_ranked: float | None = None
    distill_loss: float = math.nan
    distill_loss_ranked: float | None = None


@contextmanager
def _model_in(pl_module: L.LightningModule, attribute: str, model: nn.Module) -> Any:
    original = getattr(pl_module, attribute)
    setattr(pl_module, attribute, model)
    try:
        yield pl_module
    finally:
        setattr(pl_module, attribute, original)


def recover(
    supernet: Supernet,
    candidates: Sequence[Arch],
    pl_module: L.LightningModule,
    train_dataloaders: Callable[[], Iterable[Any]],
    val_dataloaders: Any,
    *,
    metric: str,
    steps: int,
    final_steps: int = 0,
    direction: str = "maximize",
    rank_by: str = "metric",
    module: str = "model",
    teacher: nn.Module | None = None,
    scores_before: Sequence[float] | None = None,
    seed: int = 0,
    trainer_options: Mapping[str, Any] | None = None,
    on_candidate: Callable[[int, Arch], None] | None = None,
    on_final: Callable[[Recovered], None] | None = None,
    **distiller_options: Any,
) -> list[Recovered]:
    """Distil each candidate from the full model for ``steps`` steps; return them best first.

    Each candidate is extracted from ``supernet`` as a dense model, trained by a
    :class:`Distiller` (``distiller_options`` go to it) in a Lightning ``Trainer`` on the
    batches of ``train_dataloaders()`` (called once per candidate and seeded alike, so every
    candidate sees the same batches), then scored by the ``metric`` that ``pl_module``'s
    ``validation_step`` logs with the candidate in place of its attribute ``module``, and by its
    distillation loss on the same validation data; ``rank_by`` says which of the two ranks them. With
    ``final_steps``, the best is then distilled that many steps more (a new warm-up and decay)
    and scored again; it stays first. The supernet is not changed.

    Args:
        supernet: The trained supernet.
        candidates: Architectures to recover, e.g. from :meth:`~lightning_nas.search.SearchResult.top`.
        pl_module: The user's LightningModule whose attribute ``module`` is the supernet's model.
        train_dataloaders: Returns the training batches (e.g. ``datamodule.train_dataloader``).
        val_dataloaders: Validation data for ``pl_module.validation_step``.
        metric: The logged validation metric.
        steps: Optimizer steps per candidate.
        final_steps: Further optimizer steps for the best candidate after the ranking (0: none).
        direction: ``"maximize"`` or ``"minimize"`` the metric.
        rank_by: ``"metric"`` (the user's) or ``"distillation"`` (the validation distillation
            loss, lowest first: continuous, so far less noisy than an accuracy on a small
            validation set when candidates are close; Minitron ranks by a loss too).
        module: Attribute of ``pl_module`` holding the model.
        teacher: The model to distil from (default: the supernet's largest sub-network, extracted).
        scores_before: The candidates' scores with inherited weights, to report alongside.
        seed: Seed of each candidate's training.
        trainer_options: Further ``Trainer`` arguments (callbacks, accelerator, precision, ...).
        on_candidate: Called with ``(index, arch)`` before each candidate trains (progress).
        on_final: Called with the ranking's winner before its final distillation (progress).

    Returns:
        One :class:`Recovered` per candidate, best score first.

    Example:
        >>> from lightning_nas.apps import TextClassifier
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                     intermediate_size=32)
        >>> module = TextClassifier(BertForSequenceClassification(config), num_labels=2, max_length=8)
        >>> net = Supernet(module.model, example_input=module.example_input_array)
        >>> rows = [{"input_ids": torch.randint(0, 50, (8,)), "labels": i % 2} for i in range(8)]
        >>> loader = torch.utils.data.DataLoader(rows, batch_size=4)
        >>> found = recover(net, [net.space.min_arch()], module, lambda: loader, loader, metric="val_acc", steps=2)
        >>> len(found), 0 <= found[0].score <= 1
        (1, True)
    """
    direction = check_direction(direction)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if final_steps < 0:
        raise ValueError(f"final_steps must be >= 0, got {final_steps}")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    if not candidates:
        raise ValueError("no candidates to recover")
    if scores_before is not None and len(scores_before) != len(candidates):
        raise ValueError(f"{len(scores_before)} scores for {len(candidates)} candidates")
    if getattr(pl_module, module, None) is not supernet.model:
        raise ValueError(f"pl_module.{module} is not the supernet's model; pass module= naming the attribute that is")
    Distiller.check_options(**distiller_options)
    if teacher is None:
        teacher = supernet.extract(supernet.max_arch())
    options = {**QUIET_TRAINER, "devices": 1, **(trainer_options or {}), "max_epochs": -1}
    accelerator = options.get("accelerator", "auto")

    def distil(student: nn.Module, steps: int, seed: int) -> tuple[float, float]:
        """Train ``student``; its metric and validation distillation loss."""
        L.seed_everything(seed, verbose=False)
        distiller = Distiller(student.train(), teacher, **distiller_options)
        with quiet_lightning(), warnings.catch_warnings():
            # The teacher stays in eval mode on purpose (Distiller.train keeps it there).
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
            trainer = L.Trainer(**{**options, "max_steps": steps})
            trainer.fit(distiller, train_dataloaders=train_dataloaders())
        distance = validated_metric(distiller, val_dataloaders, "val_distill_loss", accelerator=accelerator)
        student.eval()
        with _model_in(pl_module, module, student):
            return validated_metric(pl_module, val_dataloaders, metric, accelerator=accelerator), distance

    found = []
    for index, arch in enumerate(candidates):
        if on_candidate is not None:
            on_candidate(index, arch)
        student = supernet.extract(arch)
        score, distance = distil(student, steps, seed)
        before = None if scores_before is None else float(scores_before[index])
        found.append(Recovered(dict(arch), student, score, before, steps, distill_loss=distance))
    sign = -1 if direction == "maximize" else 1
    if rank_by == "metric":
        found.sort(key=lambda r: sign * r.score if not math.isnan(r.score) else math.inf)
    else:
        found.sort(key=lambda r: r.distill_loss if not math.isnan(r.distill_loss) else math.inf)
    if final_steps:
        best = found[0]
        if on_final is not None:
            on_final(best)
        score, distance = distil(best.model, final_steps, seed)
        found[0] = replace(
            best,
            score=score,
            steps=steps + final_steps,
            score_ranked=best.score,
            distill_loss=distance,
            distill_loss_ranked=best.distill_loss,
        )
    return found
