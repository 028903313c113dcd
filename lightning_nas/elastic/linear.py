"""Weight-entangled ``nn.Linear``."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_nas.elastic._base import Axis, ElasticModule, Index, index_size, take

__all__ = ["ElasticLinear"]


class ElasticLinear(ElasticModule, nn.Linear):
    """``nn.Linear`` whose active sub-layer uses ``weight[out_index][:, in_index]``.

    Example:
        >>> import torch
        >>> layer = ElasticLinear.convert(torch.nn.Linear(8, 4))
        >>> layer.active_in, layer.active_out = 6, 2
        >>> layer(torch.randn(3, 6)).shape
        torch.Size([3, 2])
        >>> layer.to_dense()
        Linear(in_features=6, out_features=2, bias=True)
    """

    _dense_cls = nn.Linear
    _elastic_attrs = ("active_in", "active_out")
    elastic_axes = {"in": Axis("active_in", "in_features"), "out": Axis("active_out", "out_features")}
    active_in: Index
    active_out: Index

    def forward(self, input: Tensor) -> Tensor:
        if self.active_in is None and self.active_out is None:
            return F.linear(input, self.weight, self.bias)
        weight = take(take(self.weight, 0, self.active_out), 1, self.active_in)
        bias = None if self.bias is None else take(self.bias, 0, self.active_out)
        return F.linear(input, weight, bias)

    def active_tensors(self) -> dict[str, Tensor]:
        tensors = {"weight": take(take(self.weight, 0, self.active_out), 1, self.active_in)}
        if self.bias is not None:
            tensors["bias"] = take(self.bias, 0, self.active_out)
        return tensors

    def _dense_attributes(self) -> dict[str, Any]:
        return {
            "in_features": index_size(self.active_in, self.in_features),
            "out_features": index_size(self.active_out, self.out_features),
        }
