"""What every elastic module shares: active-slice bookkeeping and conversion to and from torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar

from torch import Tensor, nn

__all__ = ["Axis", "ElasticModule", "Index", "elastic_class", "index_size", "take"]

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


class Axis(NamedTuple):
    """One elastic axis of an elastic module class (an entry of :attr:`ElasticModule.elastic_axes`).

    Attributes:
        active: The attribute that holds the axis's active slice (an :data:`Index`).
        size: The plain module's attribute that holds the axis's full length; empty where the
            class computes the length in :meth:`ElasticModule.axis_lengths`.
    """

    active: str
    size: str = ""


class ElasticModule(nn.Module):
    """Mixin for a torch module that computes with a slice of its full weights.

    An elastic module is created from the plain module by :meth:`convert`, which shares the
    parameters, buffers, hooks and attributes of the original (nothing is copied, state-dict keys
    stay the same), and turned back into a plain, physically smaller module by :meth:`to_dense`.
    Subclasses list the attributes that hold their active slice in ``_elastic_attrs``.

    Each class answers for its own axes: :attr:`elastic_axes` maps the axis roles (``"in"``,
    ``"out"``, ``"features"``) to an :class:`Axis`, the attribute holding the active slice and
    where the full length is read; :meth:`axis_lengths` reads those lengths off a plain module.
    Supernet, importance reordering and the adapters ask the class; nothing else keeps a table
    of axes.

    Example:
        >>> import torch
        >>> from lightning_nas.elastic import ElasticLinear
        >>> ElasticLinear.axis_lengths(torch.nn.Linear(8, 4)), ElasticLinear.active_attr("out")
        ({'in': 8, 'out': 4}, 'active_out')
    """

    _elastic_attrs: tuple[str, ...] = ()
    _dense_cls: type[nn.Module]
    #: Axis role -> the axis: the attribute of its active slice, the one of its full length.
    elastic_axes: ClassVar[Mapping[str, Axis]] = {}
    #: The role meant by an axis written without one (``"conv"`` for ``"conv:out"``), if any.
    default_role: ClassVar[str | None] = None

    @classmethod
    def active_attr(cls, role: str) -> str:
        """The attribute holding the active slice of the axis ``role``."""
        try:
            return cls.elastic_axes[role].active
        except KeyError:
            raise ValueError(
                f"{cls.__name__} has no elastic axis {role!r}; its axes: {list(cls.elastic_axes)}"
            ) from None

    @classmethod
    def axis_lengths(cls, module: nn.Module) -> dict[str, int]:
        """Full length of each elastic axis of the plain ``module``, by role.

        Read from the attributes the axes name; a class whose lengths need computing overrides it.
        """
        return {role: int(getattr(module, axis.size)) for role, axis in cls.elastic_axes.items() if axis.size}

    @classmethod
    def axis_length(cls, module: nn.Module, role: str) -> int:
        """Full length of the axis ``role`` of the plain ``module``."""
        cls.active_attr(role)  # an unknown role is named as such
        lengths = cls.axis_lengths(module)
        if role not in lengths:
            raise ValueError(f"{type(module).__name__} has no elastic {role!r} axis")
        return lengths[role]

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


_CREATED: dict[type[nn.Module], type[ElasticModule]] = {}


def elastic_class(dense_cls: type[nn.Module], mixin: type[ElasticModule], **attrs: Any) -> type[ElasticModule]:
    """The elastic class of ``dense_cls`` made from ``mixin``: ``class Elastic<Dense>(mixin, dense_cls)``.

    For module types known only at plan time (a family's own classes): the class is created on
    first use and reused after, so every supernet of a model converts its modules to the same class.
    It is not registered anywhere; an adapter hands it to the supernet in its plan.

    Example:
        >>> import torch
        >>> from lightning_nas.elastic import ElasticLinear
        >>> class Scaled(torch.nn.Linear):
        ...     pass
        >>> cls = elastic_class(Scaled, ElasticLinear)
        >>> cls.__name__, cls is elastic_class(Scaled, ElasticLinear), issubclass(cls, Scaled)
        ('ElasticScaled', True, True)
    """
    created = _CREATED.get(dense_cls)
    if created is None:
        created = type(
            f"Elastic{dense_cls.__name__}",
            (mixin, dense_cls),
            {"_dense_cls": dense_cls, "__module__": mixin.__module__, "__doc__": mixin.__doc__, **attrs},
        )
        _CREATED[dense_cls] = created
    elif not issubclass(created, mixin):
        raise TypeError(
            f"{dense_cls.__name__} already has the elastic class {created.__name__}, not a {mixin.__name__}"
        )
    return created
