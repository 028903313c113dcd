"""Quiet Lightning for the many short-lived Trainers of a search."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["QUIET_TRAINER", "quiet_lightning"]

#: ``Trainer`` options of the short-lived Trainers that evaluate or train one architecture: no
#: logger, checkpoints, progress bar or model summary of their own.
QUIET_TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


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
