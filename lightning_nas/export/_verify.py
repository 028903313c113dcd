"""How every writer verifies an export: the reloaded files against the supernet's sub-network, on probes.

A probe is one input for the check (the example input, a real batch, or a random input of the
right kind) with a name used in error messages. The reference outputs are computed once, from
the sub-network inside the supernet in eval mode, never from the extracted copy, so a fault in
extraction, writing or reloading shows up as a difference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from lightning_nas.export._files import ExportError
from lightning_nas.inputs import call_model, call_with_example, eval_mode, to_device

__all__ = ["CallFailed", "Mismatch", "Probe", "check_outputs", "probes_for", "reference_outputs", "verify_outputs"]


class Probe(NamedTuple):
    """One input of a verification: ``call(model)`` runs the model on it (moved to the model's device)."""

    name: str
    call: Callable[[nn.Module], Any]


class CallFailed(ExportError):
    """A reloaded model raised on a probe (as opposed to returning different numbers)."""


class Mismatch(ExportError):
    """A reloaded model returned outputs that differ from the reference beyond the tolerance."""


def verify_outputs(expected: Any, actual: Any, atol: float = 1e-5, what: str = "model", *, rtol: float = 0.0) -> float:
    """Largest absolute difference between two model outputs; raises :class:`ExportError` beyond the tolerance.

    (The error is the subclass ``Mismatch``, so callers can tell wrong numbers from failures to run.)

    Every output tensor must have the same shape, and every element must satisfy
    ``|actual - expected| <= atol + rtol * |expected|`` (NaN where both are NaN counts as equal).

    Example:
        >>> verify_outputs(torch.ones(2), torch.ones(2) + 1e-7)
        1.1920928955078125e-07
        >>> verify_outputs(torch.ones(2), torch.zeros(2), what="program")
        Traceback (most recent call last):
        ...
        lightning_nas.export._verify.Mismatch: the reloaded program differs from the original by 1 (atol 1e-05, rtol 0)
    """
    left = [t for t in tree_leaves(expected) if isinstance(t, Tensor)]
    right = [t for t in tree_leaves(actual) if isinstance(t, Tensor)]
    if len(left) != len(right) or any(a.shape != b.shape for a, b in zip(left, right)):
        raise Mismatch(f"the reloaded {what} returns outputs of other shapes")
    worst, failed = 0.0, False
    for a, b in zip(left, right):
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        both_nan = a.isnan() & b.isnan()
        diff = torch.where(both_nan, 0.0, (a - b).abs().nan_to_num(nan=float("inf")))
        if diff.numel():
            worst = max(worst, float(diff.max()))
            failed |= bool((diff > atol + rtol * a.abs().nan_to_num(nan=0.0)).any())
    if failed:
        raise Mismatch(f"the reloaded {what} differs from the original by {worst:.3g} (atol {atol:g}, rtol {rtol:g})")
    return worst


def _device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def random_like(example: Any, generator: torch.Generator) -> Any:
    """``example`` with every floating-point tensor replaced by standard normal noise of its shape.

    Integer and boolean tensors (indices, masks) are kept: their valid range is the model's business.
    """

    def fill(t: Any) -> Any:
        if isinstance(t, Tensor) and t.is_floating_point():
            return torch.randn(t.shape, generator=generator).to(dtype=t.dtype, device=t.device)
        return t

    return tree_map(fill, example)


def probes_for(
    example_input: Any,
    inputs: Iterable[Any] = (),
    forward: Callable[[nn.Module, Any], Any] = call_model,
    random_inputs: Sequence[Any] = (),
) -> list[Probe]:
    """The probes of a verification: the example input, the given batches (run with ``forward``), random inputs.

    ``example_input`` and ``random_inputs`` are model inputs (a tensor, a tuple of positional
    arguments or a mapping of keyword arguments); ``inputs`` are batches as data loaders yield
    them, run as ``forward(model, batch)``.
    """
    probes = []
    if example_input is not None:
        probes.append(Probe("the example input", lambda m: call_with_example(m, to_device(example_input, _device(m)))))
    for i, batch in enumerate(inputs):
        probes.append(Probe(f"input {i}", lambda m, b=batch: forward(m, to_device(b, _device(m)))))
    for i, random in enumerate(random_inputs):
        probes.append(Probe(f"random input {i}", lambda m, r=random: call_with_example(m, to_device(r, _device(m)))))
    return probes


@contextmanager
def full_precision() -> Iterator[None]:
    """Plain fp32 matmuls and convolutions (no TF32) inside the block, where the settings allow it.

    Under TF32 a sliced and a dense convolution may round differently by about 1e-3, which would
    hide small faults below the tolerance or fail a correct export; verification needs neither.
    """
    with ExitStack() as stack:
        try:
            matmul = torch.get_float32_matmul_precision()
            stack.enter_context(
                torch.backends.cudnn.flags(
                    enabled=torch.backends.cudnn.enabled,
                    benchmark=torch.backends.cudnn.benchmark,
                    deterministic=torch.backends.cudnn.deterministic,
                    allow_tf32=False,
                )
            )
            torch.set_float32_matmul_precision("highest")
            stack.callback(torch.set_float32_matmul_precision, matmul)
        except RuntimeError:  # precision flags set through torch's newer API: leave them as the user chose
            pass
        yield


def reference_outputs(supernet: Any, arch: Mapping[str, int], probes: Sequence[Probe]) -> list[Any]:
    """The outputs of ``arch`` inside the supernet (eval mode, no grad, full fp32) on every probe."""
    with supernet.use(arch):
        return model_outputs(supernet.model, probes, "the supernet's sub-network")


def model_outputs(model: nn.Module, probes: Sequence[Probe], what: str = "the model") -> list[Any]:
    """The outputs of ``model`` (eval mode, no grad, full fp32) on every probe."""
    with eval_mode(model), torch.no_grad(), full_precision():
        return [_call(model, probe, what, ValueError) for probe in probes]


def check_outputs(
    model: nn.Module, probes: Sequence[Probe], expected: Sequence[Any], *, atol: float, rtol: float, what: str
) -> float:
    """Run ``model`` (reloaded from disk) on every probe and compare with ``expected``; the worst difference."""
    worst = 0.0
    evaluating = eval_mode(model) if isinstance(model, nn.Module) and _can_eval(model) else nullcontext()
    with evaluating, torch.no_grad(), full_precision():
        for probe, reference in zip(probes, expected):
            actual = _call(model, probe, f"the reloaded {what}", CallFailed)
            worst = max(worst, verify_outputs(reference, actual, atol, f"{what} on {probe.name}", rtol=rtol))
    return worst


def _call(model: nn.Module, probe: Probe, what: str, error: type[Exception]) -> Any:
    try:
        return probe.call(model)
    except Exception as err:  # noqa: BLE001 - reported with the probe that failed
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise error(f"{what} fails on {probe.name}: {type(err).__name__}: {message}"[:500]) from err


def _can_eval(model: nn.Module) -> bool:
    # The module of a torch.export program refuses train()/eval(); it is exported in eval mode.
    return not isinstance(model, torch.fx.GraphModule)
