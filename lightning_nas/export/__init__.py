"""Writers of extracted sub-networks, each verified against the supernet and moved into place atomically.

Plain torch (:func:`export_subnet`): ``model.safetensors`` + a ``torch.export`` program
``model.pt2`` + ``arch.json``, reloaded with :func:`load_subnet` (your own classes) or
:func:`load_module` (the program); pickles only on request. Hugging Face (:func:`export_hf`): a
``save_pretrained`` directory that ``AutoModelFor...from_pretrained`` reloads.
"""

from __future__ import annotations

import importlib.util

from lightning_nas.export._files import ExportError
from lightning_nas.export.module import export_subnet, load_module, load_subnet, save_module, verify_outputs

__all__ = ["ExportError", "export_subnet", "load_module", "load_subnet", "save_module", "verify_outputs"]

# The Hugging Face writer needs transformers; the core works without it.
if importlib.util.find_spec("transformers") is not None:
    from lightning_nas.export.hf import auto_class_for, export_hf, load_hf, save_hf, verify_hf

    __all__ += ["auto_class_for", "export_hf", "load_hf", "save_hf", "verify_hf"]

# The timm writer needs timm.
if importlib.util.find_spec("timm") is not None:
    from lightning_nas.export.timm import load_timm, save_timm, timm_recipe

    __all__ += ["load_timm", "save_timm", "timm_recipe"]
