"""Proxies by name, and ranking sub-networks of a supernet with one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch.nn.functional as F

from lightning_nas.inputs import call_model
from lightning_nas.proxies._activation import jacob_cov, naswot
from lightning_nas.proxies._base import Forward, LossFn, Proxy, Target
from lightning_nas.proxies._baselines import flops, num_params
from lightning_nas.proxies._gradient import fisher, grad_norm, sigeo, snip, synflow, zico
from lightning_nas.registry import Registry
from lightning_nas.space import Arch
from lightning_nas.supernet import Supernet

__all__ = ["PROXIES", "compute_proxy", "get_proxy", "rank_archs"]

#: Every proxy by name. Higher is better for all of them. Register your own (any callable with the
#: :class:`Proxy` signature) with ``@PROXIES.register("name")`` or ``PROXIES["name"] = fn``.
PROXIES: Registry[str, Proxy] = Registry(
    "proxy",
    {
        "sigeo": sigeo,
        "zico": zico,
        "synflow": synflow,
        "snip": snip,
        "grad_norm": grad_norm,
        "naswot": naswot,
        "jacob_cov": jacob_cov,
        "fisher": fisher,
        "params": num_params,
        "flops": flops,
    },
)


def get_proxy(proxy: str | Proxy) -> Proxy:
    """The proxy function for a name of :data:`PROXIES` (a callable is returned as is).

    Example:
        >>> get_proxy("zico").__name__
        'zico'
    """
    if callable(proxy):
        return proxy
    return PROXIES[proxy]


def compute_proxy(
    proxy: str | Proxy,
    target: Target,
    batches: Iterable[Any] = (),
    loss_fn: LossFn = F.cross_entropy,
    *,
    arch: Mapping[str, int] | None = None,
    forward: Forward = call_model,
    **options: Any,
) -> float:
    """Score a model, or the sub-network ``arch`` of a supernet, with a proxy given by name.

    Args:
        proxy: A name in :data:`PROXIES` or a proxy function.
        target: A model, or a :class:`~lightning_nas.Supernet`.
        batches: A few labelled batches (some proxies use the first example only).
        loss_fn: ``loss_fn(outputs, targets)``.
        arch: The sub-network of a supernet target (default: the active one).
        forward: How to run the model on a batch.
        **options: Proxy-specific options, e.g. ``warmed_up=True`` for ``"sigeo"``.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> compute_proxy("params", model)
        67.0
    """
    return get_proxy(proxy)(target, batches, loss_fn, arch=arch, forward=forward, **options)


def rank_archs(
    supernet: Supernet,
    archs: Sequence[Mapping[str, int]],
    batches: Iterable[Any],
    proxy: str | Proxy = "sigeo",
    loss_fn: LossFn = F.cross_entropy,
    *,
    forward: Forward = call_model,
    **options: Any,
) -> list[tuple[Arch, float]]:
    """Score sub-networks with their inherited weights and sort them, best first.

    Typically after :func:`~lightning_nas.proxies.warmup`: the sub-one-shot alternative to
    training the supernet fully and evaluating every sub-network.

    Example:
        >>> import torch
        >>> from lightning_nas import Supernet
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
        ...                example_input=torch.zeros(1, 4))
        >>> ranked = rank_archs(net, [net.min_arch(), net.max_arch()], [torch.zeros(1, 4)], proxy="params")
        >>> ranked[0][0] == net.max_arch()
        True
    """
    batches = list(batches)
    fn = get_proxy(proxy)
    scored = [(dict(arch), fn(supernet, batches, loss_fn, arch=arch, forward=forward, **options)) for arch in archs]
    return sorted(scored, key=lambda item: item[1], reverse=True)
