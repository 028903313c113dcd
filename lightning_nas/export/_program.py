"""``torch.export`` programs: export with a dynamic batch, and load only archives free of pickles.

``torch.export.load`` unpickles whatever an archive marks as pickled (weights, constants, custom
objects) and falls back to ``torch.load(weights_only=False)`` for sample inputs it cannot load
safely, so a crafted ``model.pt2`` could run code on load. :func:`load_program` first screens the
archive and refuses any such payload. This is the one place that knows the archive layout of
``torch.export.save``; ``tests/test_export.py`` pins it with a crafted archive.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_nas.export._files import ExportError

__all__ = ["export_program", "load_program"]

_PICKLED_CONSTANTS = ("custom_obj_", "opaque_obj_")
_PLAIN_TENSORS = ("weight_", "tensor_")


def export_program(model: nn.Module, example_input: Any) -> torch.export.ExportedProgram:
    """Export with a dynamic batch dimension (traced at batch 2: size 1 would be specialised)."""

    def batch_of_two(t: Any) -> Any:
        return (
            t.expand(2, *t.shape[1:]).contiguous() if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == 1 else t
        )

    def dynamic(t: Any) -> Any:
        return {0: torch.export.Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() else None

    if isinstance(example_input, Mapping):
        args, kwargs = (), {k: batch_of_two(v) for k, v in example_input.items()}
    else:
        args = tuple(batch_of_two(a) for a in (example_input if isinstance(example_input, tuple) else (example_input,)))
        kwargs = {}
    shapes: Any = {k: dynamic(v) for k, v in kwargs.items()} if kwargs else tuple(dynamic(a) for a in args)
    return torch.export.export(model, args, kwargs, dynamic_shapes=shapes)


def load_program(path: Path) -> nn.Module:
    """The module of the program saved at ``path``, after refusing any archive that holds a pickle."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"{path} is not a torch.export archive: {err}") from None
    with archive:
        _screen(path, archive)
    try:
        return torch.export.load(path).module()
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged archive
        raise ExportError(f"{path} cannot be loaded by torch.export: {type(err).__name__}: {err}") from None


def _screen(path: Path, archive: zipfile.ZipFile) -> None:
    def refuse(what: str) -> ExportError:
        return ExportError(f"{path} holds {what}, which loading would unpickle; refusing to load it")

    for info in archive.infolist():
        name = info.filename
        parts = name.split("/")
        if "aotinductor" in parts:
            raise refuse(f"compiled code ({name})")
        if len(parts) >= 3 and parts[-3:-1] in (["data", "weights"], ["data", "constants"]):
            if name.endswith(".pt"):
                raise refuse(f"a legacy pickled payload ({name})")
            if parts[-1].startswith(_PICKLED_CONSTANTS):
                raise refuse(f"a custom object ({name})")
            if name.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name))["config"]
                except (ValueError, KeyError, TypeError):
                    raise ExportError(f"{path}: {name} is damaged") from None
                pickled = [
                    fqn
                    for fqn, meta in config.items()
                    if not isinstance(meta, dict)
                    or meta.get("use_pickle") is not False
                    or not str(meta.get("path_name")).startswith(_PLAIN_TENSORS)
                ]
                if pickled:
                    raise refuse(f"pickled payloads ({', '.join(pickled[:3])})")
        if len(parts) >= 2 and parts[-2] == "sample_inputs":
            try:  # torch.export.load retries these with weights_only=False when this fails
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:  # noqa: BLE001 - anything the safe unpickler refuses is refused here
                raise refuse(f"sample inputs that are not plain tensors ({name})") from None
