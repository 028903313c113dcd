"""The adapter interface and the registry that picks an adapter for a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import nn

from lightning_nas.adapters._plan import ElasticPlan

__all__ = ["Adapter", "find_adapter", "register_adapter", "registered_adapters"]


class Adapter(ABC):
    """Knows how to find the elastic dimensions of a family of models.

    An adapter is the only place with family-specific knowledge. :meth:`plan` returns the
    dimensions and how every module axis follows them; :meth:`finalize` fixes up an extracted
    dense model (for example a Hugging Face config).
    """

    #: Short name used in messages and ``Supernet(adapter=...)``.
    name: str = ""

    @abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter handles ``model``."""

    @abstractmethod
    def plan(self, model: nn.Module, run: Callable[[nn.Module], Any], **options: Any) -> ElasticPlan:
        """Find the elastic dimensions of ``model``; ``run(model)`` calls its forward once."""

    def unsupported(self, model: nn.Module) -> str | None:
        """Why ``model`` belongs to this adapter's domain yet cannot be handled, else ``None``.

        A reason stops :func:`find_adapter` from falling back to the generic adapter.
        """
        return None

    def finalize(self, dense: nn.Module, arch: dict[str, int], plan: ElasticPlan) -> nn.Module:
        """Adjust a freshly extracted dense model (config fields, tied weights, ...)."""
        return dense

    def reinitialize(self, dense: nn.Module) -> None:
        """Give an extracted model fresh weights, as its modules initialise themselves.

        By default every module with a ``reset_parameters`` method calls it (torch's layers,
        norms with their running statistics); a family adapter adds the family's own scheme.
        """
        for module in dense.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


_REGISTRY: list[Adapter] = []


def register_adapter(adapter: Adapter) -> Adapter:
    """Register a family adapter; later registrations are tried first, the generic one last."""
    _REGISTRY.insert(0, adapter)
    return adapter


def registered_adapters() -> list[Adapter]:
    return list(_REGISTRY)


def find_adapter(model: nn.Module, name: str | None = None) -> Adapter:
    """The adapter for ``model``: the one called ``name`` if given, else the first that matches.

    Raises:
        ValueError: ``name`` is unknown, or no family adapter matches a model that one of them
            recognises as its domain (e.g. a transformers model of an unsupported layout), which
            the generic adapter would otherwise trace into sub-networks no family export can write.
    """
    from lightning_nas.adapters.generic import GenericAdapter

    candidates = [*_REGISTRY, GenericAdapter()]
    if name is not None:
        for adapter in candidates:
            if adapter.name == name:
                return adapter
        raise ValueError(f"no adapter named {name!r}; available: {[a.name for a in candidates]}")
    for adapter in _REGISTRY:
        if adapter.matches(model):
            return adapter
    for adapter in _REGISTRY:
        reason = adapter.unsupported(model)
        if reason is not None:
            raise ValueError(reason)
    return candidates[-1]
