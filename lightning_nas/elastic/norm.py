"""Weight-entangled normalisation layers: BatchNorm (1d/2d) and LayerNorm."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_nas.elastic._base import Axis, ElasticModule, Index, index_size, take

__all__ = ["ElasticBatchNorm1d", "ElasticBatchNorm2d", "ElasticLayerNorm"]


class _ElasticBatchNorm(ElasticModule):
    """Batch norm over the active channels; running statistics are shared slices of the full ones.

    With a prefix index the running statistics are updated in place through views. With an index
    tensor (channels after a concatenation) they are gathered, updated, and scattered back.
    """

    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features", "num_features")}
    default_role = "features"
    active_features: Index

    def forward(self, input: Tensor) -> Tensor:
        index = self.active_features
        if index is None:
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, used for recalibration
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        running_mean = take(self.running_mean, 0, index) if track and self.running_mean is not None else None
        running_var = take(self.running_var, 0, index) if track and self.running_var is not None else None
        weight = None if self.weight is None else take(self.weight, 0, index)
        bias = None if self.bias is None else take(self.bias, 0, index)
        output = F.batch_norm(input, running_mean, running_var, weight, bias, use_batch_stats, momentum, self.eps)
        if isinstance(index, Tensor) and self.training and running_mean is not None:
            with torch.no_grad():
                self.running_mean.index_copy_(0, index, running_mean)
                self.running_var.index_copy_(0, index, running_var)
        return output

    def active_tensors(self) -> dict[str, Tensor]:
        names = ("weight", "bias", "running_mean", "running_var")
        return {
            name: take(getattr(self, name), 0, self.active_features)
            for name in names
            if getattr(self, name) is not None
        }

    def _dense_attributes(self) -> dict[str, Any]:
        return {"num_features": index_size(self.active_features, self.num_features)}


class ElasticBatchNorm1d(_ElasticBatchNorm, nn.BatchNorm1d):
    """Elastic ``nn.BatchNorm1d`` (see :class:`ElasticBatchNorm2d`)."""

    _dense_cls = nn.BatchNorm1d


class ElasticBatchNorm2d(_ElasticBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the leading (or indexed) active channels.

    Example:
        >>> import torch
        >>> bn = ElasticBatchNorm2d.convert(torch.nn.BatchNorm2d(8))
        >>> bn.active_features = 4
        >>> bn(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    _dense_cls = nn.BatchNorm2d


class ElasticLayerNorm(ElasticModule, nn.LayerNorm):
    """``nn.LayerNorm`` over the active leading features of a 1-d ``normalized_shape``.

    The statistics are taken over the active features only, as in AutoFormer's elastic embedding.

    Example:
        >>> import torch
        >>> norm = ElasticLayerNorm.convert(torch.nn.LayerNorm(8))
        >>> norm.active_features = 6
        >>> norm(torch.randn(2, 6)).shape
        torch.Size([2, 6])
    """

    _dense_cls = nn.LayerNorm
    _elastic_attrs = ("active_features",)
    elastic_axes = {"features": Axis("active_features")}
    default_role = "features"
    active_features: Index

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        # Only a 1-d normalized shape has one features axis to slice.
        shape = module.normalized_shape
        return {"features": shape[0]} if len(shape) == 1 else {}

    def forward(self, input: Tensor) -> Tensor:
        index = self.active_features
        if index is None:
            return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = None if self.weight is None else take(self.weight, 0, index)
        bias = None if self.bias is None else take(self.bias, 0, index)
        size = index_size(index, self.normalized_shape[0])
        return F.layer_norm(input, (size,), weight, bias, self.eps)

    def active_tensors(self) -> dict[str, Tensor]:
        return {
            name: take(getattr(self, name), 0, self.active_features)
            for name in ("weight", "bias")
            if getattr(self, name) is not None
        }

    def _dense_attributes(self) -> dict[str, Any]:
        return {"normalized_shape": (index_size(self.active_features, self.normalized_shape[0]),)}
