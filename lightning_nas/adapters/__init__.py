"""Adapters find the elastic dimensions of a model; family adapters add what a graph cannot know."""

from __future__ import annotations

from lightning_nas.adapters._plan import AxisKey, ElasticPlan, Segment
from lightning_nas.adapters.base import Adapter, find_adapter, register_adapter, registered_adapters
from lightning_nas.adapters.generic import GenericAdapter, default_width_choices

__all__ = [
    "Adapter",
    "AxisKey",
    "ElasticPlan",
    "GenericAdapter",
    "Segment",
    "default_width_choices",
    "find_adapter",
    "register_adapter",
    "registered_adapters",
]
