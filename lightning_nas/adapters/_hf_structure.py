"""Families recognised by their structure: transformers models of the common layouts, whatever their model type.

A decoder family follows the Llama layout: ``layers.{i}.self_attn.{q,k,v,o}_proj`` and a gated
(``mlp.gate_proj``, ``mlp.up_proj``, ``mlp.down_proj``) or plain (``mlp.up_proj`` /
``mlp.c_fc`` / ``mlp.fc1`` into ``mlp.down_proj`` / ``mlp.c_proj`` / ``mlp.fc2``) MLP of
``nn.Linear`` layers, with config fields ``hidden_size``, ``num_attention_heads``,
``intermediate_size`` and optionally ``num_key_value_heads`` and ``head_dim``. An encoder family
follows BERT's (``encoder.layer.{i}.attention.self.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``). Whatever else the family does with scalars its config
declares (embedding scaling, soft-capping, residual multipliers, attention scales) is untouched:
the head size never changes, so neither does any scale derived from it.

Everything is checked, not assumed: the projection sizes must agree with the config, every
parameter of the attention and MLP modules must belong to a projection or to a norm within one
head, and the norm classes that become elastic must compute Llama's RMSNorm (probed
numerically). A model that fails a check is refused with the reason; nothing is guessed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from lightning_nas.adapters._hf_family import Family, LayerShape

__all__ = ["STRUCTURES", "family_by_structure"]

_DECODER_MLPS = (
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
    (("mlp.up_proj",), "mlp.down_proj"),
    (("mlp.c_fc",), "mlp.c_proj"),
    (("mlp.fc1",), "mlp.fc2"),
)

#: What a family must look like to be recognised by structure, for messages.
STRUCTURES = (
    "decoders with layers.N.self_attn.{q,k,v,o}_proj and a gated (gate_proj/up_proj/down_proj) or plain MLP of "
    "nn.Linear layers and config fields hidden_size, num_attention_heads, intermediate_size "
    "(num_key_value_heads, head_dim optional); encoders of the BERT layout (encoder.layer.N.attention.self."
    "{query,key,value}, attention.output.dense, intermediate.dense, output.dense)"
)


class NotRecognised(ValueError):
    """The model does not follow a layout the HF adapters know; the message says what differs."""


def _set_attention(attention: nn.Module, shape: LayerShape, head_dim: int) -> None:
    """Record the head counts in whichever of the usual attributes the attention module has.

    The head size is unchanged, so scales derived from it (or from config scalars) stay as they are.
    """
    values = {
        "num_heads": shape.heads,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "num_key_value_groups": shape.heads // shape.kv_heads,
        "all_head_size": shape.heads * head_dim,
    }
    for name, value in values.items():
        if isinstance(getattr(attention, name, None), int):
            setattr(attention, name, value)


def _linear(layer: nn.Module, path: str) -> nn.Linear | None:
    try:
        module = layer.get_submodule(path)
    except AttributeError:
        return None
    return module if type(module) is nn.Linear else None


def _field(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_llama_rms_norm(module: nn.Module) -> bool:
    """Whether ``module`` computes ``weight * x / rms(x)`` with ``variance_epsilon`` (the elastic RMSNorm's formula)."""
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", None)
    if not isinstance(weight, nn.Parameter) or weight.dim() != 1 or not isinstance(eps, float):
        return False
    if any(name != "weight" for name, _ in module.named_parameters()):
        return False
    if weight.is_meta:  # a model built on the meta device (to recognise a family): probe a real copy
        module = copy.deepcopy(module).to_empty(device="cpu")
        weight = module.weight
        with torch.no_grad():
            weight.normal_(generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, weight.shape[0], generator=generator, dtype=torch.float32).to(weight.device, weight.dtype)
    with torch.no_grad():
        try:
            actual = module(x)
        except Exception:  # noqa: BLE001 - a module that does not run on a plain tensor is not an RMSNorm
            return False
        x32 = x.float()
        expected = weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(weight.dtype)
    return actual.shape == expected.shape and torch.allclose(actual, expected, atol=1e-6, rtol=1e-5)


def _owned_parameters(module: nn.Module, owners: set[str]) -> list[str]:
    """Names of parameters of ``module`` outside the submodules ``owners`` (paths relative to it)."""
    return [
        name
        for name, _ in module.named_parameters()
        if not any(name == owner or name.startswith(owner + ".") for owner in owners)
    ]


def family_by_structure(model: nn.Module) -> Family:
    """The family of a transformers model of a common layout, built from its structure and config.

    Raises:
        NotRecognised: naming the first thing that does not fit either layout.
    """
    config = model.config
    base = getattr(model, "base_model", model)
    _fields(config)
    reasons = []
    for builder in (_decoder_family, _encoder_family):
        try:
            return builder(model, base, config)
        except NotRecognised as err:
            reasons.append(str(err))
    raise NotRecognised("; ".join(reasons))


def _fields(config: Any) -> tuple[int, int, int]:
    hidden, heads, ffn = (_field(config, name) for name in ("hidden_size", "num_attention_heads", "intermediate_size"))
    if hidden is None or heads is None or ffn is None:
        raise NotRecognised("its config lacks hidden_size, num_attention_heads or intermediate_size")
    for name in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
        if (_field(config, name) or 0) > 0:
            raise NotRecognised(f"it is a mixture of experts ({name}={getattr(config, name)})")
    return hidden, heads, ffn


def _layer_list(base: nn.Module, path: str, layout: str) -> nn.ModuleList:
    try:
        layers = base.get_submodule(path)
    except AttributeError:
        raise NotRecognised(f"no {path} layer list ({layout} layout)") from None
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise NotRecognised(f"{path} is not a list of layers ({layout} layout)")
    return layers


def _decoder_family(model: nn.Module, base: nn.Module, config: Any) -> Family:
    hidden, heads, ffn = _fields(config)
    kv_heads = _field(config, "num_key_value_heads") or heads
    head_dim = _field(config, "head_dim") or hidden // heads
    layers = _layer_list(base, "layers", "decoder")
    attention_paths = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    mlp = next(
        (
            (ffn_in, ffn_out)
            for ffn_in, ffn_out in _DECODER_MLPS
            if all(_linear(layers[0], path) is not None for path in (*ffn_in, ffn_out))
        ),
        None,
    )
    if mlp is None:
        raise NotRecognised(
            "decoder layers have no MLP of nn.Linear layers (gate_proj/up_proj/down_proj, up_proj/down_proj, "
            "c_fc/c_proj or fc1/fc2; fused or expert MLPs are not supported)"
        )
    ffn_in, ffn_out = mlp
    head_norms: list[str] = []
    for index, layer in enumerate(layers):
        q, k, v, o = (_linear(layer, path) for path in attention_paths)
        if q is None or k is None or v is None or o is None:
            raise NotRecognised(f"layer {index} has no separate nn.Linear self_attn.q_proj/k_proj/v_proj/o_proj")
        widths = (q.out_features, k.out_features, v.out_features, o.in_features)
        if widths != (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim, heads * head_dim) or heads % kv_heads:
            raise NotRecognised(
                f"layer {index}: q/k/v/o widths {widths} do not match {heads} heads and {kv_heads} key/value heads "
                f"of size {head_dim}"
            )
        if any(_linear(layer, path) is None for path in (*ffn_in, ffn_out)):
            raise NotRecognised(f"layer {index} lacks the MLP projections {[*ffn_in, ffn_out]}")
        attention = layer.get_submodule("self_attn")
        extra = _owned_parameters(attention, {"q_proj", "k_proj", "v_proj", "o_proj"})
        for name in extra:
            owner = name.rpartition(".")[0]
            parameter = attention.get_parameter(name)
            if not owner or parameter.shape != (head_dim,):
                raise NotRecognised(
                    f"self_attn.{name} {tuple(parameter.shape)} is neither a projection nor a norm within one head"
                )
            if index == 0 and f"self_attn.{owner}" not in head_norms:
                head_norms.append(f"self_attn.{owner}")
        extra = _owned_parameters(
            layer.get_submodule("mlp"), {path.removeprefix("mlp.") for path in (*ffn_in, ffn_out)}
        )
        if extra:
            raise NotRecognised(f"layer {index}: mlp holds parameters {extra} besides its projections")
    fields = getattr(type(config), "__dataclass_fields__", {})
    _probe_widths(model, config, heads, kv_heads, head_dim, "head_dim" in fields)
    model_type = getattr(config, "model_type", "")
    return Family(
        name=model_type,
        model_type=model_type,
        config_class=type(config).__name__,
        layers="layers",
        attention="self_attn",
        query=attention_paths[0],
        key=attention_paths[1],
        value=attention_paths[2],
        attn_out=attention_paths[3],
        ffn_in=ffn_in,
        ffn_out=ffn_out,
        grouped_kv="num_key_value_heads" in fields,
        head_dim_field="head_dim" in fields,
        norm_classes=_rms_norm_classes(model),
        head_norms=tuple(head_norms),
        set_attention=_set_attention,
        kind="decoder",
        structural=True,
    )


def _probe_widths(
    model: nn.Module, config: Any, heads: int, kv_heads: int, head_dim: int, head_dim_field: bool
) -> None:
    """Check that the modeling code sizes the projections from the config as the adapter assumes.

    One instance cannot tell ``o_proj``'s input width (heads x head size) from the hidden size when
    they are equal, so a one-layer model of the same class is built (on the meta device: no memory,
    no initialisation) from the config with the hidden size doubled, and its widths are compared.
    """
    variant = copy.deepcopy(config)
    variant.hidden_size = 2 * config.hidden_size
    variant.num_hidden_layers = 1
    if isinstance(getattr(variant, "layer_types", None), list):
        variant.layer_types = variant.layer_types[:1]
    # A head size the config states (as a field, or as an extra attribute some modeling code reads) stays.
    size = head_dim if head_dim_field or _field(config, "head_dim") else variant.hidden_size // heads
    try:
        with torch.device("meta"):
            probe = type(model)(variant)
        layer = probe.base_model.get_submodule("layers")[0]
    except Exception as err:  # noqa: BLE001 - any failure means the layout is not the assumed one
        raise NotRecognised(
            f"a one-layer {type(model).__name__} with another hidden size cannot be built: {err}"
        ) from None
    expected = {
        "self_attn.q_proj": (heads * size, variant.hidden_size),
        "self_attn.k_proj": (kv_heads * size, variant.hidden_size),
        "self_attn.o_proj": (variant.hidden_size, heads * size),
    }
    for path, shape in expected.items():
        module = _linear(layer, path)
        if module is None or tuple(module.weight.shape) != shape:
            actual = None if module is None else tuple(module.weight.shape)
            raise NotRecognised(
                f"{type(model).__name__} sizes {path} as {actual} where {heads} heads of size {size} and hidden size "
                f"{variant.hidden_size} give {shape}"
            )


def _encoder_family(model: nn.Module, base: nn.Module, config: Any) -> Family:
    hidden, heads, ffn = _fields(config)
    layers = _layer_list(base, "encoder.layer", "BERT")
    paths = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
    for index, layer in enumerate(layers):
        q, k, v, o = (_linear(layer, path) for path in paths)
        if q is None or k is None or v is None or o is None:
            raise NotRecognised(
                f"layer {index} has no nn.Linear attention.self.query/key/value, attention.output.dense"
            )
        if (q.out_features, k.out_features, v.out_features, o.in_features) != (hidden,) * 4 or hidden % heads:
            raise NotRecognised(f"layer {index}: query/key/value widths differ from hidden_size {hidden}")
        if _linear(layer, "intermediate.dense") is None or _linear(layer, "output.dense") is None:
            raise NotRecognised(f"layer {index} has no nn.Linear intermediate.dense and output.dense")
        extra = _owned_parameters(layer.get_submodule("attention.self"), {"query", "key", "value"})
        if extra:
            raise NotRecognised(f"layer {index}: attention.self holds parameters {extra} besides its projections")
        if getattr(config, "position_embedding_type", "absolute") not in ("absolute", None):
            raise NotRecognised(f"position_embedding_type {config.position_embedding_type!r} is not supported")
    model_type = getattr(config, "model_type", "")
    return Family(
        name=model_type,
        model_type=model_type,
        config_class=type(config).__name__,
        layers="encoder.layer",
        attention="attention.self",
        query=paths[0],
        key=paths[1],
        value=paths[2],
        attn_out=paths[3],
        ffn_in=("intermediate.dense",),
        ffn_out="output.dense",
        set_attention=_set_attention,
        kind="encoder",
        structural=True,
    )


def _rms_norm_classes(model: nn.Module) -> tuple[str, ...]:
    """Names of the norm classes in ``model`` that compute Llama's RMSNorm (one probe per class)."""
    verdicts: dict[type, bool] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in verdicts and "Norm" in cls.__name__ and cls.__module__.startswith("transformers."):
            verdicts[cls] = _is_llama_rms_norm(module)
    return tuple(sorted(cls.__name__ for cls, ok in verdicts.items() if ok))
