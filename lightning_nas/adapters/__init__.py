"""Adapters find the elastic dimensions of a model; family adapters add what a graph cannot know."""

from __future__ import annotations

import importlib.util

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

# The Hugging Face adapters register themselves (and the config classes of compressed exports)
# only where transformers is installed; the core needs none of it.
if importlib.util.find_spec("transformers") is not None:
    from lightning_nas.adapters.hf_decoder import HFDecoderAdapter
    from lightning_nas.adapters.hf_encoder import HFEncoderAdapter

    __all__ += ["HFDecoderAdapter", "HFEncoderAdapter"]

# Likewise the timm adapter, only where timm is installed.
if importlib.util.find_spec("timm") is not None:
    from lightning_nas.adapters.timm import TimmAdapter

    register_adapter(TimmAdapter())
    __all__ += ["TimmAdapter"]
