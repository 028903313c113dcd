"""Weight-entangled ``nn.Conv2d``: elastic channels and elastic kernel size (centre crop)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_nas.elastic._base import Axis, ElasticModule, Index, index_size, take

__all__ = ["ElasticConv2d", "kernel_is_elastic"]


def kernel_is_elastic(conv: nn.Conv2d) -> bool:
    """Whether centre-cropping the kernel of ``conv`` keeps its output size.

    That holds for square, odd kernels with zero "same" padding, which is what OFA-style elastic
    kernels assume.
    """
    (kh, kw), (ph, pw), (dh, dw) = conv.kernel_size, conv.padding, conv.dilation
    return (
        kh == kw
        and kh % 2 == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and (ph, pw) == (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    )


class ElasticConv2d(ElasticModule, nn.Conv2d):
    """``nn.Conv2d`` computing with leading output/input channels and a centre crop of the kernel.

    Depthwise and grouped convolutions with ``in_channels == out_channels`` have one channel axis:
    set ``active_out`` (a whole number of groups) and the active groups follow it.

    Example:
        >>> import torch
        >>> conv = ElasticConv2d.convert(torch.nn.Conv2d(4, 8, 5, padding=2))
        >>> conv.active_in, conv.active_out, conv.active_kernel = 2, 3, 3
        >>> conv(torch.randn(1, 2, 9, 9)).shape
        torch.Size([1, 3, 9, 9])
    """

    _dense_cls = nn.Conv2d
    _elastic_attrs = ("active_in", "active_out", "active_kernel")
    elastic_axes = {"in": Axis("active_in", "in_channels"), "out": Axis("active_out", "out_channels")}
    default_role = "out"
    active_in: Index
    active_out: Index
    active_kernel: int | None

    @property
    def is_depthwise(self) -> bool:
        """Whether in and out channels are one axis: depthwise, or grouped with in == out channels."""
        return self.groups > 1 and self.in_channels == self.out_channels

    def _active_weight(self) -> Tensor:
        weight = take(self.weight, 0, self.active_out)
        if not self.is_depthwise:
            weight = take(weight, 1, self.active_in)
        if self.active_kernel is not None and self.active_kernel != self.kernel_size[0]:
            start = (self.kernel_size[0] - self.active_kernel) // 2
            weight = weight[:, :, start : start + self.active_kernel, start : start + self.active_kernel]
        return weight

    def _active_geometry(self) -> tuple[tuple[int, int], int]:
        kernel = self.active_kernel or self.kernel_size[0]
        if kernel == self.kernel_size[0]:
            padding = self.padding
        else:
            padding = tuple(d * (kernel - 1) // 2 for d in self.dilation)
        groups = self.groups
        if self.is_depthwise:
            groups = index_size(self.active_out, self.out_channels) // (self.out_channels // self.groups)
        return padding, groups  # type: ignore[return-value]

    def forward(self, input: Tensor) -> Tensor:
        if self.active_in is None and self.active_out is None and self.active_kernel is None:
            return self._conv_forward(input, self.weight, self.bias)
        padding, groups = self._active_geometry()
        bias = None if self.bias is None else take(self.bias, 0, self.active_out)
        return F.conv2d(input, self._active_weight(), bias, self.stride, padding, self.dilation, groups)

    def active_tensors(self) -> dict[str, Tensor]:
        tensors = {"weight": self._active_weight()}
        if self.bias is not None:
            tensors["bias"] = take(self.bias, 0, self.active_out)
        return tensors

    def _dense_attributes(self) -> dict[str, Any]:
        padding, groups = self._active_geometry()
        weight_shape = self._active_weight().shape
        return {
            "out_channels": weight_shape[0],
            "in_channels": weight_shape[1] * groups,
            "groups": groups,
            "kernel_size": tuple(weight_shape[2:]),
            "padding": padding,
            # nn.Conv2d caches this for non-zero padding modes; keep it consistent.
            "_reversed_padding_repeated_twice": [p for p in reversed(padding) for _ in range(2)],
        }
