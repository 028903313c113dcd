"""Elastic versions of the timm modules that plain torch has no counterpart for.

Norm + activation layers (``BatchNormAct2d``), channels-first layer norm (``LayerNorm2d``),
modules holding vectors along the features (layer scales, ConvNeXt's ``gamma``, a ViT's class
token and position embedding) and timm's ``Attention`` (whose forward reshapes q|k|v with
``num_heads``). The timm adapter creates them for the classes found in the model being planned
and hands them to the supernet in the plan (``ElasticPlan.elastic_types``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_nas.elastic import Axis, ElasticModule, Index, elastic_class, index_size, take
from lightning_nas.elastic.conv import ElasticConv2d
from lightning_nas.elastic.depth import _ElasticContainer
from lightning_nas.elastic.linear import ElasticLinear
from lightning_nas.elastic.norm import ElasticLayerNorm, _ElasticBatchNorm

__all__ = [
    "elastic_attention",
    "elastic_batch_norm_act",
    "elastic_conv2d_same",
    "elastic_layer_norm",
    "elastic_linear",
    "elastic_stage",
    "elastic_vectors",
]


class _ElasticBatchNormAct(_ElasticBatchNorm):
    """timm's ``BatchNormAct2d``: batch norm over the active channels, then its dropout and activation."""

    def forward(self, input: Tensor) -> Tensor:
        if self.active_features is None:
            return self._dense_cls.forward(self, input)
        return self.act(self.drop(_ElasticBatchNorm.forward(self, input)))


class _ElasticConv2dSame(ElasticConv2d):
    """timm's ``Conv2dSame`` (TensorFlow "same" padding computed from the input) over the active channels."""

    def forward(self, input: Tensor) -> Tensor:
        if self.active_in is None and self.active_out is None:
            return self._dense_cls.forward(self, input)
        from timm.layers.padding import pad_same

        # The kernel never shrinks here (its padding is not symmetric), so the padding is the dense one's.
        return ElasticConv2d.forward(self, pad_same(input, self.kernel_size, self.stride, self.dilation))


class _ElasticStage(_ElasticContainer):
    """A stage whose forward runs ``for block in self.children()`` (timm's ``RegStage``): runs only
    the blocks not in ``skipped``; the dense stage keeps the names of the blocks it keeps."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.skipped:
            return self._dense_cls.forward(self, x)
        modules = list(self._modules.values())
        for i in self.active_indices():
            x = modules[i](x)
        return x

    def __getitem__(self, index: int) -> nn.Module:
        return list(self._modules.values())[index]

    def _dense_attributes(self) -> dict[str, Any]:
        items = list(self._modules.items())
        return {"_modules": dict(items[i] for i in self.active_indices())}


class _ElasticLayerNorm2d(ElasticLayerNorm):
    """timm's ``LayerNorm2d``: layer norm over the active channels of an ``(N, C, H, W)`` tensor."""

    def forward(self, input: Tensor) -> Tensor:
        if self.active_features is None:
            return self._dense_cls.forward(self, input)
        return ElasticLayerNorm.forward(self, input.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ElasticVectors(ElasticModule):
    """A module whose ``_vectors`` parameters are sliced on their last axis (``active_features``).

    The module's own forward runs unchanged: reading one of those attributes returns the active
    slice (a class-level property wins over ``nn.Module.__getattr__``).
    """

    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features")}
    _vectors: tuple[str, ...] = ()
    active_features: Index

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        # Every vector of the class lies along the same features; length-1 ones broadcast.
        lengths = {
            p.shape[-1] for n in cls._vectors if (p := module._parameters.get(n)) is not None and p.shape[-1] > 1
        }
        return {"features": lengths.pop()} if len(lengths) == 1 else {}

    def active_tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self._vectors if self._parameters.get(name) is not None}

    def _dense_attributes(self) -> dict[str, Any]:
        return {}


def _vector_property(name: str) -> property:
    def get(self: _ElasticVectors) -> Tensor | None:
        param = self._parameters.get(name)
        if param is None or param.shape[-1] == 1:  # absent here, or a length-1 "vector" that broadcasts
            return param
        return take(param, -1, self.active_features)

    return property(get, doc=f"The active slice of ``{name}``.")


class _ElasticAttention(ElasticModule):
    """timm's ``Attention`` computing with its leading active heads (``active_features`` counts
    entries of q, k or v: heads x head size); ``qkv`` and ``proj`` are elastic modules of their own."""

    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features")}
    active_features: Index

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        return {"features": module.__dict__["attn_dim"]}

    @property
    def attn_dim(self) -> int:  # type: ignore[override]
        return index_size(self.active_features, self.__dict__["attn_dim"])

    @property
    def num_heads(self) -> int:  # type: ignore[override]
        return self.attn_dim // self.head_dim

    def active_tensors(self) -> dict[str, Tensor]:
        return {}

    def _dense_attributes(self) -> dict[str, Any]:
        return {"attn_dim": self.attn_dim, "num_heads": self.num_heads}


def elastic_batch_norm_act(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for a ``BatchNormAct2d``-style class (created on first use).

    Example:
        >>> import torch
        >>> from timm.layers import BatchNormAct2d
        >>> bn = elastic_batch_norm_act(BatchNormAct2d).convert(BatchNormAct2d(8))
        >>> bn.active_features = 4
        >>> bn(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """
    return elastic_class(dense_cls, _ElasticBatchNormAct)


def elastic_layer_norm(dense_cls: type[nn.Module], channels_first: bool) -> type[ElasticModule]:
    """The elastic class for timm's ``LayerNorm`` (last axis) or ``LayerNorm2d`` (channels first).

    Example:
        >>> import torch
        >>> from timm.layers import LayerNorm2d
        >>> norm = elastic_layer_norm(LayerNorm2d, channels_first=True).convert(LayerNorm2d(8))
        >>> norm.active_features = 6
        >>> norm(torch.randn(2, 6, 3, 3)).shape
        torch.Size([2, 6, 3, 3])
    """
    return elastic_class(dense_cls, _ElasticLayerNorm2d if channels_first else ElasticLayerNorm)


def elastic_conv2d_same(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for timm's ``Conv2dSame`` (created on first use).

    Example:
        >>> import torch
        >>> from timm.layers import Conv2dSame
        >>> conv = elastic_conv2d_same(Conv2dSame).convert(Conv2dSame(4, 8, 3, stride=2))
        >>> conv.active_in, conv.active_out = 2, 5
        >>> conv(torch.randn(1, 2, 9, 9)).shape
        torch.Size([1, 5, 5, 5])
    """
    return elastic_class(dense_cls, _ElasticConv2dSame)


def elastic_stage(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for a stage that runs its children in order (timm's ``RegStage``)."""
    return elastic_class(dense_cls, _ElasticStage)


def elastic_linear(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for timm's ``Linear`` (an ``nn.Linear`` with the same eager forward).

    Example:
        >>> import torch
        >>> from timm.layers import Linear
        >>> layer = elastic_linear(Linear).convert(Linear(8, 4))
        >>> layer.active_in = 6
        >>> layer(torch.randn(2, 6)).shape
        torch.Size([2, 4])
    """
    return elastic_class(dense_cls, ElasticLinear)


def elastic_vectors(dense_cls: type[nn.Module], names: tuple[str, ...]) -> type[ElasticModule]:
    """The elastic class of a module whose parameters ``names`` lie along the features.

    Example:
        >>> import torch
        >>> from timm.layers import LayerScale
        >>> scale = elastic_vectors(LayerScale, ("gamma",)).convert(LayerScale(8))
        >>> scale.active_features = 6
        >>> scale(torch.randn(2, 6)).shape
        torch.Size([2, 6])
    """
    attrs = {name: _vector_property(name) for name in names}
    cls = elastic_class(dense_cls, _ElasticVectors, _vectors=names, **attrs)
    # Instances of one class differ in the vectors they hold (a ViT with or without register
    # tokens): the class slices every name it has met, each instance the ones it has.
    new = tuple(name for name in names if name not in cls._vectors)  # type: ignore[attr-defined]
    if new:
        for name in new:
            setattr(cls, name, _vector_property(name))
        cls._vectors = (*cls._vectors, *new)  # type: ignore[attr-defined]
    return cls


def elastic_attention(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for timm's ``Attention`` (created on first use).

    Example:
        >>> import torch
        >>> from timm.layers import Attention
        >>> attn = elastic_attention(Attention).convert(Attention(16, num_heads=4))
        >>> attn.active_features = 8  # two heads of size 4
        >>> attn.num_heads, attn.attn_dim
        (2, 8)
    """
    return elastic_class(dense_cls, _ElasticAttention)
