"""Lightning callbacks: supernet training, one-shot search, and pruning of trials that train."""

from __future__ import annotations

from lightning_nas.callbacks._checkpoint import load_supernet_checkpoint, search_checkpoint
from lightning_nas.callbacks._pruning import INTERMEDIATE_VALUES, CostAwarePruner, TrialPruning
from lightning_nas.callbacks._search import LoggedMetricEvaluator, OneShotSearch
from lightning_nas.callbacks._supernet import SupernetCallback, find_supernet_callback

__all__ = [
    "INTERMEDIATE_VALUES",
    "CostAwarePruner",
    "LoggedMetricEvaluator",
    "OneShotSearch",
    "SupernetCallback",
    "TrialPruning",
    "find_supernet_callback",
    "load_supernet_checkpoint",
    "search_checkpoint",
]
