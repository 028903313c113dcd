"""The supernet: an ordinary model whose modules became elastic, plus its named dimensions."""

from __future__ import annotations

import copy
import functools
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_nas._table import format_table
from lightning_nas.adapters import Adapter, ElasticPlan, Segment, find_adapter
from lightning_nas.elastic import ElasticModule, Index, elastic_types
from lightning_nas.inputs import call_model, call_with_example, eval_mode, to_device
from lightning_nas.space import Arch, Depth, Dimension, Kernel, SearchSpace, Width

__all__ = ["Supernet", "at_arch"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _call_on(example_input: Any, model: nn.Module) -> Any:
    return call_with_example(model, example_input)


class Supernet(nn.Module):
    """A weight-entangled supernet made from an ordinary ``nn.Module``.

    The model's supported layers are swapped, in place, for elastic versions that share the very
    same parameters (the model's state-dict keys and optimizers are unaffected). Every sub-network
    is the leading slice of those weights; :meth:`set_arch` activates one, :meth:`extract` returns
    it as a standalone dense model whose outputs equal the sub-network's.

    Like PEFT's ``PeftModel``, the supernet is itself an ``nn.Module`` wrapping the model as its
    submodule :attr:`model`: ``net(x)`` runs the active sub-network, and ``net.eval()``,
    ``net.to(device)``, ``net.parameters()`` act on the model. ``net.state_dict()`` holds the
    model's weights under ``model.``; the search space and active architecture are
    :meth:`supernet_state`.

    Args:
        model: The model. Its submodules are replaced in place; use :attr:`model` afterwards
            (it is the same object unless ``model`` itself is an elastic container).
        dimensions: Explicit dimensions (:class:`~lightning_nas.Width`, :class:`~lightning_nas.Depth`,
            :class:`~lightning_nas.Kernel`), by name, planned by the
            :class:`~lightning_nas.adapters.ExplicitDimensionsAdapter`. Without them an adapter
            finds them by tracing the forward on ``example_input``.
        example_input: An input for ``model(...)`` (a tensor, a tuple of positional arguments or a
            mapping of keyword arguments). Needed to discover dimensions and to measure FLOPs.
        space: Narrower choices for some dimensions, ``{name: values}`` (an int fixes one).
        adapter: Name or instance of the adapter to use; by default the first that matches
            (``"explicit"`` when ``dimensions`` are given).
        **adapter_options: Passed to the adapter, e.g. ``width_fractions=(0.5, 1.0)``.

    Attributes:
        warmup_steps: Optimizer steps that :func:`~lightning_nas.proxies.warmup` took on this
            supernet; :func:`~lightning_nas.proxies.sigeo` picks its warmed-up weights when it is
            positive.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        >>> net = Supernet(model, example_input=torch.randn(1, 4))
        >>> net.space
        SearchSpace({'0': [8, 16, 24, 32]})
        >>> small = net.extract({"0": 8})
        >>> small[0]
        Linear(in_features=4, out_features=8, bias=True)
        >>> net.num_params({"0": 8}) == sum(p.numel() for p in small.parameters())
        True
        >>> net.set_arch({"0": 8})
        >>> x = torch.randn(3, 4)
        >>> torch.equal(net.eval()(x), small(x))  # the supernet computes as its active sub-network
        True
    """

    def __init__(
        self,
        model: nn.Module,
        dimensions: Mapping[str, Dimension] | None = None,
        *,
        example_input: Any = None,
        space: Mapping[str, Sequence[int] | int] | None = None,
        adapter: str | Adapter | None = None,
        **adapter_options: Any,
    ) -> None:
        if isinstance(model, ElasticModule) or any(isinstance(m, ElasticModule) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} is already a supernet; build one Supernet per model")
        super().__init__()  # before any attribute: nn.Module's __setattr__ needs its registries
        self.example_input = example_input
        self.warmup_steps = 0
        self._run = None if example_input is None else functools.partial(_call_on, example_input)
        if dimensions is not None and not dimensions:
            raise ValueError("Supernet: `dimensions` is empty; pass at least one dimension, or None to find them")
        if dimensions is not None:
            adapter = "explicit" if adapter is None else adapter
            adapter_options = {"dimensions": dimensions, **adapter_options}
        # Refuse a model no adapter handles (or a wrong adapter name) before running anything.
        self.adapter: Adapter = adapter if isinstance(adapter, Adapter) else find_adapter(model, adapter)
        if dimensions is not None and self.adapter.needs_example_input:
            raise ValueError(
                f"explicit `dimensions=` are planned by the 'explicit' adapter, not by {self.adapter.name!r}: "
                "give one of `dimensions=` and `adapter=`"
            )
        if self._run is None and self.adapter.needs_example_input:
            raise ValueError(
                "Supernet needs `example_input` to discover elastic dimensions (or explicit `dimensions=`)"
            )
        reference = None
        if self._run is not None:
            try:
                reference = self._output_shapes(model)
            except Exception as err:
                raise RuntimeError(f"{type(model).__name__} does not run on the example input: {err}") from err
        self.plan = self.adapter.plan(model, self._run, **adapter_options)
        if not self.plan.dimensions:
            notes = "; ".join(self.plan.notes) or "no supported layers were found"
            raise ValueError(f"{type(model).__name__} has no elastic dimension: {notes}")
        self.space = SearchSpace(self.plan.dimensions)
        if space:
            self.space = self.space.restrict(space)
        converted, self._swaps = _convert(model, self.plan)
        self.model = converted
        self._axes = []
        for (path, role), segments in self.plan.layouts.items():
            module = self.model.get_submodule(path)
            self._axes.append((module, type(module).active_attr(role), segments))
        # Resolved once: set_arch runs every training step.
        self._containers = {
            name: self.model.get_submodule(dim.container)
            for name, dim in self.plan.dimensions.items()
            if isinstance(dim, Depth)
        }
        self._kernels = {
            name: [self.model.get_submodule(path) for path in dim.modules]
            for name, dim in self.plan.dimensions.items()
            if isinstance(dim, Kernel)
        }
        self._index_cache: dict[tuple[int, tuple[int, ...], str], Index] = {}
        self._arch = self.space.max_arch()
        if reference is not None:
            try:
                self._verify(reference)
            except Exception:
                self.restore()
                raise

    def restore(self) -> nn.Module:
        """Turn the model back into the plain model (full size, same parameter objects) and return it.

        The supernet is unusable afterwards. Weights trained in the supernet stay in the model.
        """
        self.set_arch(None)
        root = _undo(self._swaps)
        self._swaps = []
        self.model = self.model if root is None else root
        return self.model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model as the active sub-network: ``net(x)`` is ``net.model(x)``."""
        return self.model(*args, **kwargs)

    # architecture -----------------------------------------------------------------------------
    @property
    def arch(self) -> Arch:
        """The active architecture (a copy)."""
        return dict(self._arch)

    def max_arch(self) -> Arch:
        return self.space.max_arch()

    def min_arch(self) -> Arch:
        return self.space.min_arch()

    def sample_arch(self, rng: random.Random | int | None = None) -> Arch:
        """A uniformly random architecture of the search space (it is not activated).

        Args:
            rng: A ``random.Random`` or an int seed. ``None`` draws from torch's global generator,
                so ``torch.manual_seed`` makes the draw reproducible.

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
            >>> net = Supernet(model, example_input=torch.randn(1, 4))
            >>> _ = torch.manual_seed(0)
            >>> first = net.sample_arch()
            >>> _ = torch.manual_seed(0)
            >>> net.sample_arch() == first, first["0"] in net.space["0"].choices
            (True, True)
        """
        if rng is None:
            # One draw of torch's generator seeds the Python one: a single seed call governs both.
            rng = int(torch.randint(2**63 - 1, (), dtype=torch.int64))
        return self.space.sample(rng)

    def set_arch(self, arch: Mapping[str, int] | None = None) -> None:
        """Activate a sub-network. ``None`` activates the full model.

        Dimensions missing from ``arch`` take their full size; values outside the search space are
        allowed as long as the model has them (e.g. the full size of a restricted dimension).
        """
        full = {name: int(dim.size) for name, dim in self.plan.dimensions.items()}
        values = dict(full)
        if arch is not None:
            for name, value in arch.items():
                if name not in full:
                    raise ValueError(f"unknown dimension {name!r}; dimensions are {list(full)}")
                if not _is_whole(value):  # int() would truncate 5.9 to 5: a sub-network nobody asked for
                    raise ValueError(f"value {value!r} for dimension {name!r} is not an integer")
                low = 0 if isinstance(self.plan.dimensions[name], Depth) else 1
                if not low <= int(value) <= full[name]:
                    raise ValueError(f"value {value} for dimension {name!r} is outside [{low}, {full[name]}]")
                values[name] = int(value)
        for position, (module, attr, segments) in enumerate(self._axes):
            object.__setattr__(module, attr, self._index(position, module, segments, values))
        for name, container in self._containers.items():
            skipped = frozenset(self.plan.dimensions[name].blocks[values[name] :])  # type: ignore[attr-defined]
            object.__setattr__(container, "skipped", skipped or None)
        for name, convs in self._kernels.items():
            kernel = None if values[name] == self.plan.dimensions[name].size else values[name]
            for conv in convs:
                object.__setattr__(conv, "active_kernel", kernel)
        self._arch = {name: values[name] for name in self.space}

    def _index(self, position: int, module: nn.Module, segments: tuple[Segment, ...], values: Arch) -> Index:
        active = tuple(values[s.dim] * s.width if s.dim else s.length for s in segments)
        lengths = tuple(s.length for s in segments)
        if active == lengths:
            return None
        if active[:-1] == lengths[:-1]:
            return sum(active)
        device = next(itertools.chain(module.parameters(), module.buffers())).device
        key = (position, active, str(device))
        if key not in self._index_cache:
            starts = [sum(lengths[:i]) for i in range(len(lengths))]
            self._index_cache[key] = torch.cat(
                [torch.arange(start, start + size, device=device) for start, size in zip(starts, active)]
            )
        return self._index_cache[key]

    @contextmanager
    def use(self, arch: Mapping[str, int] | None) -> Iterator[Supernet]:
        """Activate ``arch`` inside a ``with`` block, then restore the previous architecture."""
        previous = self._arch
        self.set_arch(arch)
        try:
            yield self
        finally:
            self.set_arch(previous)

    # extraction and measurements --------------------------------------------------------------
    def extract(self, arch: Mapping[str, int] | None = None, reinit: bool = False) -> nn.Module:
        """A standalone dense copy of a sub-network (the active one if ``arch`` is None).

        The copy contains plain torch modules only: it runs without ``lightning_nas`` and its
        outputs equal the sub-network's outputs inside the supernet. With ``reinit=True`` it gets
        fresh weights instead, initialised the way its modules (and, through the adapter, its
        model family, e.g. timm) initialise: the architecture, to be retrained from scratch.

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
            >>> net = Supernet(model, example_input=torch.randn(1, 4))
            >>> fresh = net.extract({"0": 8}, reinit=True)
            >>> fresh[0].weight.shape, torch.equal(fresh[0].weight, model[0].weight[:8])
            (torch.Size([8, 4]), False)
        """
        arch = self.arch if arch is None else dict(arch)
        with self.use(arch):
            memo: dict[int, Any] = {}
            trainer = getattr(self.model, "_trainer", None)
            if trainer is not None:  # a LightningModule: never copy the Trainer into the export
                memo[id(trainer)] = None
            model = copy.deepcopy(self.model, memo)
        dense = self.adapter.finalize(_densify(model), arch, self.plan)
        if reinit:
            self.adapter.reinitialize(dense)
        return dense

    def num_params(
        self, arch: Mapping[str, int] | None = None, where: Callable[[str, nn.Module], bool] | None = None
    ) -> int:
        """Number of parameters of a sub-network, counted without extracting it.

        Args:
            arch: The sub-network (default: the active one).
            where: Count only the parameters of modules for which ``where(path, module)`` holds,
                e.g. ``lambda path, m: isinstance(m, nn.Embedding)``.
        """
        with self.use(self.arch if arch is None else arch):
            seen: set[int] = set()
            total = 0
            for path, module in _active_modules(self.model):
                if isinstance(module, ElasticModule):
                    tensors = {n: t for n, t in module.active_tensors().items() if n in module._parameters}
                else:
                    tensors = dict(module.named_parameters(recurse=False))
                for name, tensor in tensors.items():
                    key = id(module._parameters[name])
                    if key not in seen:
                        seen.add(key)  # tied parameters count once, for their first module
                        if where is None or where(path, module):
                            total += tensor.numel()
            return total

    def flops(self, arch: Mapping[str, int] | None = None) -> int:
        """FLOPs of one forward pass of a sub-network on the example input (``torch.utils.flop_counter``)."""
        if self._run is None:
            raise ValueError("counting FLOPs needs the Supernet's `example_input`")
        with self.use(self.arch if arch is None else arch), eval_mode(self.model), torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                self._run(self.model)
        return int(counter.get_total_flops())

    # batch-norm statistics --------------------------------------------------------------------
    def recalibrate_batchnorm(
        self,
        batches: Iterable[Any],
        forward: Callable[[nn.Module, Any], Any] = call_model,
        max_batches: int | None = 64,
    ) -> int:
        """Recompute batch-norm running statistics for the active sub-network.

        Weight entanglement shares the statistics of all sub-networks, so they must be recomputed
        for the one being evaluated (BigNAS/OFA). Returns the number of batches used.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return 0
        device = next(self.model.parameters()).device
        saved = [(m.momentum, m.training) for m in norms]
        count = 0
        try:
            with eval_mode(self.model), torch.no_grad():
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the calibration batches
                    m.train()
                for count, batch in enumerate(batches, start=1):
                    forward(self.model, to_device(batch, device))
                    if max_batches is not None and count >= max_batches:
                        break
        finally:
            for m, (momentum, training) in zip(norms, saved):
                m.momentum, m.training = momentum, training
        return count

    @contextmanager
    def frozen_batchnorm_statistics(self) -> Iterator[None]:
        """Batch norm keeps normalising with batch statistics but stops updating running ones.

        Used for the students of a training step, so the running statistics keep describing
        the teacher.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0  # running = (1 - momentum) * running + momentum * batch
        try:
            yield
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

    @contextmanager
    def batchnorm_snapshot(self) -> Iterator[None]:
        """Restore all batch-norm running statistics on exit (e.g. around a recalibrated evaluation)."""
        buffers = [
            (b, b.detach().clone())
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in m.buffers(recurse=False)
        ]
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)

    # checkpoints and display ------------------------------------------------------------------
    def supernet_state(self) -> dict[str, Any]:
        """The search space and the active architecture, as plain data (the weights are :meth:`state_dict`).

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
            >>> net = Supernet(model, example_input=torch.randn(1, 4), space={"0": [8, 32]})
            >>> net.set_arch({"0": 8})
            >>> net.supernet_state()
            {'space': {'0': [8, 32]}, 'arch': {'0': 8}}
        """
        return {"space": self.space.to_dict(), "arch": self.arch}

    def load_supernet_state(self, state: Mapping[str, Any]) -> None:
        """Restore the search space and active architecture saved by :meth:`supernet_state`."""
        unknown = set(state["space"]) - set(self.plan.dimensions)
        if unknown:
            raise ValueError(f"checkpoint has dimensions {sorted(unknown)} that this supernet does not have")
        self.space = SearchSpace(self.plan.dimensions).restrict(state["space"])
        self.set_arch(state["arch"])

    def describe(self) -> str:
        """A table of the dimensions: name, kind, choices and where they live."""
        rows = []
        for name, dim in self.space.items():
            if isinstance(dim, Width):
                where = ", ".join(dim.axes[:4]) + (" ..." if len(dim.axes) > 4 else "")
            elif isinstance(dim, Depth):
                where = f"{dim.container} blocks {list(dim.blocks)}"
            elif isinstance(dim, Kernel):
                where = ", ".join(dim.modules)
            else:
                where = ""
            rows.append((name, dim.kind, list(dim.choices), where))
        lines = [format_table(("dimension", "kind", "choices", "where"), rows)]
        lines.append(f"{len(self.space)} dimensions, {self.space.size:,} architectures")
        lines.extend(f"note: {note}" for note in self.plan.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Supernet({type(self.model).__name__}, {self.space!r})"

    # internals --------------------------------------------------------------------------------
    def _output_shapes(self, model: nn.Module) -> list[tuple[int, ...]]:
        with eval_mode(model), torch.no_grad():
            outputs = self._run(model)
        return [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(outputs) if isinstance(t, Tensor)]

    def _verify(self, reference: list[tuple[int, ...]]) -> None:
        """Run the smallest and a random sub-network: outputs keep their shapes, depth takes effect."""
        calls: dict[tuple[str, int], int] = {}
        handles = []
        for name, dim in self.plan.dimensions.items():
            if isinstance(dim, Depth):
                container = self.model.get_submodule(dim.container)
                for index in dim.blocks:
                    block = container[index]

                    def count(*_: Any, key: tuple[str, int] = (name, index)) -> None:
                        calls[key] = calls.get(key, 0) + 1

                    handles.append(block.register_forward_pre_hook(count))
        try:
            for arch in (self.min_arch(), self.sample_arch(0)):
                with self.use(arch):
                    try:
                        shapes = self._output_shapes(self.model)
                    except Exception as err:
                        raise RuntimeError(f"the sub-network {arch} does not run: {err}") from err
                    if shapes != reference:
                        raise RuntimeError(
                            f"the sub-network {arch} changes the output shapes {reference} -> {shapes}; "
                            "a dimension reaches the model output"
                        )
                    for name, dim in self.plan.dimensions.items():
                        if isinstance(dim, Depth):
                            ran = [i for i in dim.blocks[arch[name] :] if calls.get((name, i))]
                            if ran:
                                raise ValueError(
                                    f"elastic depth {name!r}: blocks {ran} of {dim.container!r} still ran "
                                    "when skipped; the model must iterate over the container "
                                    "(`for block in self.blocks`) for its depth to be elastic"
                                )
                    calls.clear()
        finally:
            for handle in handles:
                handle.remove()


def _active_modules(module: nn.Module, path: str = "") -> Iterator[tuple[str, nn.Module]]:
    yield path, module
    children = list(module._modules.items())
    if isinstance(module, ElasticModule) and getattr(module, "skipped", None):
        children = [children[i] for i in module.active_indices()]  # type: ignore[attr-defined]
    for name, child in children:
        if child is not None:
            yield from _active_modules(child, f"{path}.{name}" if path else name)


# (parent or None for the root, child name, original module, its elastic replacement)
_Swap = tuple[nn.Module | None, str, nn.Module, ElasticModule]


def _convert(model: nn.Module, plan: ElasticPlan) -> tuple[nn.Module, list[_Swap]]:
    """Swap every module the plan touches for its elastic counterpart, in place.

    Modules convert to the plan's own elastic types, else to those of the default registry
    (:data:`~lightning_nas.elastic.ELASTIC_TYPES`). Returns the converted root and the swaps
    made, for :func:`_undo`. Every module is checked before anything is swapped, so a refusal
    leaves the model untouched.
    """
    types = elastic_types(plan.elastic_types)
    targets = {path for path, _ in plan.layouts}
    for dim in plan.dimensions.values():
        if isinstance(dim, Depth):
            targets.add(dim.container)
        elif isinstance(dim, Kernel):
            targets.update(dim.modules)
    # Deepest first so that containers are converted after (and point to) their elastic children.
    ordered = sorted(targets, key=lambda p: -len(p.split(".")))
    for path in ordered:
        module = model.get_submodule(path)
        if type(module) not in types:
            raise TypeError(
                f"module {path!r} ({type(module).__name__}) cannot be made elastic; supported types: "
                f"{sorted({t.__name__ for t in types})}"
            )
    for path, role in plan.layouts:  # an axis the elastic type lacks, before anything is swapped
        types[type(model.get_submodule(path))].active_attr(role)
    swaps: list[_Swap] = []
    for path in ordered:
        module = model.get_submodule(path)
        elastic = types[type(module)].convert(module)
        if path == "":
            swaps.append((None, "", module, elastic))
            model = elastic
        else:
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            swaps.append((parent, name, module, elastic))
            parent._modules[name] = elastic
    return model, swaps


def _undo(swaps: list[_Swap]) -> nn.Module | None:
    """Put the original modules back, with the state their elastic replacements gained since
    (training flags, buffers replaced by ``.to(device)``, new attributes)."""
    root = None
    for parent, name, original, elastic in reversed(swaps):
        state = {k: v for k, v in elastic.__dict__.items() if k != "_modules" and k not in elastic._elastic_attrs}
        state["_parameters"], state["_buffers"] = dict(state["_parameters"]), dict(state["_buffers"])
        original.__dict__.update(state)
        if parent is None:
            root = original
        else:
            parent._modules[name] = original
    return root


def _is_whole(value: Any) -> bool:
    """An int-like value (``8``, ``np.int64(8)``, ``8.0``, a one-element integer tensor), not a bool or a string."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return bool(int(value) == value)
    except (TypeError, ValueError, RuntimeError):
        return False


def _densify(module: nn.Module) -> nn.Module:
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _densify(child)
    return module.to_dense() if isinstance(module, ElasticModule) else module


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
