"""Adapters find the elastic dimensions of a model; family adapters add what a graph cannot know."""

from __future__ import annotations

import importlib.util

from lightning_nas.adapters._plan import AxisKey, ElasticPlan, Segment
from lightning_nas.adapters.base import ADAPTERS, Adapter, find_adapter, register_adapter, registered_adapters
from lightning_nas.adapters.explicit import ExplicitDimensionsAdapter
from lightning_nas.adapters.generic import GenericAdapter, default_width_choices

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AxisKey",
    "ElasticPlan",
    "ExplicitDimensionsAdapter",
    "GenericAdapter",
    "Segment",
    "default_width_choices",
    "find_adapter",
    "register_adapter",
    "registered_adapters",
]

# Every adapter is registered here, the core ones first: the fallback and the explicit one.
register_adapter(GenericAdapter())
register_adapter(ExplicitDimensionsAdapter())

# The Hugging Face adapters (whose modules also register the config classes of compressed
# exports) only where transformers is installed; the core needs none of it.
if importlib.util.find_spec("transformers") is not None:
    from lightning_nas.adapters.hf_decoder import HFDecoderAdapter
    from lightning_nas.adapters.hf_encoder import HFEncoderAdapter

    register_adapter(HFDecoderAdapter())
    register_adapter(HFEncoderAdapter())
    __all__ += ["HFDecoderAdapter", "HFEncoderAdapter"]

# Likewise the timm adapter, only where timm is installed.
if importlib.util.find_spec("timm") is not None:
    from lightning_nas.adapters.timm import TimmAdapter

    register_adapter(TimmAdapter())
    __all__ += ["TimmAdapter"]
