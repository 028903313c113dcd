"""One registry pattern: adapters, training strategies, proxies and elastic module types by key.

A :class:`Registry` is a mutable mapping with decorator registration and a one-line error naming
the known keys on a miss, so every table of the package is extended and read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownKeyError"]

K = TypeVar("K")
V = TypeVar("V")


class UnknownKeyError(KeyError, ValueError):
    """A registry has no entry under the key asked for.

    Both a ``KeyError`` (a mapping miss) and a ``ValueError`` (a bad option value), so callers
    that caught either before the tables became registries keep working.
    """

    def __str__(self) -> str:
        # KeyError's own str() quotes its argument as a repr: a message should read as written.
        return str(self.args[0]) if self.args else ""


def _label(key: Any) -> str:
    return getattr(key, "__name__", None) or str(key)


class Registry(MutableMapping[K, V], Generic[K, V]):
    """A table of named entries: ``registry[key]``, ``registry.register(key)`` as a decorator.

    Entries keep their registration order; registering a key again moves it to the end (the
    newest registration), which is what an ordered lookup such as the adapters' relies on.

    Args:
        kind: What an entry is, for messages (``"proxy"`` gives ``unknown proxy 'x'; known: [...]``).
        entries: Initial entries.
        normalize: Maps a key before every lookup and registration (e.g. ``str.lower``); a key it
            cannot map is a miss.

    Example:
        >>> units = Registry("unit", {"m": 1.0})
        >>> @units.register("km")
        ... def kilometre() -> float:
        ...     return 1000.0
        >>> units["km"](), list(units)
        (1000.0, ['m', 'km'])
        >>> units["mile"]
        Traceback (most recent call last):
          ...
        lightning_nas.registry.UnknownKeyError: unknown unit 'mile'; known: ['km', 'm']
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[K, V] | Iterable[tuple[K, V]] = (),
        *,
        normalize: Callable[[K], K] | None = None,
    ) -> None:
        self.kind = kind
        self._normalize = normalize
        self._entries: dict[K, V] = {}
        for key, value in dict(entries).items():
            self[key] = value

    def _key(self, key: K) -> K:
        if self._normalize is None:
            return key
        try:
            return self._normalize(key)
        except (TypeError, AttributeError, ValueError):
            raise self.miss(key) from None

    def miss(self, key: Any) -> UnknownKeyError:
        """The error for a key that is not registered (to raise from a lookup of one's own)."""
        known = sorted(_label(k) for k in self._entries)
        return UnknownKeyError(f"unknown {self.kind} {key!r}; known: {known}")

    def register(self, key: K) -> Callable[[V], V]:
        """Decorator registering the decorated object under ``key`` (and returning it unchanged)."""

        def add(value: V) -> V:
            self[key] = value
            return value

        return add

    def __getitem__(self, key: K) -> V:
        try:
            return self._entries[self._key(key)]
        except (KeyError, TypeError):  # TypeError: an unhashable key
            raise self.miss(key) from None

    def __setitem__(self, key: K, value: V) -> None:
        key = self._key(key)
        self._entries.pop(key, None)
        self._entries[key] = value

    def __delitem__(self, key: K) -> None:
        try:
            del self._entries[self._key(key)]
        except KeyError:
            raise self.miss(key) from None

    def __contains__(self, key: object) -> bool:
        try:
            return self._key(key) in self._entries  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {[_label(k) for k in self._entries]})"
