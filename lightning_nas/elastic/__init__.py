"""Weight-entangled modules: each holds the full weights and computes with an active slice."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping

from torch import nn

from lightning_nas.elastic._base import Axis, ElasticModule, Index, elastic_class, index_size, take
from lightning_nas.elastic.conv import ElasticConv2d, kernel_is_elastic
from lightning_nas.elastic.depth import ElasticModuleList, ElasticSequential
from lightning_nas.elastic.embedding import ElasticEmbedding
from lightning_nas.elastic.linear import ElasticLinear
from lightning_nas.elastic.norm import ElasticBatchNorm1d, ElasticBatchNorm2d, ElasticLayerNorm
from lightning_nas.registry import Registry

__all__ = [
    "ELASTIC_TYPES",
    "Axis",
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
    "check_elastic_type",
    "elastic_class",
    "elastic_types",
    "index_size",
    "kernel_is_elastic",
    "register_elastic_type",
    "take",
]

#: Plain torch module type -> its elastic counterpart: the default registry every supernet reads.
#: An adapter's family types travel in its plan (:attr:`~lightning_nas.adapters.ElasticPlan.elastic_types`)
#: instead, so planning one model never changes how another is converted.
ELASTIC_TYPES: Registry[type[nn.Module], type[ElasticModule]] = Registry(
    "elastic module type",
    {
        nn.Linear: ElasticLinear,
        nn.Conv2d: ElasticConv2d,
        nn.BatchNorm1d: ElasticBatchNorm1d,
        nn.BatchNorm2d: ElasticBatchNorm2d,
        nn.LayerNorm: ElasticLayerNorm,
        nn.Embedding: ElasticEmbedding,
        nn.Sequential: ElasticSequential,
        nn.ModuleList: ElasticModuleList,
    },
)


def register_elastic_type(dense_cls: type[nn.Module], elastic_cls: type[ElasticModule]) -> None:
    """Teach every supernet an elastic version of another module type (the default registry).

    ``elastic_cls`` must subclass both :class:`ElasticModule` and ``dense_cls`` and set
    ``_dense_cls = dense_cls``; its axes are declared by :attr:`ElasticModule.elastic_axes` and
    :meth:`ElasticModule.axis_lengths`. An adapter that needs a type for one model returns it in
    its plan's ``elastic_types`` instead.
    """
    check_elastic_type(dense_cls, elastic_cls)
    ELASTIC_TYPES[dense_cls] = elastic_cls


def check_elastic_type(dense_cls: type[nn.Module], elastic_cls: type[ElasticModule]) -> None:
    """Refuse ``elastic_cls`` as the elastic version of ``dense_cls`` unless it subclasses both."""
    if not (
        isinstance(elastic_cls, type) and issubclass(elastic_cls, ElasticModule) and issubclass(elastic_cls, dense_cls)
    ):
        name = getattr(elastic_cls, "__name__", repr(elastic_cls))
        raise TypeError(f"{name} must subclass ElasticModule and {dense_cls.__name__}")


def elastic_types(
    extra: Mapping[type[nn.Module], type[ElasticModule]] | None = None,
) -> Mapping[type[nn.Module], type[ElasticModule]]:
    """The default registry overlaid with ``extra`` (a plan's own types, which win), read live.

    Example:
        >>> import torch
        >>> class Scaled(torch.nn.Linear):
        ...     pass
        >>> class ElasticScaled(ElasticLinear, Scaled):
        ...     _dense_cls = Scaled
        >>> types = elastic_types({Scaled: ElasticScaled})
        >>> types[Scaled].__name__, types[torch.nn.Linear].__name__, Scaled in ELASTIC_TYPES
        ('ElasticScaled', 'ElasticLinear', False)
    """
    for dense_cls, elastic_cls in (extra or {}).items():
        check_elastic_type(dense_cls, elastic_cls)
    return ChainMap(dict(extra or {}), ELASTIC_TYPES)  # type: ignore[arg-type]
