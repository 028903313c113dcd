"""Gradient-based proxies: SiGeo, ZiCo, SNIP, grad-norm, Fisher and SynFlow."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_map

from lightning_nas._optuna import experimental
from lightning_nas.inputs import batch_input, call_model, with_input
from lightning_nas.proxies._base import (
    Forward,
    LossFn,
    Target,
    _device,
    _experimental_proxy,
    _first_example,
    _loss,
    _materialize,
    _output_sum,
    _scoring,
    _weight_gradients,
    _weight_layers,
)
from lightning_nas.proxies._warmup import is_warmed_up

__all__ = [
    "SIGEO_WARMED_UP_WEIGHTS",
    "SIGEO_ZERO_SHOT_WEIGHTS",
    "SiGeoTerms",
    "fisher",
    "grad_norm",
    "sigeo",
    "sigeo_terms",
    "snip",
    "synflow",
    "zico",
]

#: SiGeo's (λ1, λ2, λ3) without warm-up: ZiCo + Fisher-Rao term, no loss term (authors' CV setting).
SIGEO_ZERO_SHOT_WEIGHTS: tuple[float, float, float] = (1.0, 1.0, 0.0)
#: SiGeo's (λ1, λ2, λ3) on a warmed-up supernet (authors' CV setting: λ2 = 50, λ3 = 1).
SIGEO_WARMED_UP_WEIGHTS: tuple[float, float, float] = (1.0, 50.0, 1.0)


def _zico_term(grads: list[list[Tensor | None]], correction: int) -> float:
    """Σ_m log Σ_i mean_b|g_mbi| / std_b(g_mbi), over the entries with non-zero std."""
    total = 0.0
    for per_layer in zip(*grads):
        if any(g is None for g in per_layer):
            continue
        stacked = torch.stack([g.detach().flatten() for g in per_layer]).double()  # type: ignore[union-attr]
        std = stacked.std(dim=0, correction=correction)
        mean_abs = stacked.abs().mean(dim=0)
        nonzero = std > 0
        ratio_sum = float((mean_abs[nonzero] / std[nonzero]).sum())
        # A layer whose gradient never varies (inactive or dead) carries no signal, as in ZiCo.
        if ratio_sum > 0:
            total += math.log(ratio_sum)
    return total


@_experimental_proxy("+0.29")
def zico(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """ZiCo: inverse coefficient of variation of the gradients across batches (Li et al., ICLR 2023).

    With ``g_{m,b,i}`` the gradient of the loss on batch ``b`` w.r.t. entry ``i`` of the weight of
    conv/linear layer ``m``::

        ZiCo = Σ_m log( Σ_{i: σ_mi > 0} mean_b |g_mbi| / σ_mi ),   σ_mi = std_b(g_mbi)

    with the population standard deviation (``np.std``), as in the official code. High mean and
    low variance of the gradients predict fast convergence to a low loss.

    Args:
        target: A model, or a :class:`~lightning_nas.Supernet` (sub-network ``arch``).
        batches: At least two labelled batches (the std is taken across them).
        loss_fn: ``loss_fn(outputs, targets)``.
        arch: The sub-network of a supernet target (default: the active one).
        forward: How to run the model on a batch.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
        >>> math.isfinite(zico(model, batches))
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), minimum=2, proxy="zico")
        _, grads, _ = _weight_gradients(model, items, loss_fn, forward)
    return _zico_term(grads, correction=0)


@dataclass(frozen=True)
class SiGeoTerms:
    """The three terms of SiGeo for one sub-network.

    Attributes:
        zico: ``Σ_m log Σ_i mean_b|g_mbi| / std_b(g_mbi)`` (Bessel-corrected std, as in SiGeo's code).
        fisher_rao: ``log(|Σ_m θ_m · Σ_b g_mb| + 1e-10)``, the log Fisher-Rao norm estimate.
        loss: The mean training loss over the batches.
    """

    zico: float
    fisher_rao: float
    loss: float

    def score(self, weights: tuple[float, float, float]) -> float:
        """``λ1·zico + λ2·fisher_rao − λ3·loss``."""
        l1, l2, l3 = weights
        return l1 * self.zico + l2 * self.fisher_rao - l3 * self.loss


def sigeo_terms(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> SiGeoTerms:
    """The ZiCo, Fisher-Rao and training-loss terms of :func:`sigeo`, from one pass over ``batches``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
        >>> terms = sigeo_terms(model, batches)
        >>> terms.score((1.0, 1.0, 0.0)) == terms.zico + terms.fisher_rao
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), minimum=2, proxy="sigeo")
        layers, grads, losses = _weight_gradients(model, items, loss_fn, forward)
        inner = torch.zeros((), dtype=torch.float64)
        for (_, layer), per_layer in zip(layers, zip(*grads)):
            if any(g is None for g in per_layer):
                continue
            summed = torch.stack([g.detach() for g in per_layer]).sum(dim=0)  # type: ignore[union-attr]
            inner += (layer.weight.detach().double() * summed.double()).sum().cpu()
    return SiGeoTerms(
        zico=_zico_term(grads, correction=1),
        fisher_rao=math.log(abs(float(inner)) + 1e-10),
        loss=sum(losses) / len(losses),
    )


@experimental(
    "Spearman +0.32 without warm-up and -0.05 / -0.23 after a 10% / 20% warm-up with the stand-alone accuracy of "
    "50 digits sub-networks, where #params reaches +0.70 and FLOPs +0.75; benchmarks/proxy_quality.py. Kendall tau "
    "+0.68 without warm-up and +0.23 / -0.08 after a 10% / 50% warm-up on 32 digits-MLP sub-networks, where ZiCo "
    "reaches +0.72 and #params +0.56; benchmarks/ranking.py"
)
def sigeo(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
    warmed_up: bool | None = None,
    weights: tuple[float, float, float] | None = None,
) -> float:
    """SiGeo, the sub-one-shot proxy of Zheng et al. 2023 ("SiGeo: Sub-One-Shot NAS via Information
    Theory and Geometry of Loss Landscape"), as the authors' code computes it.

    Over ``B`` batches, with ``g_{m,b}`` the gradient of batch ``b``'s loss w.r.t. the weight
    ``θ_m`` of conv/linear layer ``m``::

        SiGeo = λ1 · Σ_m log( Σ_i mean_b|g_mbi| / std_b(g_mbi) )      (ZiCo)
              + λ2 · log |Σ_m θ_m · Σ_b g_mb|                        (Fisher-Rao norm)
              − λ3 · L_train

    The weights are :data:`SIGEO_ZERO_SHOT_WEIGHTS` ``(1, 1, 0)`` on an un-trained supernet and
    :data:`SIGEO_WARMED_UP_WEIGHTS` ``(1, 50, 1)`` on a warmed-up one.

    Two deliberate differences from the authors' code, both so that scoring has no side effects:
    their loop takes an optimizer step after each of the ``B`` batches and reads ``θ`` and the loss
    at the last one; here the weights stay fixed, ``θ`` is the current weight and ``L_train`` the
    mean loss over the batches. Their ZiCo term also keeps, by an indexing slip
    (``torch.nonzero(std)[0]``), a single entry per layer and pools same-shaped layers; here it is
    the sum over all entries with non-zero std of each layer, as in METHODS.md and ZiCo.

    Measured (``benchmarks/ranking.py``, Kendall tau with the stand-alone accuracy of 32 digits-MLP
    sub-networks; ceiling 0.82): the paper's warm-up effect does not appear. Without warm-up SiGeo
    ranks at 0.68 (#params 0.56, ZiCo 0.72); after a 10% / 50% warm-up with the weights
    ``(1, 50, 1)`` at 0.23 / -0.08. Term by term, warm-up does make the loss term informative
    (-0.22 -> 0.55 -> 0.73), as SiGeo's theory says, but at ``λ3 = 1`` it barely moves the score,
    while ``50 ×`` the Fisher-Rao term dominates it (its spread over the sub-networks is ~10x
    ZiCo's) and that term ranks worse after warm-up (0.43 -> 0.19 -> -0.20). Use it without
    warm-up, or look at :func:`sigeo_terms` (the loss term of a warmed-up supernet).

    Args:
        target: A model, or a :class:`~lightning_nas.Supernet` (sub-network ``arch``).
        batches: At least two labelled batches; the authors use four.
        loss_fn: ``loss_fn(outputs, targets)``.
        arch: The sub-network of a supernet target (default: the active one).
        forward: How to run the model on a batch.
        warmed_up: Pick the warmed-up weights. Default: whether :func:`warmup` trained this
            supernet (:attr:`~lightning_nas.Supernet.warmup_steps` > 0); ``False`` for a plain model.
        weights: Explicit ``(λ1, λ2, λ3)``; overrides ``warmed_up``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(4)]
        >>> math.isfinite(sigeo(model, batches, warmed_up=True))
        True
    """
    if weights is None:
        if warmed_up is None:
            warmed_up = is_warmed_up(target)
        weights = SIGEO_WARMED_UP_WEIGHTS if warmed_up else SIGEO_ZERO_SHOT_WEIGHTS
    terms = sigeo_terms(target, batches, loss_fn, arch=arch, forward=forward)
    return terms.score(weights)


@_experimental_proxy("+0.55")
def snip(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """SNIP connection sensitivity summed over the network (Lee et al., ICLR 2019; Abdelfattah et al. 2021).

    ``snip = Σ_m Σ_i |θ_mi · ∂L/∂θ_mi|`` over conv/linear weights, with ``L`` the mean loss over
    the batches.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> snip(model, [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]) > 0
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), proxy="snip")
        layers, grads, _ = _weight_gradients(model, items, loss_fn, forward)
        total = 0.0
        for (_, layer), mean in zip(layers, _mean_gradients(grads)):
            if mean is not None:
                total += float((layer.weight.detach() * mean).abs().sum())
    return total


@_experimental_proxy("+0.23")
def grad_norm(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """Sum of the per-layer gradient norms (Abdelfattah et al., ICLR 2021).

    ``grad_norm = Σ_m ||∂L/∂θ_m||_2`` over conv/linear weights, ``L`` the mean loss over the batches.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> grad_norm(model, [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]) > 0
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), proxy="grad_norm")
        _, grads, _ = _weight_gradients(model, items, loss_fn, forward)
        return sum(float(mean.norm()) for mean in _mean_gradients(grads) if mean is not None)


def _mean_gradients(grads: list[list[Tensor | None]]) -> list[Tensor | None]:
    means: list[Tensor | None] = []
    for per_layer in zip(*grads):
        if any(g is None for g in per_layer):
            means.append(None)
        else:
            means.append(torch.stack(per_layer).mean(dim=0))  # type: ignore[arg-type]
    return means


@_experimental_proxy("+0.28")
def fisher(
    target: Target,
    batches: Iterable[Any],
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """Fisher information of the channels (Turner et al., ICLR 2020; Abdelfattah et al. 2021).

    For every output channel ``k`` of every conv/linear layer with activation ``a`` and its
    gradient ``∂L/∂a``, summed over the positions ``p`` (pixels or tokens)::

        fisher = Σ_layers Σ_k ½ · mean_n ( Σ_p a_nkp · ∂L/∂a_nkp )²

    averaged over the batches.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> fisher(model, [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]) > 0
        True
    """
    with _scoring(target, arch) as model:
        items = _materialize(batches, _device(model), proxy="fisher")
        layers = _weight_layers(model)
        activations: list[tuple[nn.Module, Tensor]] = []

        def keep(module: nn.Module, _: Any, output: Tensor) -> None:
            activations.append((module, output))

        handles = [layer.register_forward_hook(keep) for _, layer in layers]
        total = 0.0
        try:
            for batch in items:
                activations.clear()
                loss = _loss(model, batch, loss_fn, forward)
                grads = torch.autograd.grad(loss, [a for _, a in activations], allow_unused=True)
                for (module, act), grad in zip(activations, grads):
                    if grad is None:
                        continue
                    product = (act.detach() * grad).movedim(-1 if isinstance(module, nn.Linear) else 1, 1)
                    per_channel = product.reshape(product.shape[0], product.shape[1], -1).sum(dim=2)
                    total += float(0.5 * per_channel.double().pow(2).mean(dim=0).sum())
        finally:
            for handle in handles:
                handle.remove()
    return total / len(items)


@_experimental_proxy("+0.66")
def synflow(
    target: Target,
    batches: Iterable[Any] = (),
    loss_fn: LossFn | None = None,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
) -> float:
    """SynFlow, the data-free synaptic saliency (Tanaka et al., NeurIPS 2020; Abdelfattah et al. 2021).

    All parameters are replaced by their absolute values, batch norms act as the identity, and the
    input is all ones (one example, float64, shaped like the first batch's input). With ``R`` the
    sum of the outputs::

        synflow = Σ_m Σ_i |θ_mi| · ∂R/∂|θ_mi|     over conv/linear weights

    The absolute weights are passed with :func:`torch.func.functional_call`, so the model's own
    parameters and their signs are never modified. Labels and ``loss_fn`` are not used. Within a
    supernet the score only grows with the sub-network (every path of the smaller one is a path
    of the larger one, with the same positive weights).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> synflow(model, [torch.randn(16, 4)]) > 0
        True
    """
    with _scoring(target, arch, train=False) as model:
        items = _materialize(batches, _device(model), proxy="synflow")
        example = _first_example(items[0])
        ones = tree_map(_ones_if_float, batch_input(example))
        scored = {id(layer.weight) for _, layer in _weight_layers(model)}
        norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        tensors: dict[str, Tensor] = {}
        leaves: dict[str, Tensor] = {}
        for name, param in model.named_parameters():
            value = param.detach().abs().double()
            if id(param) in scored:
                value.requires_grad_(True)
                leaves[name] = value
            tensors[f"model.{name}"] = value
        for name, buffer in model.named_buffers():
            tensors[f"model.{name}"] = buffer.double() if buffer.is_floating_point() else buffer
        for prefix in norms:
            # Batch norm as the identity, as the reference implementation builds the network without it.
            for attr, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
                key = f"model.{prefix}.{attr}" if prefix else f"model.{attr}"
                if key in tensors:
                    tensors[key] = torch.full_like(tensors[key], fill)

        outputs = functional_call(_Forward(model, forward), tensors, (with_input(example, ones),))
        total = _output_sum(outputs, "synflow")
        names = list(leaves)
        grads = torch.autograd.grad(total, [leaves[n] for n in names], allow_unused=True)
        return float(sum((leaves[n].detach() * g).sum() for n, g in zip(names, grads) if g is not None))


def _ones_if_float(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return torch.ones_like(value, dtype=torch.float64)
    return value


class _Forward(nn.Module):
    """Runs ``forward(model, batch)`` so that :func:`functional_call` can swap the model's tensors."""

    def __init__(self, model: nn.Module, forward: Forward) -> None:
        super().__init__()
        self.model = model
        self.run = forward

    def forward(self, batch: Any) -> Any:
        return self.run(self.model, batch)
