"""The adapter interface and the registry that picks an adapter for a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import nn

from lightning_nas.adapters._plan import ElasticPlan
from lightning_nas.registry import Registry

__all__ = ["ADAPTERS", "Adapter", "find_adapter", "register_adapter", "registered_adapters"]


class Adapter(ABC):
    """Knows how to find the elastic dimensions of a family of models.

    An adapter is the only place with family-specific knowledge. :meth:`plan` returns the
    dimensions and how every module axis follows them; :meth:`finalize` fixes up an extracted
    dense model (for example a Hugging Face config).
    """

    #: Short name used in messages and ``Supernet(adapter=...)``.
    name: str = ""

    #: Tried only after every other adapter declined the model (the generic tracer).
    fallback: bool = False

    #: Whether :meth:`plan` runs the model, so that the supernet needs an example input.
    needs_example_input: bool = True

    @abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter handles ``model``."""

    @abstractmethod
    def plan(self, model: nn.Module, run: Callable[[nn.Module], Any], **options: Any) -> ElasticPlan:
        """Find the elastic dimensions of ``model``; ``run(model)`` calls its forward once.

        ``run`` is ``None`` for an adapter without :attr:`needs_example_input` built without one.
        """

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


#: Every adapter by name, in registration order; :func:`find_adapter` tries the newest first.
ADAPTERS: Registry[str, Adapter] = Registry("adapter")


def register_adapter(adapter: Adapter) -> Adapter:
    """Register an adapter under its name; later registrations are tried first, fallbacks last.

    Returns the adapter. Registering an adapter under a name already taken replaces it.
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"register_adapter takes an Adapter instance, got {adapter!r}")
    ADAPTERS[adapter.name] = adapter
    return adapter


def registered_adapters() -> list[Adapter]:
    """The registered adapters in the order :func:`find_adapter` tries them."""
    newest_first = list(ADAPTERS.values())[::-1]
    return [a for a in newest_first if not a.fallback] + [a for a in newest_first if a.fallback]


def find_adapter(model: nn.Module, name: str | None = None) -> Adapter:
    """The adapter for ``model``: the one called ``name`` if given, else the first that matches.

    Family adapters are tried newest first; a fallback adapter (the generic tracer) only when
    none of them matches and none refuses the model.

    Raises:
        ValueError: ``name`` is unknown, or no family adapter matches a model that one of them
            recognises as its domain (e.g. a transformers model of an unsupported layout), which
            the generic adapter would otherwise trace into sub-networks no family export can write.

    Example:
        >>> import torch
        >>> find_adapter(torch.nn.Linear(2, 2)).name, find_adapter(torch.nn.Linear(2, 2), "explicit").name
        ('generic', 'explicit')
    """
    if name is not None:
        return ADAPTERS[name]
    ordered = registered_adapters()
    specific = [a for a in ordered if not a.fallback]
    for adapter in specific:
        if adapter.matches(model):
            return adapter
    for adapter in specific:
        reason = adapter.unsupported(model)
        if reason is not None:
            raise ValueError(reason)
    for adapter in ordered:
        if adapter.fallback and adapter.matches(model):
            return adapter
    raise ValueError(f"no adapter handles {type(model).__name__}; registered: {[a.name for a in ordered]}")
