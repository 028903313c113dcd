"""Configs of extracted transformers, and the model classes for shapes stock configs cannot express.

An extracted sub-network keeps the stock config class whenever its standard fields describe it
(``num_hidden_layers``, ``hidden_size``, ``intermediate_size``, ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``); such a directory reloads with plain transformers.

Two kinds of shapes need more: layers that differ from each other, and, in families that derive
the head size as ``hidden_size // num_attention_heads`` (BERT, RoBERTa, ELECTRA, DistilBERT,
GPT-2), fewer heads than that formula implies. For those, each family gets a config subclass
with model type ``lightning_nas_<family>`` that

- stores per-layer differences in transformers' own ``per_layer_config`` field (a mapping from
  layer index to overrides of ``num_attention_heads`` / ``num_key_value_heads`` / the FFN size;
  the global fields hold the widest layer), and the head size in ``head_dim``;
- is registered with ``AutoConfig``, and its model classes (subclasses of the stock ones, named
  ``LightningNas<StockClass>``) with every ``AutoModel*`` class the stock model is registered
  with, so ``AutoModelFor<Task>.from_pretrained(dir)`` works once ``lightning_nas`` is imported.

The model classes build the stock model, then give each layer its own projection sizes before
the weights are loaded. Model classes are created the first time a config of their family is
instantiated, so that importing ``lightning_nas`` imports no transformers modeling code.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError

from lightning_nas.adapters._hf_family import Family, LayerShape

__all__ = [
    "AUTO_CLASSES",
    "compressed_model_class",
    "export_config",
    "family_for",
    "listed_model_types",
    "load_instructions",
    "register_family",
    "stock_model_class",
]

# Model types and class names of compressed exports start with these.
_MODEL_TYPE_PREFIX = "lightning_nas_"
_CLASS_PREFIX = "LightningNas"

#: Auto classes a compressed model is registered with (where the stock model is), most generic first.
AUTO_CLASSES = (
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice",
    "AutoModelForNextSentencePrediction",
    "AutoModelForPreTraining",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTextEncoding",
    "AutoModelForTokenClassification",
)
_BUILDING = "_lightning_nas_building"
_FAMILIES: dict[str, Family] = {}  # every family with a compressed config, by stock model type
_CONFIG_CLASSES: dict[str, type] = {}
_MODEL_CLASSES: dict[type, type] = {}  # stock model class -> compressed subclass
_MODELS_REGISTERED: set[str] = set()


class _CompressedConfig:
    """Mixin of the ``lightning_nas_<family>`` configs (see the module docstring)."""

    _family: Family

    def __post_init__(self, **kwargs: Any) -> None:
        if getattr(self, "head_dim", None) is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)  # type: ignore[misc]
        _register_models(self._family)

    def validate_architecture(self) -> None:
        """Per layer: query heads come in whole groups per key/value head, and exist."""
        for index, layer in enumerate(self.per_layer_config):  # type: ignore[attr-defined]
            heads = layer.num_attention_heads
            kv_heads = layer.num_key_value_heads if self._family.grouped_kv else heads
            if heads < 1 or kv_heads < 1 or heads % kv_heads:
                raise ValueError(f"layer {index}: {heads} attention heads cannot share {kv_heads} key/value heads")

    def layer_shapes(self) -> list[LayerShape]:
        """The widths of every layer."""
        shapes = []
        for layer in self.per_layer_config:  # type: ignore[attr-defined]
            heads = layer.num_attention_heads
            kv_heads = layer.num_key_value_heads if self._family.grouped_kv else heads
            shapes.append(LayerShape(heads, kv_heads, self._family.ffn_size(layer)))
        return shapes


class _CompressedModel:
    """Mixin of the ``LightningNas<StockClass>`` models: the stock model with per-layer widths."""

    config_class: type

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if config.__dict__.get(_BUILDING):  # a base model built inside the outer model's __init__
            super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
            return
        family = config._family
        shapes, head_dim = config.layer_shapes(), config.head_dim
        with _stock_view(config, family):
            super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        layers = self.get_submodule(family.layers_path(self))  # type: ignore[attr-defined]
        for layer, shape in zip(layers, shapes):
            family.reshape_layer(layer, shape, head_dim)
        self.init_weights()  # type: ignore[attr-defined]  # only the replaced projections


@contextmanager
def _stock_view(config: Any, family: Family) -> Iterator[None]:
    """Let the stock constructors build uniform layers from ``config``; restore it afterwards.

    The per-layer overrides are hidden (stock code reads the global fields), and families that
    derive the head size from the hidden size see one head, which divides any hidden size; the
    layers are resized to their real widths right after.
    """
    # Only what is set here is restored: PreTrainedModel.__init__ writes to the config too.
    spec = config.__dict__.pop("_heterogeneity_spec", None)
    heads_field = config.attribute_map.get("num_attention_heads", "num_attention_heads")
    heads = config.__dict__[heads_field]
    config.__dict__[_BUILDING] = True
    if not family.head_dim_field:
        config.__dict__[heads_field] = 1
    try:
        yield
    finally:
        del config.__dict__[_BUILDING]
        config.__dict__[heads_field] = heads
        if spec is not None:
            config.__dict__["_heterogeneity_spec"] = spec


def _transformers() -> Any:
    return importlib.import_module("transformers")


def register_family(*families: Family) -> None:
    """Make families known to the HF adapters and register their compressed config classes."""
    if not isinstance(_transformers().models.auto.configuration_auto.CONFIG_MAPPING._extra_content, _CompressedTypes):
        _install_lookup()
    for family in families:
        if family.model_type not in _FAMILIES:
            _register_config(family)


def _register_config(family: Family) -> None:
    transformers = _transformers()
    stock = getattr(transformers, family.config_class)
    namespace: dict[str, Any] = {
        "model_type": _MODEL_TYPE_PREFIX + family.name,
        "_family": family,
        "__module__": __name__,
        "__doc__": f"{stock.__name__} with per-layer widths and an explicit head size (lightning_nas).",
    }
    if "head_dim" not in stock.__dataclass_fields__:
        namespace["__annotations__"] = {"head_dim": int | None}
        namespace["head_dim"] = None
    # `strict` (as on the stock class) makes the validators of this class, not the parent's, run.
    config_cls = strict(type(_CLASS_PREFIX + stock.__name__, (_CompressedConfig, stock), namespace))
    transformers.AutoConfig.register(config_cls.model_type, config_cls)
    _FAMILIES[family.model_type] = family
    _CONFIG_CLASSES[family.model_type] = config_cls
    globals()[config_cls.__name__] = config_cls


class _CompressedTypes(dict):  # type: ignore[type-arg]
    """transformers' table of registered config classes, completed on lookup with ``lightning_nas_<type>``.

    Families recognised by structure are registered when a model of theirs is planned; a process
    that only reloads an export has planned nothing, so the first lookup of such a model type
    recognises the family from a one-layer stock model built on the meta device.
    """

    def __contains__(self, key: object) -> bool:
        if not super().__contains__(key) and isinstance(key, str) and key.startswith(_MODEL_TYPE_PREFIX):
            _register_by_structure(key[len(_MODEL_TYPE_PREFIX) :])
        return super().__contains__(key)


def _install_lookup() -> None:
    # The one use of a private transformers attribute: AutoConfig asks `model_type in _extra_content`.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    extra = getattr(CONFIG_MAPPING, "_extra_content", None)
    if type(extra) is dict:
        CONFIG_MAPPING._extra_content = _CompressedTypes(extra)


def _register_by_structure(model_type: str) -> None:
    import torch

    from lightning_nas.adapters._hf_structure import NotRecognised, family_by_structure

    transformers = _transformers()
    try:
        config = transformers.AutoConfig.for_model(model_type)
        config.num_hidden_layers = 1
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:1]
        with torch.device("meta"):
            model = transformers.AutoModel.from_config(config)
        family = family_by_structure(model)
    except (NotRecognised, ValueError, KeyError, TypeError, AttributeError):
        return  # not a family of a common layout: AutoConfig reports the unknown model type
    if family.model_type == model_type:
        register_family(family)


def family_for(config: Any) -> Family | None:
    """The family of a compressed config or of a stock config listed by model type, or ``None``.

    Families recognised by structure are not returned for stock configs: the same model type
    may be built with options that change its layout, so its models are examined one by one.
    """
    compressed = getattr(type(config), "_family", None)
    if isinstance(compressed, Family):
        return compressed
    family = _FAMILIES.get(getattr(config, "model_type", ""))
    return family if family is not None and not family.structural else None


def listed_model_types(kind: str) -> list[str]:
    """Stock model types of the families listed by model type, of one kind (``"encoder"``, ``"decoder"``)."""
    return sorted(t for t, family in _FAMILIES.items() if family.kind == kind and not family.structural)


def _register_models(family: Family) -> None:
    if family.model_type in _MODELS_REGISTERED:
        return
    transformers = _transformers()
    stock_config = getattr(transformers, family.config_class)
    config_cls = _CONFIG_CLASSES[family.model_type]
    for auto_name in AUTO_CLASSES:
        auto = getattr(transformers, auto_name)
        if stock_config not in auto._model_mapping:
            continue
        stock = auto._model_mapping[stock_config]
        if stock not in _MODEL_CLASSES:
            compressed = type(
                _CLASS_PREFIX + stock.__name__,
                (_CompressedModel, stock),
                {"config_class": config_cls, "__module__": __name__, "_lightning_nas_stock": stock},
            )
            _MODEL_CLASSES[stock] = compressed
            globals()[compressed.__name__] = compressed
        auto.register(config_cls, _MODEL_CLASSES[stock], exist_ok=True)
    _MODELS_REGISTERED.add(family.model_type)


def compressed_model_class(stock: type) -> type:
    """The ``LightningNas<Stock>`` subclass of a stock transformers model class."""
    stock = stock_model_class(stock)
    family = _FAMILIES[stock.config_class.model_type]
    _register_models(family)
    if stock not in _MODEL_CLASSES:
        raise TypeError(f"{stock.__name__} is not registered with any of the Auto classes {list(AUTO_CLASSES)}")
    return _MODEL_CLASSES[stock]


def stock_model_class(cls: type) -> type:
    """The stock transformers class behind a (possibly compressed) model class."""
    return getattr(cls, "_lightning_nas_stock", cls)


def __getattr__(name: str) -> Any:
    # Compressed model classes are created lazily; unpickling may ask for one before that.
    if name.startswith(_CLASS_PREFIX):
        for family in _FAMILIES.values():
            _register_models(family)
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_instructions(directory: str | os.PathLike[str], auto_class: str) -> str:
    """The Python that reloads an exported directory, as it must be typed (``lightning_nas`` only when needed).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "config.json").write_text('{"model_type": "lightning_nas_bert"}')
        >>> print(load_instructions(folder, "AutoModel").replace(str(folder), "DIR"))
        import lightning_nas.adapters, transformers; transformers.AutoModel.from_pretrained('DIR')  # custom config
    """
    model_type = json.loads((Path(directory) / "config.json").read_text()).get("model_type", "")
    load = f"transformers.{auto_class}.from_pretrained({str(directory)!r})"
    if model_type.startswith(_MODEL_TYPE_PREFIX):
        # `lightning_nas` itself imports lazily; its adapters register the config classes.
        return f"import lightning_nas.adapters, transformers; {load}  # custom config"
    return f"import transformers; {load}  # stock config"


def export_config(
    config: Any,
    family: Family,
    shapes: Sequence[LayerShape],
    head_dim: int,
    hidden: int,
    kept: Sequence[int],
    stock_only: bool = False,
) -> Any:
    """The config of an extracted model: the stock class when its fields suffice, else the compressed one.

    Args:
        config: The source model's config.
        family: Its family.
        shapes: Widths of the kept layers, in order.
        head_dim: Head size (unchanged by compression).
        hidden: Hidden size.
        kept: Indices, in the source model, of the kept layers (for per-layer fields such as
            ``layer_types``).
        stock_only: Raise instead of falling back to the compressed config.

    Raises:
        ValueError: ``stock_only`` and the stock config cannot describe the sub-network.
    """
    widest = LayerShape(*(max(values) for values in zip(*shapes)))
    values = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "per_layer_config", "head_dim"):
        values.pop(key, None)
    values.update(
        {
            "hidden_size": hidden,
            "num_hidden_layers": len(shapes),
            "num_attention_heads": widest.heads,
            family.ffn_field: widest.ffn,
        }
    )
    if family.grouped_kv:
        values["num_key_value_heads"] = widest.kv_heads
    if family.embedding_field and family.projected_embedding_size(config) is None:
        values[family.embedding_field] = hidden  # unprojected embeddings shrank with the hidden size
    if isinstance(values.get("layer_types"), list):
        values["layer_types"] = [values["layer_types"][i] for i in kept]
    values = _with_mapped_names(config, values)
    uniform = all(shape == shapes[0] for shape in shapes)
    stock = getattr(_transformers(), family.config_class)
    exported = None
    reason = "its layers differ in width"
    if uniform and (family.head_dim_field or widest.heads * head_dim == hidden):
        try:
            exported = stock(**values, **({"head_dim": head_dim} if family.head_dim_field else {}))
        except (ValueError, StrictDataclassError) as err:  # the stock config's own checks (Llama: hidden % heads)
            reason = f"{family.config_class} refuses it: {err}"
    elif uniform:
        reason = f"{widest.heads} heads of size {head_dim} do not make hidden size {hidden}"
    if exported is None and stock_only:
        raise ValueError(
            f"a stock {family.config_class} cannot describe this sub-network ({reason}); "
            "build the supernet with stock_config=False to export it with a lightning_nas config"
        )
    if exported is None:
        per_layer = {
            index: _layer_overrides(family, shape, widest) for index, shape in enumerate(shapes) if shape != widest
        }
        exported = _CONFIG_CLASSES[family.model_type](**values, head_dim=head_dim, per_layer_config=per_layer or None)
    exported._attn_implementation = config._attn_implementation
    return exported


def _with_mapped_names(config: Any, values: dict[str, Any]) -> dict[str, Any]:
    # GPT-2 / DistilBERT store e.g. `hidden_size` as `n_embd` / `dim`; to_dict uses their names.
    mapping = type(config).attribute_map
    return {mapping.get(key, key): value for key, value in values.items()}


def _layer_overrides(family: Family, shape: LayerShape, widest: LayerShape) -> dict[str, int]:
    overrides = {}
    if shape.heads != widest.heads:
        overrides["num_attention_heads"] = shape.heads
    if family.grouped_kv and shape.kv_heads != widest.kv_heads:
        overrides["num_key_value_heads"] = shape.kv_heads
    if shape.ffn != widest.ffn:
        overrides[family.ffn_field] = shape.ffn
    return overrides
