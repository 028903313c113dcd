"""Weight-entangled modules: each holds the full weights and computes with an active slice."""

from __future__ import annotations

from torch import nn

from lightning_nas.elastic._base import ElasticModule, Index, index_size, take
from lightning_nas.elastic.conv import ElasticConv2d, kernel_is_elastic
from lightning_nas.elastic.depth import ElasticModuleList, ElasticSequential
from lightning_nas.elastic.embedding import ElasticEmbedding
from lightning_nas.elastic.linear import ElasticLinear
from lightning_nas.elastic.norm import ElasticBatchNorm1d, ElasticBatchNorm2d, ElasticLayerNorm

__all__ = [
    "ELASTIC_TYPES",
    "ElasticBatchNorm1d",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticEmbedding",
    "ElasticLayerNorm",
    "ElasticLinear",
    "ElasticModule",
    "ElasticModuleList",
    "ElasticSequential",
    "Index",
    "index_size",
    "kernel_is_elastic",
    "register_elastic_type",
    "take",
]

#: Plain torch module type -> its elastic counterpart.
ELASTIC_TYPES: dict[type[nn.Module], type[ElasticModule]] = {
    nn.Linear: ElasticLinear,
    nn.Conv2d: ElasticConv2d,
    nn.BatchNorm1d: ElasticBatchNorm1d,
    nn.BatchNorm2d: ElasticBatchNorm2d,
    nn.LayerNorm: ElasticLayerNorm,
    nn.Embedding: ElasticEmbedding,
    nn.Sequential: ElasticSequential,
    nn.ModuleList: ElasticModuleList,
}


def register_elastic_type(dense_cls: type[nn.Module], elastic_cls: type[ElasticModule]) -> None:
    """Teach the supernet an elastic version of another module type (used by family adapters).

    ``elastic_cls`` must subclass both :class:`ElasticModule` and ``dense_cls`` and set
    ``_dense_cls = dense_cls``; its active-slice attributes are ``active_in`` / ``active_out`` /
    ``active_features`` for the axis roles ``"in"`` / ``"out"`` / ``"features"``.
    """
    if not (issubclass(elastic_cls, ElasticModule) and issubclass(elastic_cls, dense_cls)):
        raise TypeError(f"{elastic_cls.__name__} must subclass ElasticModule and {dense_cls.__name__}")
    ELASTIC_TYPES[dense_cls] = elastic_cls
