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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy table below provides, for type checkers and IDEs
    from lightning_nas.callbacks import CostAwarePruner, OneShotSearch, SupernetCallback, TrialPruning
    from lightning_nas.compress import compress
    from lightning_nas.export import export_subnet, load_module, load_subnet, save_module
    from lightning_nas.hpo import JointObjective, joint_search
    from lightning_nas.importance import compute_importance, reorder_by_importance
    from lightning_nas.inputs import call_model
    from lightning_nas.metrics import count_flops, count_params, measure_latency
    from lightning_nas.proxies import PROXIES, ProxyObjective, compute_proxy, rank_archs, warmup
    from lightning_nas.recovery import Distiller, recover
    from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, TabNASSampler
    from lightning_nas.search import SearchResult, SubnetObjective, TorchmetricsEvaluator, one_shot_search
    from lightning_nas.space import Arch, Depth, Dimension, Kernel, SearchSpace, Width
    from lightning_nas.strategies import (
        Attentive,
        InstaTune,
        Sandwich,
        SinglePath,
        TrainingStrategy,
        distillation_loss,
    )
    from lightning_nas.supernet import Supernet, at_arch

__version__ = "0.1.0"

# Every name loads on first use: ``import lightning_nas`` (and the ``lightning-nas`` command's
# ``--help``) stays instant instead of importing torch and Lightning (seconds).
_LAZY = {
    "export_subnet": "lightning_nas.export",
    "load_module": "lightning_nas.export",
    "load_subnet": "lightning_nas.export",
    "save_module": "lightning_nas.export",
    "compute_importance": "lightning_nas.importance",
    "reorder_by_importance": "lightning_nas.importance",
    "call_model": "lightning_nas.inputs",
    "count_flops": "lightning_nas.metrics",
    "count_params": "lightning_nas.metrics",
    "measure_latency": "lightning_nas.metrics",
    "PROXIES": "lightning_nas.proxies",
    "ProxyObjective": "lightning_nas.proxies",
    "compute_proxy": "lightning_nas.proxies",
    "rank_archs": "lightning_nas.proxies",
    "warmup": "lightning_nas.proxies",
    "ConstrainedSampler": "lightning_nas.samplers",
    "PredictorSampler": "lightning_nas.samplers",
    "TabNASSampler": "lightning_nas.samplers",
    "SearchResult": "lightning_nas.search",
    "SubnetObjective": "lightning_nas.search",
    "TorchmetricsEvaluator": "lightning_nas.search",
    "one_shot_search": "lightning_nas.search",
    "Arch": "lightning_nas.space",
    "Depth": "lightning_nas.space",
    "Dimension": "lightning_nas.space",
    "Kernel": "lightning_nas.space",
    "SearchSpace": "lightning_nas.space",
    "Width": "lightning_nas.space",
    "Attentive": "lightning_nas.strategies",
    "InstaTune": "lightning_nas.strategies",
    "Sandwich": "lightning_nas.strategies",
    "SinglePath": "lightning_nas.strategies",
    "TrainingStrategy": "lightning_nas.strategies",
    "distillation_loss": "lightning_nas.strategies",
    "Supernet": "lightning_nas.supernet",
    "at_arch": "lightning_nas.supernet",
    "SupernetCallback": "lightning_nas.callbacks",
    "OneShotSearch": "lightning_nas.callbacks",
    "load_supernet_checkpoint": "lightning_nas.callbacks",
    "search_checkpoint": "lightning_nas.callbacks",
    "compress": "lightning_nas.compress",
    "Distiller": "lightning_nas.recovery",
    "recover": "lightning_nas.recovery",
    "joint_search": "lightning_nas.hpo",
    "JointObjective": "lightning_nas.hpo",
    "TrialPruning": "lightning_nas.callbacks",
    "CostAwarePruner": "lightning_nas.callbacks",
}

__all__ = [
    "Arch",
    "Attentive",
    "ConstrainedSampler",
    "CostAwarePruner",
    "Depth",
    "Dimension",
    "Distiller",
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
    "at_arch",
    "call_model",
    "compress",
    "compute_importance",
    "compute_proxy",
    "count_flops",
    "count_params",
    "distillation_loss",
    "export_subnet",
    "joint_search",
    "load_module",
    "load_subnet",
    "load_supernet_checkpoint",
    "measure_latency",
    "one_shot_search",
    "rank_archs",
    "recover",
    "reorder_by_importance",
    "save_module",
    "search_checkpoint",
    "warmup",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lightning_nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
