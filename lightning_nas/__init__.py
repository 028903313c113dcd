"""lightning_nas: weight-entangled supernets, one-shot NAS and structural compression."""

from __future__ import annotations

from lightning_nas.space import Arch, Depth, Dimension, Kernel, SearchSpace, Width
from lightning_nas.supernet import Supernet, call_model

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "Depth",
    "Dimension",
    "Kernel",
    "SearchSpace",
    "Supernet",
    "Width",
    "call_model",
]
