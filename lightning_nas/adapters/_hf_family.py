"""What the Hugging Face adapters know about one transformer family: module names and head layout.

A :class:`Family` names, relative to one transformer layer, the projections that carry attention
heads and FFN neurons, and how the attention module records its head count. Everything the HF
adapters, the export configs and the reload of compressed models do per family goes through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import nn

from lightning_nas.adapters._hf_elastic import elastic_conv1d, elastic_rms_norm
from lightning_nas.elastic import ELASTIC_TYPES, ElasticModule

__all__ = ["Family", "LayerShape", "axis_lengths", "elastic_type", "is_conv1d"]


class LayerShape(NamedTuple):
    """Widths of one transformer layer.

    Attributes:
        heads: Number of query heads.
        kv_heads: Number of key/value heads (``heads`` without grouped-query attention).
        ffn: FFN intermediate size.
    """

    heads: int
    kv_heads: int
    ffn: int


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored as (in, out)."""
    return type(module).__name__ == "Conv1D" and type(module).__module__ == "transformers.pytorch_utils"


def elastic_type(module: nn.Module, norm_classes: tuple[str, ...] = ()) -> type[ElasticModule] | None:
    """The elastic class of a Linear-like, embedding or norm module of a transformer, else ``None``.

    These are the modules whose axes the family's widths (heads, FFN, hidden size) cross;
    ``norm_classes`` names the family's RMSNorm classes.
    """
    # Exact types: a subclass may compute differently, and the supernet has no elastic version of it.
    cls = type(module)
    if cls in (nn.Linear, nn.Embedding, nn.LayerNorm):
        return ELASTIC_TYPES[cls]
    if is_conv1d(module):
        return elastic_conv1d(cls)
    if cls.__name__ in norm_classes:
        return elastic_rms_norm(cls)
    return None


def axis_lengths(module: nn.Module, norm_classes: tuple[str, ...] = ()) -> dict[str, int]:
    """Lengths of the elastic axes of a module that :func:`elastic_type` knows, by role (``{}`` for others).

    The elastic class answers; nothing here knows a module's sizes.
    """
    cls = elastic_type(module, norm_classes)
    return {} if cls is None else cls.axis_lengths(module)


def _resized(module: nn.Module, in_features: int | None, out_features: int | None) -> nn.Module:
    """A freshly initialised copy of a Linear-like module with other sizes (same dtype, device, bias)."""
    lengths = axis_lengths(module)
    size_in = lengths["in"] if in_features is None else in_features
    size_out = lengths["out"] if out_features is None else out_features
    if (size_in, size_out) == (lengths["in"], lengths["out"]):
        return module
    weight = module.weight
    if isinstance(module, nn.Linear):
        return nn.Linear(size_in, size_out, bias=module.bias is not None, device=weight.device, dtype=weight.dtype)
    return type(module)(size_out, size_in).to(device=weight.device, dtype=weight.dtype)


def _base_model_path(model: nn.Module) -> str:
    """Module path of a Hugging Face model's base model (``""`` for a base model itself)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return ""
    return next(name for name, module in model.named_modules() if module is base)


@dataclass(frozen=True)
class Family:
    """Module names and head conventions of one transformer family.

    Paths are relative to one layer unless said otherwise.

    Attributes:
        name: Short name (``"bert"``); compressed exports use model type ``lightning_nas_<name>``.
        model_type: ``config.model_type`` of the stock transformers models.
        config_class: Name of the stock config class in ``transformers``.
        layers: Path of the layer list inside the base model.
        attention: The module that records the head count (its attributes are updated on export).
        query, key, value: Separate projections, or ``qkv`` for one fused q|k|v projection.
        attn_out: Projection from the heads back to the hidden size.
        ffn_in: Projections into the FFN (two for gated MLPs).
        ffn_out: Projection from the FFN back to the hidden size.
        ffn_field: Config field of the FFN size (a ``None`` value means ``4 * hidden_size``).
        grouped_kv: Whether the config has ``num_key_value_heads`` (grouped-query attention).
        head_dim_field: Whether the modeling code reads ``config.head_dim``; otherwise it derives
            the head size as ``hidden_size // num_attention_heads``.
        norm_classes: RMSNorm class names with Llama's forward (made elastic).
        head_norms: Modules that normalise within one head (never on the hidden axis).
        embedding_field: Config field of an embedding width that may differ from the hidden size
            (ELECTRA's ``embedding_size``): the model projects the embeddings only when they differ.
        set_attention: Writes ``(attention module, layer shape, head size)`` into the attention
            module's attributes, so that its forward matches its (new) projection sizes.
        kind: ``"encoder"`` or ``"decoder"``: which HF adapter handles the family.
        structural: Recognised by its layout (not listed by model type): found again for every
            model, since the same model type may be built with other options.
    """

    name: str
    model_type: str
    config_class: str
    layers: str
    attention: str
    attn_out: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    set_attention: Callable[[nn.Module, LayerShape, int], None]
    query: str = ""
    key: str = ""
    value: str = ""
    qkv: str = ""
    ffn_field: str = "intermediate_size"
    grouped_kv: bool = False
    head_dim_field: bool = False
    norm_classes: tuple[str, ...] = ()
    head_norms: tuple[str, ...] = ()
    embedding_field: str = ""
    kind: str = ""
    structural: bool = False

    # model structure ------------------------------------------------------------------------------
    def layers_path(self, model: nn.Module) -> str:
        """Path of the layer list from the root of ``model``."""
        base = _base_model_path(model)
        return f"{base}.{self.layers}" if base else self.layers

    def head_axes(self) -> dict[tuple[str, str], str]:
        """``{(path in layer, role): "q" | "kv" | "qkv" | "o"}`` for the axes that carry heads."""
        if self.qkv:
            return {(self.qkv, "out"): "qkv", (self.attn_out, "in"): "o"}
        return {
            (self.query, "out"): "q",
            (self.key, "out"): "kv",
            (self.value, "out"): "kv",
            (self.attn_out, "in"): "o",
        }

    def ffn_axes(self) -> list[tuple[str, str]]:
        return [(path, "out") for path in self.ffn_in] + [(self.ffn_out, "in")]

    def head_dim(self, config: Any) -> int:
        """Head size of a (stock or compressed) config."""
        head_dim = getattr(config, "head_dim", None)
        return int(head_dim) if head_dim else config.hidden_size // config.num_attention_heads

    def ffn_size(self, config: Any) -> int:
        return getattr(config, self.ffn_field) or 4 * config.hidden_size

    def projected_embedding_size(self, config: Any) -> int | None:
        """The embedding width when a projection maps it to the hidden size, else ``None``.

        The hidden size must then never equal it: a model of that config has no projection. When
        there is no projection, the embeddings are on the hidden axis and shrink with it.
        """
        size = getattr(config, self.embedding_field, None) if self.embedding_field else None
        return size if size is not None and size != config.hidden_size else None

    def layer_shape(self, layer: nn.Module, head_dim: int) -> LayerShape:
        """The widths of ``layer``, read from its projections."""
        if self.qkv:
            heads = kv_heads = axis_lengths(layer.get_submodule(self.qkv))["out"] // (3 * head_dim)
        else:
            heads = axis_lengths(layer.get_submodule(self.query))["out"] // head_dim
            kv_heads = axis_lengths(layer.get_submodule(self.key))["out"] // head_dim
        return LayerShape(heads, kv_heads, axis_lengths(layer.get_submodule(self.ffn_in[0]))["out"])

    def hidden_size(self, layer: nn.Module) -> int:
        return axis_lengths(layer.get_submodule(self.attn_out))["out"]

    # reshaping ------------------------------------------------------------------------------------
    def reshape_layer(self, layer: nn.Module, shape: LayerShape, head_dim: int) -> None:
        """Give ``layer`` the widths ``shape``: projections of other sizes are replaced by new ones.

        Used to build compressed models from their config; the new weights are then loaded.
        """
        q_width, kv_width = shape.heads * head_dim, shape.kv_heads * head_dim
        outputs = (
            {self.qkv: 3 * q_width} if self.qkv else {self.query: q_width, self.key: kv_width, self.value: kv_width}
        )
        outputs.update({path: shape.ffn for path in self.ffn_in})
        for path, size in outputs.items():
            _replace(layer, path, _resized(layer.get_submodule(path), None, size))
        _replace(layer, self.attn_out, _resized(layer.get_submodule(self.attn_out), q_width, None))
        _replace(layer, self.ffn_out, _resized(layer.get_submodule(self.ffn_out), shape.ffn, None))
        self.set_attention(layer.get_submodule(self.attention), shape, head_dim)


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    if owner._modules[name] is not module:
        owner._modules[name] = module
