"""Weight-entangled ``nn.Embedding`` (elastic embedding dimension)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_nas.elastic._base import Axis, ElasticModule, Index, index_size, take

__all__ = ["ElasticEmbedding"]


class ElasticEmbedding(ElasticModule, nn.Embedding):
    """``nn.Embedding`` returning the active leading features of each embedding vector.

    Example:
        >>> import torch
        >>> emb = ElasticEmbedding.convert(torch.nn.Embedding(10, 8))
        >>> emb.active_out = 4
        >>> emb(torch.tensor([1, 2])).shape
        torch.Size([2, 4])
    """

    _dense_cls = nn.Embedding
    _elastic_attrs = ("active_out",)
    elastic_axes = {"out": Axis("active_out", "embedding_dim")}
    default_role = "out"
    active_out: Index

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(
            input,
            take(self.weight, 1, self.active_out),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def active_tensors(self) -> dict[str, Tensor]:
        return {"weight": take(self.weight, 1, self.active_out)}

    def _dense_attributes(self) -> dict[str, Any]:
        return {"embedding_dim": index_size(self.active_out, self.embedding_dim)}
