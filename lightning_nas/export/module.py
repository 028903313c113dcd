"""Plain PyTorch export: safetensors weights, a ``torch.export`` program and ``arch.json``; no pickle by default.

An export directory holds:

- ``model.safetensors``: the extracted model's state dict. :func:`load_subnet` loads it into your
  own model class (``supernet.extract(arch)``, then ``load_state_dict(strict=True)``).
- ``model.pt2``: a ``torch.export`` program with a dynamic batch dimension that runs with plain
  torch and none of your code; :func:`load_module` loads it. Missing (with the reason in
  ``arch.json``) when the model cannot be exported or the program fails on a verification input.
- ``arch.json``: the architecture, parameter count, format, and the size and SHA-256 of every file.
- ``model.pt``: the pickled module, only with ``pickle=True``.

Every file is written into a hidden sibling directory, reloaded, and compared with the
sub-network inside the supernet on the example input, the given real batches and random inputs;
only then is the directory moved into place, replacing an earlier export in one step.

Example:
    >>> import tempfile, torch
    >>> from lightning_nas import Supernet
    >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)),
    ...                example_input=torch.randn(1, 4))
    >>> path = export_subnet(net, tempfile.mkdtemp() + "/small", {"0": 8})
    >>> sorted(p.name for p in path.iterdir())
    ['arch.json', 'model.pt2', 'model.safetensors']
    >>> load_subnet(path, net)[0]  # your own classes, weights from safetensors
    Linear(in_features=4, out_features=8, bias=True)
    >>> load_module(path)(torch.randn(3, 4)).shape  # the torch.export program
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from lightning_nas.export._files import (
    MANIFEST,
    ExportError,
    atomic_directory,
    check_file,
    check_target,
    read_manifest,
    write_manifest,
)
from lightning_nas.export._program import export_program, load_program
from lightning_nas.export._verify import (
    Mismatch,
    Probe,
    check_outputs,
    probes_for,
    random_like,
    reference_outputs,
    verify_outputs,
)
from lightning_nas.inputs import call_model, eval_mode
from lightning_nas.supernet import Supernet

__all__ = ["ExportError", "export_subnet", "load_module", "load_subnet", "save_module", "verify_outputs"]

WEIGHTS_FILE = "model.safetensors"
PROGRAM_FILE = "model.pt2"
MODULE_FILE = "model.pt"
ARCH_FILE = MANIFEST
FORMAT = "lightning_nas.module"


def export_subnet(
    supernet: Supernet,
    directory: str | os.PathLike[str],
    arch: Mapping[str, int] | None = None,
    *,
    inputs: Iterable[Any] = (),
    forward: Callable[[nn.Module, Any], Any] = call_model,
    program: bool = True,
    pickle: bool = False,
    random_inputs: int = 2,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> Path:
    """Extract ``arch`` from ``supernet`` and write it as a verified export directory (see the module docs).

    Verification reloads the written files (the weights into a fresh ``supernet.extract(arch)``,
    the program with ``torch.export.load``) and compares them with the sub-network inside the
    supernet, in eval mode, on the supernet's ``example_input``, on every batch of ``inputs`` and on
    ``random_inputs`` copies of the example input with its floating-point tensors replaced by
    standard normal noise. Every output element must satisfy
    ``|reloaded - supernet| <= atol + rtol * |supernet|`` (defaults 1e-5 and 1e-4: the dense copy
    computes the same sums as the sliced weights, up to float rounding).

    Args:
        supernet: The supernet (with an ``example_input``).
        directory: The export directory. An earlier export there is replaced once the new one
            verified; any other non-empty directory is refused.
        arch: The sub-network (default: the active one).
        inputs: Real batches for the check, as data loaders yield them (e.g. a few validation batches).
        forward: ``forward(model, batch)`` runs a model on one of ``inputs``.
        program: Also write the ``torch.export`` program ``model.pt2``.
        pickle: Also write ``model.pt``, the module pickled with ``torch.save``. Loading a pickle
            runs arbitrary code from the file and needs your model's classes importable: only
            load pickles you wrote yourself (:func:`load_module` with ``pickle=True``).
        random_inputs: Number of random inputs in the check.
        atol: Absolute tolerance of the check.
        rtol: Relative tolerance of the check.
        seed: Seed of the random inputs.

    Returns:
        The export directory (absolute).

    Raises:
        ValueError: The directory cannot take an export, or there is nothing to verify with;
            raised before any work.
        ExportError: The reloaded files do not reproduce the sub-network; nothing was moved into place.
    """
    with supernet.use(supernet.arch if arch is None else arch):  # also the dimensions ``arch`` leaves at full size
        arch = supernet.arch
    target = check_target(directory)
    if supernet.example_input is None:
        raise ValueError("export_subnet needs a supernet with an `example_input` (to trace and verify the export)")
    generator = torch.Generator().manual_seed(seed)
    randoms = [random_like(supernet.example_input, generator) for _ in range(random_inputs)]
    probes = probes_for(supernet.example_input, list(inputs), forward, randoms)
    expected = reference_outputs(supernet, arch, probes)
    model = supernet.extract(arch).eval()
    return _write(
        model,
        target,
        supernet.example_input,
        probes,
        expected,
        reload=lambda path: load_subnet(path, supernet),
        arch=arch,
        program=program,
        pickle=pickle,
        atol=atol,
        rtol=rtol,
    )


def save_module(
    model: nn.Module,
    directory: str | os.PathLike[str],
    example_input: Any,
    arch: Mapping[str, int] | None = None,
    program: bool = True,
    atol: float = 1e-5,
    *,
    rtol: float = 1e-4,
    pickle: bool = False,
    inputs: Iterable[Any] = (),
    forward: Callable[[nn.Module, Any], Any] = call_model,
) -> Path:
    """Write any ``model`` like :func:`export_subnet` does, verified against ``model`` itself.

    The weights reload with ``load_subnet(directory, model_of_the_same_shape)``. ``pickle=True``
    adds ``model.pt``, with the same warning as in :func:`export_subnet`.

    Example:
        >>> import tempfile
        >>> path = save_module(torch.nn.Linear(3, 2), tempfile.mkdtemp(), torch.zeros(1, 3))
        >>> sorted(p.name for p in path.iterdir())
        ['arch.json', 'model.pt2', 'model.safetensors']
    """
    target = check_target(directory)
    if example_input is None:
        raise ValueError("save_module needs an `example_input` (to trace and verify the export)")
    model = model.eval()
    probes = probes_for(example_input, list(inputs), forward)
    with eval_mode(model), torch.no_grad():
        expected = [probe.call(model) for probe in probes]
    trainer = getattr(model, "_trainer", None)
    return _write(
        model,
        target,
        example_input,
        probes,
        expected,
        reload=lambda path: load_subnet(path, copy.deepcopy(model, {id(trainer): None})),
        arch=arch,
        program=program,
        pickle=pickle,
        atol=atol,
        rtol=rtol,
    )


def _write(
    model: nn.Module,
    target: Path,
    example_input: Any,
    probes: Sequence[Probe],
    expected: Sequence[Any],
    *,
    reload: Callable[[Path], nn.Module],
    arch: Mapping[str, int] | None,
    program: bool,
    pickle: bool,
    atol: float,
    rtol: float,
) -> Path:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "arch": dict(arch or {}),
        "params": sum(p.numel() for p in model.parameters()),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "weights": WEIGHTS_FILE,
        "program": None,
        "pickle": None,
    }
    tolerance = {"atol": atol, "rtol": rtol}
    diffs: dict[str, float] = {}
    # Each file is checked through the public loader, so the check covers what a user's load runs,
    # manifest checksums included; the manifest is rewritten as files are added.
    with atomic_directory(target) as tmp:
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE))
        write_manifest(tmp, meta)
        diffs[WEIGHTS_FILE] = check_outputs(reload(tmp), probes, expected, what="weights", **tolerance)
        if program:
            try:
                torch.export.save(export_program(model, example_input), tmp / PROGRAM_FILE)
                write_manifest(tmp, {**meta, "program": PROGRAM_FILE})
                diffs[PROGRAM_FILE] = check_outputs(load_module(tmp), probes, expected, what="program", **tolerance)
                meta["program"] = PROGRAM_FILE
            except Mismatch:
                raise  # wrong numbers are never dropped quietly
            except ExportError as err:  # the program does not load, or does not run on a verification input
                meta["program_error"] = str(err)
            except Exception as err:  # noqa: BLE001 - a model torch.export cannot handle still exports its weights
                meta["program_error"] = f"torch.export failed: {type(err).__name__}: {err}".split("\n")[0][:500]
            if meta["program"] is None:
                (tmp / PROGRAM_FILE).unlink(missing_ok=True)
        if pickle:
            torch.save(model, tmp / MODULE_FILE)
            meta["pickle"] = MODULE_FILE
            write_manifest(tmp, meta)
            diffs[MODULE_FILE] = check_outputs(
                load_module(tmp, pickle=True), probes, expected, what="pickle", **tolerance
            )
        meta["verification"] = {**tolerance, "inputs": [probe.name for probe in probes], "max_abs_diff": diffs}
        write_manifest(tmp, meta)
    return target


def _manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    manifest = read_manifest(directory)
    if manifest.get("format") != FORMAT:
        other = manifest.get("format", "unknown")
        hint = " (load it with lightning_nas.export.load_hf)" if other == "lightning_nas.hf" else ""
        raise ExportError(f"{directory} holds an export of format {other!r}, not a plain torch export{hint}")
    return manifest


def load_subnet(directory: str | os.PathLike[str], model: Supernet | nn.Module) -> nn.Module:
    """Load an export's safetensors weights into your own model class, in eval mode; no pickle involved.

    Args:
        directory: A directory written by :func:`export_subnet` or :func:`save_module`.
        model: The supernet it was exported from (or one built the same way): the sub-network of
            the recorded architecture is extracted and receives the weights. Or a model of the
            exported shape, which is loaded in place.

    Returns:
        The model with the exported weights (``strict=True``: every tensor must match).

    Raises:
        ExportError: A file is missing, truncated or damaged, or the weights do not fit ``model``.
    """
    manifest = _manifest(directory)
    path = check_file(directory, WEIGHTS_FILE, manifest)
    if isinstance(model, Supernet):
        try:
            model = model.extract(manifest["arch"])
        except ValueError as err:
            raise ExportError(f"{directory} was exported from another supernet: {err}") from None
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    try:
        safetensors.torch.load_model(model, str(path), strict=True, device=str(device))
    except SafetensorError as err:
        raise ExportError(f"{path} is not a readable safetensors file: {err}") from None
    except RuntimeError as err:
        reason = str(err).strip().splitlines()
        raise ExportError(
            f"the weights in {path} do not fit {type(model).__name__}: {' '.join(reason[:2])}"[:500]
        ) from None
    return model.eval()


def load_module(directory: str | os.PathLike[str], *, pickle: bool = False) -> nn.Module:
    """The exported model as a module that runs without your model code: the ``torch.export`` program.

    The program is loaded with ``torch.export.load`` after its archive was checked against the
    checksum in ``arch.json`` and screened: an archive holding any pickled payload is refused.
    Like any program, load ``model.pt2`` files from sources you trust; for files of unknown origin,
    :func:`load_subnet` reads only safetensors. The program runs on the device it was exported on.

    Args:
        directory: A directory written by :func:`export_subnet` or :func:`save_module`.
        pickle: Load the pickled ``model.pt`` instead (only exists with ``pickle=True`` at export).
            Unpickling runs arbitrary code from the file: only for files you wrote yourself.

    Raises:
        ExportError: The export has no program (the reason is in the message), or a file is
            missing, truncated or damaged.
    """
    manifest = _manifest(directory)
    if pickle:
        if manifest.get("pickle") is None:
            raise ExportError(f"{directory} has no pickled module; export with pickle=True to get one")
        return torch.load(check_file(directory, MODULE_FILE, manifest), weights_only=False).eval()
    if manifest.get("program") is None:
        reason = manifest.get("program_error", "not requested at export")
        raise ExportError(
            f"{directory} has no torch.export program ({reason}); "
            "load the weights into your model class with load_subnet(directory, supernet)"
        )
    return load_program(check_file(directory, PROGRAM_FILE, manifest))
