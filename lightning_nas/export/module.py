"""Plain PyTorch export: a pickled module plus a ``torch.export`` program, verified on reload."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from lightning_nas.inputs import call_with_example

__all__ = ["ExportError", "export_subnet", "load_module", "save_module", "verify_outputs"]

MODULE_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
ARCH_FILE = "arch.json"


class ExportError(RuntimeError):
    """An exported model does not reproduce the outputs it was exported with."""


def verify_outputs(expected: Any, actual: Any, atol: float = 1e-5, what: str = "model") -> float:
    """Largest absolute difference between two model outputs; raises :class:`ExportError` above ``atol``."""
    left = [t for t in tree_leaves(expected) if isinstance(t, torch.Tensor)]
    right = [t for t in tree_leaves(actual) if isinstance(t, torch.Tensor)]
    if len(left) != len(right) or any(a.shape != b.shape for a, b in zip(left, right)):
        raise ExportError(f"the reloaded {what} returns outputs of other shapes")
    worst = max((float((a.float() - b.float()).abs().max()) for a, b in zip(left, right)), default=0.0)
    if worst > atol:
        raise ExportError(f"the reloaded {what} differs from the original by {worst:.3g} (> {atol})")
    return worst


def save_module(
    model: nn.Module,
    directory: str | Path,
    example_input: Any,
    arch: Mapping[str, int] | None = None,
    program: bool = True,
    atol: float = 1e-5,
) -> Path:
    """Write ``model`` to ``directory`` and check that both reloads reproduce its outputs.

    Files: ``model.pt`` (the module pickled with ``torch.save``; loading needs the model's
    classes importable), ``model.pt2`` (a ``torch.export`` program that runs with plain torch and
    no model code; skipped with ``program=False`` or when the model cannot be exported), and
    ``arch.json`` (the architecture and the export's metadata).

    Example:
        >>> import tempfile
        >>> path = save_module(torch.nn.Linear(3, 2), tempfile.mkdtemp(), torch.zeros(1, 3))
        >>> sorted(p.name for p in path.iterdir())
        ['arch.json', 'model.pt', 'model.pt2']
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad():
        expected = call_with_example(model, example_input)
    torch.save(model, directory / MODULE_FILE)
    with torch.no_grad():
        verify_outputs(expected, call_with_example(load_module(directory), example_input), atol, "module")
    meta: dict[str, Any] = {"arch": dict(arch or {}), "params": sum(p.numel() for p in model.parameters())}
    if program:
        try:
            torch.export.save(_export_program(model, example_input), directory / PROGRAM_FILE)
        except Exception as err:  # noqa: BLE001 - the pickled module remains the export
            meta["program_error"] = f"{type(err).__name__}: {err}"[:500]
        else:
            reloaded = torch.export.load(directory / PROGRAM_FILE).module()
            with torch.no_grad():
                verify_outputs(expected, call_with_example(reloaded, example_input), atol, "exported program")
    (directory / ARCH_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def export_subnet(supernet: Any, directory: str | Path, arch: Mapping[str, int]) -> Path:
    """Extract ``arch`` from a :class:`~lightning_nas.Supernet` and :func:`save_module` it.

    The reloaded files are checked against the extracted model, which itself equals the
    sub-network inside the supernet.
    """
    model = supernet.extract(arch)
    return save_module(model, directory, supernet.example_input, arch=arch)


def _export_program(model: nn.Module, example_input: Any) -> torch.export.ExportedProgram:
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


def load_module(directory: str | Path, program: bool = False) -> nn.Module:
    """Load what :func:`save_module` wrote: the pickled module, or the ``torch.export`` program."""
    directory = Path(directory)
    if program:
        return torch.export.load(directory / PROGRAM_FILE).module()
    return torch.load(directory / MODULE_FILE, weights_only=False).eval()
