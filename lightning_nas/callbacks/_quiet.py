"""Quiet Lightning for the many short-lived Trainers of a search."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_lightning"]


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence the banners a Trainer prints when it starts (one per evaluated sub-network or trial)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
