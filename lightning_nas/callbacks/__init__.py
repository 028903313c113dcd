"""Lightning callbacks: supernet training and one-shot search."""

from __future__ import annotations

from lightning_nas.callbacks._checkpoint import load_supernet_checkpoint, search_checkpoint
from lightning_nas.callbacks._search import LoggedMetricEvaluator, OneShotSearch
from lightning_nas.callbacks._supernet import SupernetCallback, find_supernet_callback

__all__ = [
    "LoggedMetricEvaluator",
    "OneShotSearch",
    "SupernetCallback",
    "find_supernet_callback",
    "load_supernet_checkpoint",
    "search_checkpoint",
]
