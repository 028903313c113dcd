"""lightning_nas: weight-entangled supernets, one-shot NAS and structural compression.

Example:
    >>> import torch
    >>> from lightning_nas import Supernet
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    >>> net = Supernet(model, example_input=torch.randn(1, 4))
    >>> net.extract(net.min_arch())[0]
    Linear(in_features=4, out_features=8, bias=True)
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_nas.export import load_module, save_module
from lightning_nas.importance import compute_importance, reorder_by_importance
from lightning_nas.inputs import call_model
from lightning_nas.metrics import count_flops, count_params, measure_latency
from lightning_nas.proxies import PROXIES, ProxyObjective, compute_proxy, rank_archs, warmup
from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, TabNASSampler
from lightning_nas.search import SearchResult, SubnetObjective, TorchmetricsEvaluator, one_shot_search
from lightning_nas.space import Arch, Depth, Dimension, Kernel, SearchSpace, Width
from lightning_nas.strategies import InstaTune, Sandwich, SinglePath, TrainingStrategy, distillation_loss
from lightning_nas.supernet import Supernet

__version__ = "0.1.0"

# Names whose modules import Lightning (seconds of import time) load on first use.
_LAZY = {
    "SupernetCallback": "lightning_nas.callbacks",
    "OneShotSearch": "lightning_nas.callbacks",
    "load_supernet_checkpoint": "lightning_nas.callbacks",
    "search_checkpoint": "lightning_nas.callbacks",
    "compress": "lightning_nas.compress",
    "joint_search": "lightning_nas.hpo",
    "JointObjective": "lightning_nas.hpo",
    "TrialPruning": "lightning_nas.hpo",
    "CostAwarePruner": "lightning_nas.hpo",
}

__all__ = [
    "Arch",
    "ConstrainedSampler",
    "CostAwarePruner",
    "Depth",
    "Dimension",
    "InstaTune",
    "JointObjective",
    "Kernel",
    "OneShotSearch",
    "PROXIES",
    "PredictorSampler",
    "ProxyObjective",
    "Sandwich",
    "SearchResult",
    "SearchSpace",
    "SinglePath",
    "SubnetObjective",
    "Supernet",
    "SupernetCallback",
    "TabNASSampler",
    "TorchmetricsEvaluator",
    "TrainingStrategy",
    "TrialPruning",
    "Width",
    "call_model",
    "compress",
    "compute_importance",
    "compute_proxy",
    "count_flops",
    "count_params",
    "distillation_loss",
    "joint_search",
    "load_module",
    "load_supernet_checkpoint",
    "measure_latency",
    "one_shot_search",
    "rank_archs",
    "reorder_by_importance",
    "save_module",
    "search_checkpoint",
    "warmup",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_nas' has no attribute {name!r}")
