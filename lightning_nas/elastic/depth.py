"""Elastic depth: containers that run only some of their blocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from lightning_nas.elastic._base import ElasticModule

__all__ = ["ElasticModuleList", "ElasticSequential"]


class _ElasticContainer(ElasticModule):
    """A container with a set of skipped child indices; skipped blocks act as the identity."""

    _elastic_attrs = ("skipped",)
    skipped: frozenset[int] | None

    def active_indices(self) -> list[int]:
        skipped = self.skipped or frozenset()
        return [i for i in range(len(self._modules)) if i not in skipped]

    def active_tensors(self) -> dict[str, Tensor]:
        return {}

    def _dense_attributes(self) -> dict[str, Any]:
        kept = [list(self._modules.values())[i] for i in self.active_indices()]
        return {"_modules": {str(i): module for i, module in enumerate(kept)}}


class ElasticSequential(_ElasticContainer, nn.Sequential):
    """``nn.Sequential`` that skips the blocks in ``skipped``.

    Example:
        >>> import torch
        >>> seq = ElasticSequential.convert(torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU()))
        >>> seq.skipped = frozenset({1})
        >>> seq.to_dense()
        Sequential(
          (0): Identity()
        )
    """

    _dense_cls = nn.Sequential

    def forward(self, input: Any) -> Any:
        if not self.skipped:
            return super().forward(input)
        modules = list(self._modules.values())
        for i in self.active_indices():
            input = modules[i](input)
        return input


class ElasticModuleList(_ElasticContainer, nn.ModuleList):
    """``nn.ModuleList`` whose iteration yields only the active blocks.

    Model code that loops over the list (``for block in self.blocks: x = block(x)``) or over a
    slice of it (``for block in self.blocks[:n]``) runs fewer blocks without any change; indexing
    still reaches every block.

    Example:
        >>> import torch
        >>> blocks = ElasticModuleList.convert(torch.nn.ModuleList([torch.nn.Identity()] * 4))
        >>> blocks.skipped = frozenset({1, 3})
        >>> len(list(blocks)), len(list(blocks[:3]))
        (2, 2)
    """

    _dense_cls = nn.ModuleList

    def __iter__(self) -> Iterator[nn.Module]:
        if not self.skipped:
            return iter(self._modules.values())
        modules = list(self._modules.values())
        return iter([modules[i] for i in self.active_indices()])

    def __getitem__(self, idx: int | slice) -> Any:
        if not isinstance(idx, slice):
            return super().__getitem__(idx)
        # nn.ModuleList builds the slice with ``self.__class__``, which would lose the skipped blocks.
        sliced = super().__getitem__(idx)
        skipped = self.skipped or frozenset()
        kept = range(len(self))[idx]
        object.__setattr__(sliced, "skipped", frozenset(j for j, i in enumerate(kept) if i in skipped) or None)
        return sliced
