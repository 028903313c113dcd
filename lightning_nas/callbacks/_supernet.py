"""``SupernetCallback``: train an unchanged LightningModule as a weight-entangled supernet."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lightning_nas.callbacks._ddp import average_gradients, average_values, check_strategy, ddp_model
from lightning_nas.inputs import call_model
from lightning_nas.search import check_feasible, cost_functions, resolve_limits
from lightning_nas.space import Depth, Dimension, Kernel, Width
from lightning_nas.strategies import (
    TrainingStrategy,
    _detach,
    choose_students,
    distillation_loss,
    resolve_strategy,
    train_students,
)
from lightning_nas.supernet import Supernet

__all__ = ["SupernetCallback", "find_supernet_callback"]


class SupernetCallback(L.Callback):
    """Turns the LightningModule's model into a supernet at setup and trains it with a strategy.

    The user's ``training_step`` is unchanged: it trains the strategy's *teacher* architecture
    (the full model for the sandwich rule) on labels. After its backward, the callback runs the
    strategy's *students* on the same inputs and back-propagates their distillation loss through
    ``trainer.strategy.backward``, so precision plugins (16-mixed loss scaling, bf16), gradient
    accumulation, gradient clipping and ``LightningModule.backward`` overrides all apply, and the
    single optimizer step of automatic optimization sees the sum of all gradients. The students'
    backward passes also call the ``on_before_backward`` / ``on_after_backward`` hooks.

    Under DDP (``strategy="ddp"`` or ``"ddp_spawn"``) every rank draws the same architectures (one
    seeded sampler, saved in checkpoints), and the summed gradients of teacher and students are
    averaged over the ranks in one all-reduce before each optimizer step (DDP's own
    synchronisation would miss the students). FSDP, FSDP2, DeepSpeed, ``sync_batchnorm=True``
    and manual optimization under DDP are refused before training.

    Args:
        strategy: ``"sandwich"`` (default), ``"instatune"``, ``"spos"``, ``"attentive"`` (BestUp),
            ``"worstup"`` or a :class:`~lightning_nas.strategies.TrainingStrategy`.
        space: Narrower choices for some dimensions, ``{name: values}``.
        module: Attribute path of the network inside the LightningModule (e.g. ``"model"``);
            by default the LightningModule itself, whose ``forward`` must then be what
            ``training_step`` calls.
        example_input: Input to trace the network with; defaults to the LightningModule's
            ``example_input_array``.
        dimensions: Explicit dimensions instead of automatic discovery.
        distill: ``loss(student_output, teacher_output)`` for the students, or
            ``loss(student_output, teacher_output, batch)`` to also use the training batch (e.g.
            its labels); default :func:`~lightning_nas.strategies.distillation_loss`.
        seed: Seed of the architecture sampling.
        adapter: Adapter name or instance; ``adapter_options`` are passed to it.
        prepare: Called with the new :class:`~lightning_nas.Supernet` before training, e.g. to
            reorder weights by importance.
        forward: ``forward(model, batch)`` to run the network on a training batch, used to
            recalibrate batch norm; default :func:`~lightning_nas.call_model`.
        calibration_batches: Training batches used to recalibrate batch norm before validation
            when the strategy does not train the full network every step (SPOS).
        limits: Upper limits on costs, e.g. ``{"params": 0.5}`` (a float in (0, 1] on
            ``params`` / ``flops`` is a fraction of the full network's): randomly drawn
            sub-networks (students, SPOS paths) then come only from those within every limit, the
            ones a search under the same limits can export, so no training goes to the others.
            The full network (teacher) and the smallest one still train. Checked before training.
        costs: Cost functions ``cost(arch) -> float`` by name, in addition to ``"params"`` and
            ``"flops"`` (see :func:`~lightning_nas.search.cost_functions`); they may read this
            callback's :attr:`supernet`. Results are cached per architecture.

    Example:
        >>> from lightning_nas.demo import DigitsClassifier, DigitsDataModule
        >>> callback = SupernetCallback(strategy="sandwich", module="model")
        >>> trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1,
        ...                     callbacks=[callback], logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(DigitsClassifier(width=8, hidden=16), DigitsDataModule())
        >>> len(callback.supernet.space) > 0
        True
    """

    def __init__(
        self,
        strategy: str | TrainingStrategy = "sandwich",
        space: Mapping[str, Sequence[int] | int] | None = None,
        module: str | None = None,
        example_input: Any = None,
        dimensions: Mapping[str, Dimension] | None = None,
        distill: Callable[[Any, Any], Tensor] = distillation_loss,
        seed: int = 0,
        adapter: Any = None,
        adapter_options: Mapping[str, Any] | None = None,
        prepare: Callable[[Supernet], None] | None = None,
        forward: Callable[[nn.Module, Any], Any] = call_model,
        calibration_batches: int = 16,
        limits: Mapping[str, float] | None = None,
        costs: Mapping[str, Callable[[dict[str, int]], float]] | None = None,
    ) -> None:
        self.strategy = resolve_strategy(strategy)
        self.space = dict(space) if space else None
        self.module = module
        self.example_input = example_input
        self.dimensions = dimensions
        self.distill = distill
        self.seed = seed
        self.adapter = adapter
        self.adapter_options = dict(adapter_options or {})
        self.prepare = prepare
        self.forward = forward
        self.calibration_batches = calibration_batches
        self.limits = dict(limits or {})
        self.costs = dict(costs or {})
        self._cost_table: dict[str, Callable[[dict[str, int]], float]] = {}
        self._resolved_limits: dict[str, float] = {}
        self._cost_cache: dict[tuple, bool] = {}
        self._validation_snapshot: Any = None
        self.supernet: Supernet | None = None
        self._rng = random.Random(seed)
        self._pending_state: dict[str, Any] | None = None
        self._hook: Any = None
        self._capture: tuple[tuple, dict, Any] | None = None
        self._capturing = False
        self._teacher: dict[str, int] | None = None
        self._students: list[dict[str, int]] = []
        self._in_student_backward = False
        self._batch: Any = None
        self._ddp: DistributedDataParallel | None = None
        self._classes: dict[str, str | None] = {}

    @property
    def state_key(self) -> str:
        # Not the strategy: a resume with another strategy must find (and restore) this state.
        return self._generate_state_key(module=self.module)

    # building ---------------------------------------------------------------------------------
    def build(self, pl_module: L.LightningModule) -> Supernet:
        """Create the supernet for ``pl_module`` (idempotent; called at setup)."""
        if self.supernet is not None:
            return self.supernet
        target = self._target(pl_module)
        example = self.example_input
        if example is None:
            example = pl_module.example_input_array
        if example is None and self.dimensions is None:
            raise MisconfigurationException(
                "SupernetCallback needs an example input to find the elastic dimensions: set "
                "`self.example_input_array` in the LightningModule or pass `example_input=`"
            )
        if isinstance(example, Tensor):
            example = example.to(next(target.parameters()).device)
        try:
            supernet = Supernet(
                target,
                self.dimensions,
                example_input=example,
                space=self.space,
                adapter=self.adapter,
                **self.adapter_options,
            )
        except (ValueError, TypeError, RuntimeError, KeyError) as err:
            raise MisconfigurationException(f"SupernetCallback: {err}") from err
        if supernet.model is not target:  # the target itself became an elastic container
            parent, _, name = (self.module or "").rpartition(".")
            setattr(pl_module.get_submodule(parent), name, supernet.model)
        self.supernet = supernet  # before the limits: cost functions may read it
        if self.limits:
            cost_table = cost_functions(supernet, extra=self.costs)
            try:
                self._resolved_limits = resolve_limits(supernet, self.limits)
                check_feasible(supernet, self._resolved_limits, cost_table)
            except (ValueError, TypeError) as err:
                raise MisconfigurationException(f"SupernetCallback(limits=...): {err}") from err
            self._cost_table = cost_table
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
            self._pending_state = None
        if self.prepare is not None:
            self.prepare(supernet)
        return supernet

    def within_limits(self, arch: dict[str, int]) -> bool:
        """Whether ``arch`` meets every cost limit (``True`` without limits)."""
        key = tuple(sorted(arch.items()))
        if key not in self._cost_cache:
            self._cost_cache[key] = all(
                self._cost_table[name](arch) <= limit for name, limit in self._resolved_limits.items()
            )
        return self._cost_cache[key]

    def _target(self, pl_module: L.LightningModule) -> nn.Module:
        if not self.module:
            return pl_module
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError:
            raise MisconfigurationException(
                f"SupernetCallback(module={self.module!r}): {type(pl_module).__name__} has no such submodule"
            ) from None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_strategy(trainer, pl_module)
        datamodule = trainer.datamodule
        self._classes = {
            "module_class": class_path(type(pl_module)),
            "datamodule_class": None if datamodule is None else class_path(type(datamodule)),
        }
        self.build(pl_module)

    def configuration(self) -> dict[str, Any]:
        """The supernet's configuration as plain JSON-able data, saved in every checkpoint.

        With the LightningModule's class (recorded as ``module_class``) and its saved
        hyperparameters, it rebuilds the supernet from a checkpoint alone
        (:func:`~lightning_nas.callbacks.load_supernet_checkpoint`). Options that are not plain
        data (an adapter instance, callables in ``adapter_options``) are listed under
        ``"not_saved"``; such a checkpoint cannot be rebuilt without them.

        Example:
            >>> SupernetCallback(module="model", space={"fc": [8, 16]}).configuration()["space"]
            {'fc': [8, 16]}
        """
        adapter = self.adapter if self.supernet is None else self.supernet.adapter.name
        config: dict[str, Any] = {"not_saved": []}
        values = {
            "module": self.module,
            "adapter": adapter,
            "adapter_options": self.adapter_options,
            "space": self.space,
            "dimensions": None
            if self.dimensions is None
            else {n: _dimension_data(d) for n, d in self.dimensions.items()},
            "limits": self.limits,
            "module_class": self._classes.get("module_class"),
            "datamodule_class": self._classes.get("datamodule_class"),
        }
        for key, value in values.items():
            try:
                config[key] = json.loads(json.dumps(value))
            except (TypeError, ValueError):
                config[key] = None
                config["not_saved"].append(key)
        return config

    # training ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook = self.supernet.model.register_forward_hook(self._record, with_kwargs=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hook()
        self.supernet.set_arch(None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _record(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._capturing:
            self._capture = (args, kwargs, _detach(output))
            self._capturing = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch
        self._ddp = ddp_model(trainer)
        if self._ddp is not None:
            self._ddp.require_backward_grad_sync = False
        if self.limits:
            self._teacher, self._students = self.strategy.sample(self.supernet.space, self._rng, self.within_limits)
        else:
            self._teacher, self._students = self.strategy.sample(self.supernet.space, self._rng)
        self.supernet.set_arch(self._teacher)
        self._capture = None
        self._capturing = bool(self._students) or self.strategy.selects_on_batch

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._in_student_backward:
            return
        if not self._students and not self.strategy.selects_on_batch:
            self._after_last_backward(trainer)
            return
        if self._capture is None:
            raise MisconfigurationException(
                f"SupernetCallback: training_step never called the supernet "
                f"({type(self.supernet.model).__name__}), so the students of {self.strategy!r} have no "
                "inputs; pass `module=` naming the network that training_step calls"
            )
        args, kwargs, teacher_output = self._capture
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        context = trainer.precision_plugin.forward_context
        self._students = choose_students(
            self.strategy,
            self.supernet,
            self._students,
            lambda model: model(*args, **kwargs),
            teacher_output,
            self._batch,
            rng=self._rng,
            where=self.within_limits if self.limits else None,
            distill=self.distill,
            context=context,
            reduce=None if self._ddp is None else lambda values: average_values(self._ddp, values),
        )
        self._in_student_backward = True
        try:
            loss = train_students(
                self.supernet,
                self._students,
                lambda model: model(*args, **kwargs),
                teacher_output,
                self._batch,
                distill=self.distill,
                backward=lambda loss: trainer.strategy.backward(loss / trainer.accumulate_grad_batches, optimizer),
                context=context,
            )
        finally:
            self._in_student_backward = False
        pl_module.log("nas/distill_loss", loss, on_step=True, on_epoch=True)
        self._after_last_backward(trainer)

    def _after_last_backward(self, trainer: L.Trainer) -> None:
        # DDP's own synchronisation is off for the step (see `_ddp`): average the gradients of
        # teacher and students once, at the accumulation boundary, before the optimizer step.
        if self._ddp is not None and not trainer.fit_loop._should_accumulate():
            average_gradients(self._ddp)
            # As after DDP's own synchronised step: rank 0's buffers are broadcast before the next forward.
            self._ddp.require_forward_param_sync = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._capture = None
        self._capturing = False
        self._batch = None
        self.supernet.set_arch(None)
        if self._ddp is not None:
            self._ddp.require_backward_grad_sync = True
            self._ddp = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation during fit measures the full network. When the strategy does not train the
        # full network every step, the shared batch-norm statistics describe a mix of
        # sub-networks: recalibrate them for the full network, and restore them afterwards.
        if self.supernet is None or trainer.sanity_checking:
            return
        self.supernet.set_arch(None)
        calibration = trainer.train_dataloader
        if self.strategy.teacher_is_full or not self.supernet.has_batchnorm or calibration is None:
            return
        self._validation_snapshot = self.supernet.batchnorm_snapshot()
        self._validation_snapshot.__enter__()
        self.supernet.recalibrate_batchnorm(calibration, self.forward, self.calibration_batches)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_snapshot is not None:
            self._validation_snapshot.__exit__(None, None, None)
            self._validation_snapshot = None

    # checkpoints ------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the state key dropped the strategy keep it in their key.
        states = checkpoint.get("callbacks", {})
        if self.state_key not in states:
            legacy = f"{self.state_key[:-1]}, 'strategy': "
            found = [key for key in states if key.startswith(legacy)]
            if len(found) == 1:
                states[self.state_key] = {**states[found[0]], "strategy": found[0][len(legacy) + 1 : -2]}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "rng": self._rng.getstate(),
            "seed": self.seed,
            "strategy": repr(self.strategy),
            "config": self.configuration(),
        }
        if self.example_input is not None:
            state["example_input"] = self.example_input
        if self.supernet is not None:
            state["supernet"] = self.supernet.supernet_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.supernet is None:
            self._pending_state = state_dict
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        trained_with = state.get("strategy")
        if trained_with is not None and trained_with != repr(self.strategy):
            rank_zero_warn(
                f"SupernetCallback: the checkpoint was trained with {trained_with}, training goes on with "
                f"{self.strategy!r}; the supernet and its sampling state are restored"
            )
        rng_state = state["rng"]
        self._rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))
        if "supernet" in state:
            self.supernet.load_supernet_state(state["supernet"])


_DIMENSION_TYPES = {cls.__name__: cls for cls in (Width, Depth, Kernel)}


def _dimension_data(dimension: Dimension) -> dict[str, Any]:
    if type(dimension).__name__ not in _DIMENSION_TYPES:
        raise TypeError(f"{type(dimension).__name__} is not a dimension type that checkpoints can rebuild")
    return {"type": type(dimension).__name__, **dimension._fields()}


def dimension_from_data(data: Mapping[str, Any]) -> Dimension:
    """Rebuild a dimension saved by :meth:`SupernetCallback.configuration`.

    Example:
        >>> dimension_from_data({"type": "Width", "axes": ["fc1:out"], "choices": [8, 16], "size": 16, "unit": 1})
        Width(axes=('fc1:out',), choices=(8, 16), size=16, unit=1)
    """
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind not in _DIMENSION_TYPES:
        raise ValueError(f"unknown dimension type {kind!r} in the checkpoint; known: {sorted(_DIMENSION_TYPES)}")
    return _DIMENSION_TYPES[kind](**fields)


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class, as Lightning's CLI names classes."""
    return f"{cls.__module__}.{cls.__qualname__}"


def find_supernet_callback(trainer: L.Trainer) -> SupernetCallback:
    """The trainer's :class:`SupernetCallback`; a clear error if there is none."""
    for callback in trainer.callbacks:
        if isinstance(callback, SupernetCallback):
            return callback
    raise MisconfigurationException("this callback needs a SupernetCallback in the same Trainer(callbacks=[...])")
