"""What every elastic module shares: active-slice bookkeeping and conversion to and from torch."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import Tensor, nn

__all__ = ["ElasticModule", "Index", "index_size", "take"]

#: How an elastic axis is sliced: ``None`` keeps the whole axis, an ``int`` keeps that many leading
#: entries (a view, no copy), a ``LongTensor`` keeps those entries (after a concatenation the
#: active channels of the inputs are not one prefix).
Index = int | Tensor | None

_M = TypeVar("_M", bound=nn.Module)


def take(tensor: Tensor, dim: int, index: Index) -> Tensor:
    """Slice ``tensor`` along ``dim`` with an :data:`Index`."""
    if index is None:
        return tensor
    if isinstance(index, int):
        return tensor.narrow(dim, 0, index)
    return tensor.index_select(dim, index)


def index_size(index: Index, full: int) -> int:
    """Number of entries an :data:`Index` keeps of an axis of length ``full``."""
    if index is None:
        return full
    if isinstance(index, int):
        return index
    return int(index.numel())


class ElasticModule(nn.Module):
    """Mixin for a torch module that computes with a slice of its full weights.

    An elastic module is created from the plain module by :meth:`convert`, which shares the
    parameters, buffers, hooks and attributes of the original (nothing is copied, state-dict keys
    stay the same), and turned back into a plain, physically smaller module by :meth:`to_dense`.
    Subclasses list the attributes that hold their active slice in ``_elastic_attrs``.
    """

    _elastic_attrs: tuple[str, ...] = ()
    _dense_cls: type[nn.Module]

    @classmethod
    def convert(cls: type[_M], module: nn.Module) -> _M:
        """Return an elastic view of ``module`` sharing its parameters (full size active)."""
        if type(module) is not cls._dense_cls:  # type: ignore[attr-defined]
            raise TypeError(
                f"{cls.__name__}.convert expects a {cls._dense_cls.__name__}, "  # type: ignore[attr-defined]
                f"got {type(module).__name__}"
            )
        elastic = cls.__new__(cls)
        # Sharing the instance state keeps user hooks, flags and extra attributes, and the very
        # same Parameter objects, so optimizers and tied weights keep working.
        elastic.__dict__.update(module.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):
            elastic.__dict__[registry] = dict(module.__dict__[registry])
        for name in cls._elastic_attrs:  # type: ignore[attr-defined]
            object.__setattr__(elastic, name, None)
        return elastic

    def reset_active(self) -> None:
        """Make the whole module active again."""
        for name in self._elastic_attrs:
            object.__setattr__(self, name, None)

    @property
    def is_full(self) -> bool:
        return all(getattr(self, name) is None for name in self._elastic_attrs)

    def active_tensors(self) -> dict[str, Tensor]:
        """The active slice of each parameter and buffer that the sub-module keeps, by name."""
        raise NotImplementedError

    def _dense_attributes(self) -> dict[str, Any]:
        """Plain attributes of the dense module that change with the active slice."""
        raise NotImplementedError

    def to_dense(self) -> nn.Module:
        """A plain torch module of the active size, holding copies of the active weights.

        It shares nothing with the supernet and carries the instance attributes and hooks of the
        original module.
        """
        dense = self._dense_cls.__new__(self._dense_cls)
        dense.__dict__.update(self.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):
            dense.__dict__[registry] = dict(self.__dict__[registry])
        for name in self._elastic_attrs:
            dense.__dict__.pop(name, None)
        active = self.active_tensors()
        # Tensors that do not shrink (a batch norm's ``num_batches_tracked``) are copied as well.
        whole = {n: t for n, t in [*self._parameters.items(), *self._buffers.items()] if t is not None}
        for name, value in {**whole, **active}.items():
            data = value.detach().clone().contiguous()
            # The registries, not getattr: an elastic class may expose a sliced view under the name.
            original = self._parameters.get(name, self._buffers.get(name))
            if isinstance(original, nn.Parameter):
                dense._parameters[name] = nn.Parameter(data, requires_grad=original.requires_grad)
            else:
                dense._buffers[name] = data
        dense.__dict__.update(self._dense_attributes())
        return dense
