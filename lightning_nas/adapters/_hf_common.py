"""The adapter shared by Hugging Face encoder and decoder families.

Dimensions come from the config and the module names of the family (see
:class:`~lightning_nas.adapters._hf_family.Family`), not from tracing: every layer gets a number of
heads and an FFN size, the layer list a depth, and all axes of the residual stream (embeddings,
norms, every projection into or out of it, the heads on top, a tied LM head) one global hidden
size. The supernet then runs the smallest and a random sub-network to check that the model
computes with the sliced shapes.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_nas.adapters._hf_compressed import (
    compressed_model_class,
    export_config,
    family_for,
    listed_model_types,
    register_family,
    stock_model_class,
)
from lightning_nas.adapters._hf_elastic import elastic_gpt2_attention
from lightning_nas.adapters._hf_family import Family, LayerShape, axis_lengths, elastic_type
from lightning_nas.adapters._hf_structure import STRUCTURES, NotRecognised, family_by_structure
from lightning_nas.adapters._plan import AxisKey, ElasticPlan, Segment
from lightning_nas.adapters.base import Adapter
from lightning_nas.adapters.generic import DEFAULT_WIDTH_FRACTIONS, default_width_choices
from lightning_nas.elastic import ELASTIC_TYPES, ElasticModule
from lightning_nas.space import Depth, Dimension, Width

__all__ = ["HFTransformerAdapter", "unsupported_message"]


class HFTransformerAdapter(Adapter):
    """Elastic depth, heads, FFN and hidden size of a Hugging Face transformer family.

    Dimensions (names as in the arch dict):
        ``hidden``: the hidden size, shared by every layer, embedding and head.
        ``depth``: how many layers run (the first ``v`` of ``depth_order``).
        ``layers.{i}.heads``: attention heads of layer ``i``. With grouped-query attention it
        counts key/value heads, each with its whole group of query heads, so the group size
        stays fixed. The head size never changes (RoPE is untouched).
        ``layers.{i}.ffn``: FFN intermediate size of layer ``i``.
        With ``per_layer=False`` the last two are global: ``heads`` and ``ffn``.

    Options of :meth:`plan`:
        width_fractions: Fractions of each width offered as choices.
        ffn_fractions: Fractions of the FFN size offered as choices (default: ``width_fractions``);
            e.g. narrower FFN choices where the stock config fixes the heads.
        depth_fractions: Fractions of the layers offered as depths (default: ``width_fractions``).
        stock_config: Only sub-networks the family's stock config can describe (default), so
            every export reloads with plain transformers, without ``lightning_nas``: widths are
            global (``per_layer=False``); in families whose config derives the head size as
            ``hidden_size // num_attention_heads`` (BERT, RoBERTa, GPT-2, ...) heads and hidden
            size stay fixed; elsewhere (Llama-like configs with ``head_dim``) hidden sizes are
            kept only where every head count divides them (the stock configs check that).
            ``False`` allows the full space; exports the stock config cannot describe get the
            registered ``lightning_nas_<family>`` config and reload after ``import lightning_nas.adapters``.
        per_layer: One heads and one FFN dimension per layer (default: ``not stock_config``).
        hidden, heads, ffn, depth: Turn a kind of dimension off.
        depth_order: The order in which layers are kept (default: first to last).
    """

    #: Stock model types this adapter handles.
    model_types: tuple[str, ...] = ()

    #: ``Family.kind`` of the families this adapter handles.
    kind: str = ""

    def matches(self, model: nn.Module) -> bool:
        return any(family.kind == self.kind for _, _, family in _hf_models(model))

    def unsupported(self, model: nn.Module) -> str | None:
        return unsupported_message(model)

    def locate(self, model: nn.Module) -> tuple[str, nn.Module, Family]:
        """The Hugging Face model in ``model`` (itself, or one submodule, e.g. of a LightningModule).

        Returns:
            Its module path (``""`` for ``model`` itself), the model, and its family.

        Raises:
            ValueError: naming the model class, if there is no model of a family this adapter
                handles, several of them, or one with cross-attention.
        """
        scanned = _scan(model)
        supported = [entry for entry in scanned if isinstance(entry[2], Family) and entry[2].kind == self.kind]
        if not supported:
            what = ", ".join(
                _describe(m) + (f" ({reason})" if isinstance(reason, str) else "") for _, m, reason in scanned
            )
            raise ValueError(
                f"the {self.name!r} adapter does not support {what or _describe(model)}; it handles model "
                f"types {listed_model_types(self.kind)} and, by structure, {self.kind}s of the common layout. Other "
                "architectures: adapter='generic' (traced) or explicit `dimensions=`"
            )
        if len(supported) > 1:
            raise ValueError(
                f"{type(model).__name__} holds several transformers ({[path for path, _, _ in supported]}); "
                "build the supernet on one of them"
            )
        path, hf_model, family = supported[0]
        if getattr(hf_model.config, "add_cross_attention", False):
            raise ValueError(
                f"{type(hf_model).__name__}: models with cross-attention are not supported by {self.name!r}"
            )
        return path, hf_model, family

    # planning ---------------------------------------------------------------------------------
    def plan(
        self,
        model: nn.Module,
        run: Callable[[nn.Module], Any],
        width_fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS,
        depth_fractions: Sequence[float] | None = None,
        ffn_fractions: Sequence[float] | None = None,
        stock_config: bool = True,
        per_layer: bool | None = None,
        hidden: bool = True,
        heads: bool = True,
        ffn: bool = True,
        depth: bool = True,
        depth_order: Sequence[int] | None = None,
        **options: Any,
    ) -> ElasticPlan:
        if options:
            raise TypeError(f"unknown options for the {self.name!r} adapter: {sorted(options)}")
        hf_path, hf_model, family = self.locate(model)
        config = hf_model.config
        if per_layer is None:
            per_layer = not stock_config
        elif per_layer and stock_config:
            raise ValueError(
                f"per_layer=True needs stock_config=False: a stock {family.config_class} gives all layers one width"
            )
        notes: list[str] = []
        if stock_config and not family.head_dim_field and (heads or hidden):
            heads = hidden = False
            notes.append(
                f"heads and hidden size fixed: {family.config_class} has no head_dim field, so the head size is "
                "hidden_size // num_attention_heads (stock_config=False frees them; exports then need "
                "`import lightning_nas.adapters`)"
            )
        layers_path = _join(hf_path, family.layers_path(hf_model))
        layers = model.get_submodule(layers_path)
        head_dim = family.head_dim(config)
        shapes = [family.layer_shape(layer, head_dim) for layer in layers]
        if not per_layer and any(shape != shapes[0] for shape in shapes):
            raise ValueError(f"{type(model).__name__} has layers of different widths; use per_layer=True")

        layouts: dict[AxisKey, tuple[Segment, ...]] = {}
        dims: dict[str, Dimension] = {}
        groups: dict[str, list[tuple[AxisKey, ...]]] = {}  # a global width: each layer's units are its own
        reserved: set[str] = set()  # module paths whose head/FFN axes never carry the hidden size
        for i, shape in enumerate(shapes):
            prefix = f"{layers_path}.{i}."
            reserved.update(prefix + path for path in family.head_norms)
            head_name = f"layers.{i}.heads" if per_layer else "heads"
            ffn_name = f"layers.{i}.ffn" if per_layer else "ffn"
            head_layouts = _head_layouts(family, shape, head_dim, head_name)
            ffn_layouts = {axis: (Segment(ffn_name, shape.ffn),) for axis in family.ffn_axes()}
            reserved.update(f"{prefix}{path}:{role}" for path, role in head_layouts | ffn_layouts)
            units = shape.kv_heads
            for enabled, name, size, unit, named_layouts, fractions in (
                (heads, head_name, units, head_dim * shape.heads // units, head_layouts, width_fractions),
                (ffn, ffn_name, shape.ffn, 1, ffn_layouts, ffn_fractions or width_fractions),
            ):
                if enabled and _add_width(dims, name, size, fractions, unit=unit):
                    layer_layouts = {(prefix + path, role): layout for (path, role), layout in named_layouts.items()}
                    layouts.update(layer_layouts)
                    groups.setdefault(name, []).append(tuple(layer_layouts))
        if hidden:
            hidden_size = config.hidden_size
            hidden_layouts, blockers = _hidden_layouts(model, family, hidden_size, reserved)
            embedding_size = family.projected_embedding_size(config)
            if blockers:
                notes.append(
                    f"hidden size fixed: {', '.join(blockers)} hold hidden-size weights of an unsupported type"
                )
            elif _add_width(dims, "hidden", hidden_size, width_fractions, exclude=embedding_size):
                layouts.update(hidden_layouts)
                if stock_config and not _divisible_hidden(dims, shapes, not per_layer and "heads" in dims):
                    del dims["hidden"]
                    for key in hidden_layouts:
                        del layouts[key]
                    notes.append("hidden size fixed: no smaller size is divisible by every head count")
        if depth:
            dims.update(
                _depth(config, layers_path, len(layers), depth_fractions or width_fractions, depth_order, notes)
            )
        for name, dim in list(dims.items()):
            if isinstance(dim, Width):
                axes = [
                    path if role == "features" else f"{path}:{role}"
                    for (path, role), layout in layouts.items()
                    if any(s.dim == name for s in layout)
                ]
                dims[name] = Width(axes, dim.choices, unit=dim.unit, size=dim.size, name=name)
        groups = {name: tuple(parts) for name, parts in groups.items() if name in dims and len(parts) > 1}
        return HFPlan(
            dims,
            layouts,
            notes,
            groups,
            elastic_types=_elastic_types(model, family, layers),
            stock_config=stock_config,
            family=family,
            model_path=hf_path,
        )

    # export -----------------------------------------------------------------------------------
    def finalize(self, dense: nn.Module, arch: dict[str, int], plan: ElasticPlan) -> nn.Module:
        """Give the extracted model a config that describes it, and keep tied weights tied.

        Layer indices are renumbered, the attention modules record their head counts, and the
        model switches to the compressed model class when the stock config cannot express it.
        """
        if isinstance(plan, HFPlan) and plan.family is not None:
            # The dense model's config still describes the full model: found by the plan, not again.
            family = plan.family
            hf_model = dense.get_submodule(plan.model_path) if plan.model_path else dense
        else:
            _, hf_model, family = self.locate(dense)
        source = hf_model.config
        layers = hf_model.get_submodule(family.layers_path(hf_model))
        head_dim = family.head_dim(source)
        shapes = [family.layer_shape(layer, head_dim) for layer in layers]
        for index, (layer, shape) in enumerate(zip(layers, shapes)):
            for module in layer.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = index
            family.set_attention(layer.get_submodule(family.attention), shape, head_dim)
        kept = list(range(len(layers)))
        for name, dim in plan.dimensions.items():
            if isinstance(dim, Depth):
                kept = sorted(dim.blocks[: arch.get(name, dim.size)])
        stock_only = isinstance(plan, HFPlan) and plan.stock_config
        config = export_config(source, family, shapes, head_dim, family.hidden_size(layers[0]), kept, stock_only)
        for module in hf_model.modules():
            if getattr(module, "config", None) is source:
                module.config = config
        # The saved class: stock when its config suffices, else the compressed subclass.
        stock = stock_model_class(type(hf_model))
        hf_model.__class__ = stock if type(config).__name__ == family.config_class else compressed_model_class(stock)
        hf_model.tie_weights()
        return dense


@dataclass
class HFPlan(ElasticPlan):
    """The plan of an HF adapter, with the option the export must honour.

    Attributes:
        stock_config: Exports must have the stock config class (see ``HFTransformerAdapter``).
        family: The family of the transformers model.
        model_path: Module path of the transformers model inside the planned model.
    """

    stock_config: bool = True
    family: Family | None = None
    model_path: str = ""


def _divisible_hidden(dims: dict[str, Dimension], shapes: Sequence[LayerShape], global_heads: bool) -> bool:
    """Keep the hidden sizes every query-head count divides; whether two or more remain."""
    hidden = dims["hidden"]
    group = shapes[0].heads // shapes[0].kv_heads
    counts = {units * group for units in dims["heads"].choices} if global_heads else {s.heads for s in shapes}
    choices = [c for c in hidden.choices if all(c % count == 0 for count in counts)]
    if len(choices) < 2:
        return False
    dims["hidden"] = Width([], choices, unit=hidden.unit, size=hidden.size, name="hidden")
    return True


def _hf_models(model: nn.Module) -> list[tuple[str, nn.Module, Family]]:
    """The outermost transformers models of known families inside ``model`` (incl. itself)."""
    return [entry for entry in _scan(model) if isinstance(entry[2], Family)]  # type: ignore[misc]


def _scan(model: nn.Module) -> list[tuple[str, nn.Module, Family | str]]:
    """The outermost transformers models inside ``model``, each with its family or why it has none."""
    if "transformers.modeling_utils" not in sys.modules:  # then there can be none; don't import it
        return []
    from transformers import PreTrainedModel

    found: list[tuple[str, nn.Module, Family | str]] = []
    for path, module in model.named_modules():
        if not isinstance(module, PreTrainedModel) or any(_within(path, outer) for outer, _, _ in found):
            continue
        found.append((path, module, _family_of(module)))
    return found


_STRUCTURAL: weakref.WeakKeyDictionary[nn.Module, Family | str] = weakref.WeakKeyDictionary()


def _family_of(model: nn.Module) -> Family | str:
    """The family of a transformers model: listed by model type, else by structure, else the reason why not."""
    family = family_for(model.config)
    if family is not None:
        return family
    if model not in _STRUCTURAL:  # matches, locate and plan all ask; examine the model once
        try:
            family = family_by_structure(model)
        except NotRecognised as err:
            _STRUCTURAL[model] = str(err)
        else:
            register_family(family)
            _STRUCTURAL[model] = family
    return _STRUCTURAL[model]


def unsupported_message(model: nn.Module) -> str | None:
    """Why no HF adapter handles ``model`` when it holds transformers models but none they handle, else ``None``."""
    scanned = _scan(model)
    refused = [(m, reason) for _, m, reason in scanned if isinstance(reason, str)]
    if not refused or len(refused) < len(scanned):
        return None
    what = "; ".join(f"{_describe(m)}: {reason}" for m, reason in refused)
    return (
        f"no Hugging Face adapter handles {what}. The adapters handle encoder model types "
        f"{listed_model_types('encoder')}, decoder model types {listed_model_types('decoder')}, and by structure "
        f"{STRUCTURES}. To trace it anyway pass adapter='generic' (its sub-networks then export as plain torch "
        "modules, not as Hugging Face directories)"
    )


def _describe(model: nn.Module) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return type(model).__name__ + (f" (model type {model_type!r})" if model_type else "")


def _within(path: str, outer: str) -> bool:
    return outer == "" or path == outer or path.startswith(outer + ".")


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix else path


def _head_layouts(family: Family, shape: LayerShape, head_dim: int, name: str) -> dict[AxisKey, tuple[Segment, ...]]:
    """Layouts of the head axes of one layer; a unit is a key/value head with its query group."""
    group = shape.heads // shape.kv_heads
    layouts: dict[AxisKey, tuple[Segment, ...]] = {}
    for (path, role), kind in family.head_axes().items():
        if kind == "qkv":
            layouts[(path, role)] = (Segment(name, shape.heads, head_dim),) * 3
        else:
            layouts[(path, role)] = (Segment(name, shape.kv_heads, head_dim if kind == "kv" else head_dim * group),)
    if family.qkv:
        # The fused attention splits q|k|v at its `split_size`, which must follow the heads.
        layouts[(family.attention, "features")] = (Segment(name, shape.heads, head_dim),)
    return layouts


def _add_width(
    dims: dict[str, Dimension],
    name: str,
    size: int,
    fractions: Sequence[float],
    unit: int = 1,
    exclude: int | None = None,
) -> bool:
    if name in dims:  # a global dimension shared by all layers
        return True
    choices = [c for c in default_width_choices(size, fractions) if c != exclude]
    if len(choices) < 2:
        return False
    dims[name] = Width([], choices, unit=unit, size=size, name=name)
    return True


def _hidden_layouts(
    model: nn.Module, family: Family, hidden: int, reserved: set[str]
) -> tuple[dict[AxisKey, tuple[Segment, ...]], list[str]]:
    """Every axis of hidden-size length that is not a head or FFN axis, and unsupported holders."""
    layouts: dict[AxisKey, tuple[Segment, ...]] = {}
    blockers = []
    for path, module in model.named_modules():
        lengths = axis_lengths(module, family.norm_classes)
        if not lengths:
            # A norm without weights still normalises over a fixed shape (OLMo's LayerNorm).
            shape = getattr(module, "normalized_shape", None)
            fixed = isinstance(shape, (tuple, list)) and hidden in shape
            if fixed or any(hidden in p.shape for p in module.parameters(recurse=False)):
                blockers.append(f"{path or type(model).__name__} ({type(module).__name__})")
            continue
        if path in reserved:
            continue
        for role, length in lengths.items():
            if length == hidden and f"{path}:{role}" not in reserved:
                layouts[(path, role)] = (Segment("hidden", hidden),)
    return layouts, blockers


def _depth(
    config: Any,
    layers_path: str,
    num_layers: int,
    fractions: Sequence[float],
    order: Sequence[int] | None,
    notes: list[str],
) -> dict[str, Dimension]:
    layer_types = getattr(config, "layer_types", None)
    if layer_types and len(set(layer_types)) > 1:
        # The model picks each layer's mask by its position among the layers that run.
        notes.append(f"depth fixed: layers mix attention types {sorted(set(layer_types))}")
        return {}
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        notes.append("depth fixed: attention is scaled by the layer index")
        return {}
    order = tuple(range(num_layers)) if order is None else tuple(order)
    if sorted(order) != list(range(num_layers)):
        raise ValueError(f"depth_order must be a permutation of range({num_layers}), got {list(order)}")
    choices = sorted({min(num_layers, max(1, round(f * num_layers))) for f in fractions})
    if len(choices) < 2:
        return {}
    return {"depth": Depth(layers_path, order, choices, name="depth")}


def _elastic_types(model: nn.Module, family: Family, layers: nn.Module) -> dict[type[nn.Module], type[ElasticModule]]:
    """The elastic classes of the family's own module types found in ``model``, for its plan."""
    types: dict[type[nn.Module], type[ElasticModule]] = {}
    for module in model.modules():
        cls = elastic_type(module, family.norm_classes)
        if cls is not None and type(module) not in ELASTIC_TYPES:
            types[type(module)] = cls
    if family.qkv:
        for layer in layers:
            attention = type(layer.get_submodule(family.attention))
            types[attention] = elastic_gpt2_attention(attention)
    return types
