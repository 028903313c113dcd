"""Elastic versions of the Hugging Face modules that plain torch has no counterpart for.

GPT-2's ``Conv1D`` (a Linear with a transposed weight), the RMSNorm classes of the Llama family
and GPT-2's attention (whose forward splits the fused q|k|v output at a fixed ``split_size``).
The adapters create them for the exact classes found in the model being planned and hand them to
the supernet in the plan (``ElasticPlan.elastic_types``), so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_nas.elastic import Axis, ElasticModule, Index, elastic_class, index_size, take

__all__ = ["elastic_conv1d", "elastic_gpt2_attention", "elastic_rms_norm"]


class _ElasticConv1D(ElasticModule):
    """``Conv1D`` computing with ``weight[in_index][:, out_index]`` (its weight is ``(in, out)``)."""

    _elastic_attrs = ("active_in", "active_out")
    elastic_axes = {"in": Axis("active_in", "nx"), "out": Axis("active_out", "nf")}
    active_in: Index
    active_out: Index

    def _active(self) -> tuple[Tensor, Tensor]:
        weight = take(take(self.weight, 1, self.active_out), 0, self.active_in)
        return weight, take(self.bias, 0, self.active_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.active_in is None and self.active_out is None:
            return super().forward(x)
        weight, bias = self._active()
        out = torch.addmm(bias, x.reshape(-1, x.size(-1)), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    def active_tensors(self) -> dict[str, Tensor]:
        weight, bias = self._active()
        return {"weight": weight, "bias": bias}

    def _dense_attributes(self) -> dict[str, Any]:
        return {"nx": index_size(self.active_in, self.nx), "nf": index_size(self.active_out, self.nf)}


class _ElasticRMSNorm(ElasticModule):
    """RMSNorm over the active leading features (statistics over those features only).

    Only for the RMSNorm classes whose forward is Llama's: ``weight * x / rms(x)`` computed in
    float32 and cast back; the adapters list those classes by name.
    """

    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features")}
    default_role = "features"
    active_features: Index

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        weight = getattr(module, "weight", None)
        return {} if weight is None else {"features": weight.shape[0]}

    def forward(self, hidden_states: Tensor) -> Tensor:
        if self.active_features is None:
            return super().forward(hidden_states)
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return take(self.weight, 0, self.active_features) * hidden_states.to(input_dtype)

    def active_tensors(self) -> dict[str, Tensor]:
        return {"weight": take(self.weight, 0, self.active_features)}

    def _dense_attributes(self) -> dict[str, Any]:
        return {}


class _ElasticGPT2Attention(ElasticModule):
    """GPT-2 attention whose q|k|v split follows the active heads.

    Its ``"features"`` axis is the width of each of q, k and v (heads x head size); the fused
    ``c_attn`` and ``c_proj`` projections are elastic modules of their own.
    """

    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features")}
    active_features: Index

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        return {"features": module.num_heads * module.head_dim}

    @property
    def split_size(self) -> int:  # type: ignore[override]
        return index_size(self.active_features, self.num_heads * self.head_dim)

    def active_tensors(self) -> dict[str, Tensor]:
        return {}

    def _dense_attributes(self) -> dict[str, Any]:
        return {"split_size": self.split_size, "num_heads": self.split_size // self.head_dim}


def elastic_conv1d(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for transformers' ``Conv1D`` (created on first use).

    Example:
        >>> import torch
        >>> from transformers.pytorch_utils import Conv1D
        >>> layer = elastic_conv1d(Conv1D).convert(Conv1D(8, 4))
        >>> layer.active_in, layer.active_out = 3, 5
        >>> layer(torch.randn(2, 3)).shape
        torch.Size([2, 5])
    """
    return elastic_class(dense_cls, _ElasticConv1D)


def elastic_rms_norm(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for a Llama-style RMSNorm class (created on first use).

    Example:
        >>> import torch
        >>> from transformers.models.llama.modeling_llama import LlamaRMSNorm
        >>> norm = elastic_rms_norm(LlamaRMSNorm).convert(LlamaRMSNorm(8))
        >>> norm.active_features = 6
        >>> norm(torch.randn(2, 6)).shape
        torch.Size([2, 6])
    """
    return elastic_class(dense_cls, _ElasticRMSNorm)


def elastic_gpt2_attention(dense_cls: type[nn.Module]) -> type[ElasticModule]:
    """The elastic class for GPT-2's attention module (created on first use)."""
    return elastic_class(dense_cls, _ElasticGPT2Attention)
