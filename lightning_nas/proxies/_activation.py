"""Activation- and Jacobian-kernel proxies: NASWOT and its Jacobian-covariance precursor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from lightning_nas.inputs import batch_input, call_model, with_input
from lightning_nas.proxies._base import (
    Forward,
    LossFn,
    Target,
    _device,
    _experimental_proxy,
    _materialize,
    _output_sum,
    _scoring,
)

__all__ = ["jacob_cov", "naswot"]

# Rectifier-like activations, as functions and tensor methods (nn.ReLU & co. call the functional
# form). Their binary code is "input > 0": the linear region the example falls in.
_RECTIFIERS: frozenset[Callable[..., Any]] = frozenset(
    {
        F.relu,
        F.relu_,
        F.relu6,
        F.leaky_relu,
        F.gelu,
        F.silu,
        F.elu,
        torch.relu,
        torch.relu_,
        Tensor.relu,
        Tensor.relu_,
    }
)


class _ActivationCodes(TorchFunctionMode):
    """Records the binary code ``input > 0`` of every rectifier call, one row per example.

    Intercepting the function calls (rather than hooking ``nn.ReLU`` modules) also catches the
    ``F.relu`` calls inside a model's ``forward``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.codes: list[Tensor] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func in _RECTIFIERS and args and isinstance(args[0], Tensor) and args[0].dim() > 0:
            # Read before the call: in-place variants overwrite their input.
            self.codes.append((args[0].detach() > 0).flatten(1))
        return func(*args, **(kwargs or {}))


@_experimental_proxy("+0.63")
def naswot(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn | None = None,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """NASWOT: log-determinant of the activation-code kernel (Mellor et al., ICML 2021).

    Each example ``n`` of a batch gets a binary code ``c_n`` (which units of all rectifier
    activations are on). With ``N_A`` units, ``K_nm = N_A − Hamming(c_n, c_m)``, i.e.
    ``K = C Cᵀ + (1 − C)(1 − C)ᵀ``, and ``naswot = log |det K|``, averaged over the batches.
    Networks that separate the examples into distinct linear regions score higher. Labels and
    ``loss_fn`` are not used. Every unit adds a positive semi-definite term to ``K``, so adding
    units that do not change the others' codes (e.g. widening the last hidden layer) raises the
    score.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
        >>> naswot(model, [torch.randn(16, 4)]) > 0
        True
    """
    with _scoring(target, arch) as model, torch.no_grad():
        items = _materialize(batches, _device(model), proxy="naswot")
        scores = []
        for batch in items:
            recorder = _ActivationCodes()
            with recorder:
                forward(model, batch)
            if not recorder.codes:
                raise ValueError("naswot: the model ran no ReLU-like activation")
            codes = torch.cat(recorder.codes, dim=1).double()
            kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
            scores.append(float(torch.linalg.slogdet(kernel).logabsdet))
    return sum(scores) / len(scores)


@_experimental_proxy("+0.31")
def jacob_cov(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn | None = None,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """Jacobian covariance (Mellor et al. 2020, v1 of NASWOT; Abdelfattah et al. 2021's ``jacob_cov``).

    With ``J_n = ∂(Σ outputs)/∂x_n`` the input Jacobian of example ``n`` and ``λ`` the eigenvalues
    of the correlation matrix of the ``J_n``::

        jacob_cov = −Σ_j ( log(λ_j + k) + 1 / (λ_j + k) ),   k = 1e-5

    averaged over the batches. Uncorrelated Jacobians (eigenvalues near 1) score highest. Needs a
    floating-point input tensor; labels and ``loss_fn`` are not used.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
        >>> jacob_cov(model, [torch.randn(8, 4)]) < 0
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), proxy="jacob_cov")
        scores = []
        for batch in items:
            x = batch_input(batch)
            if not (isinstance(x, Tensor) and x.is_floating_point()):
                raise ValueError("jacob_cov needs batches whose input is one floating-point tensor")
            x = x.detach().requires_grad_(True)
            outputs = forward(model, with_input(batch, x))
            (jacobian,) = torch.autograd.grad(_output_sum(outputs, "jacob_cov"), [x])
            corr = torch.corrcoef(jacobian.reshape(jacobian.shape[0], -1).double())
            eigenvalues = torch.linalg.eigvalsh(corr)
            k = 1e-5
            scores.append(float(-(torch.log(eigenvalues + k) + 1.0 / (eigenvalues + k)).sum()))
    return sum(scores) / len(scores)
