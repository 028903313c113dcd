"""Writers of extracted sub-networks, each verified by reloading and comparing outputs."""

from __future__ import annotations

import importlib.util

from lightning_nas.export.module import ExportError, export_subnet, load_module, save_module, verify_outputs

__all__ = ["ExportError", "export_subnet", "load_module", "save_module", "verify_outputs"]

# The Hugging Face writer needs transformers; the core works without it.
if importlib.util.find_spec("transformers") is not None:
    from lightning_nas.export.hf import auto_class_for, export_hf, load_hf, save_hf, verify_hf

    __all__ += ["auto_class_for", "export_hf", "load_hf", "save_hf", "verify_hf"]

# The timm writer needs timm.
if importlib.util.find_spec("timm") is not None:
    from lightning_nas.export.timm import load_timm, save_timm, timm_recipe

    __all__ += ["load_timm", "save_timm", "timm_recipe"]
