"""Zero-cost and sub-one-shot proxies: score sub-networks from a few batches instead of training them.

Every proxy has the signature of :class:`Proxy`: ``proxy(target, batches, loss_fn, *, arch=None,
forward=call_model) -> float`` where ``target`` is a model or a :class:`~lightning_nas.Supernet`
(whose sub-network ``arch`` is scored with the weights it inherits), and higher is better. Scoring
leaves the model exactly as it was: weights, buffers (batch-norm statistics), ``.grad`` fields,
train/eval flags and the supernet's active architecture. The data-based proxies run the model in
training mode, so batch norm uses each batch's own statistics (a weight-shared supernet's running
statistics belong to no particular sub-network), with dropout off so that scores are deterministic.

Sub-one-shot NAS (SiGeo): :func:`warmup` trains the supernet briefly on a fraction of the data,
then :func:`rank_archs` or a :class:`ProxyObjective` study ranks sub-networks by :func:`sigeo`.

Example:
    >>> import torch
    >>> from lightning_nas import Supernet
    >>> from lightning_nas.proxies import compute_proxy, warmup
    >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
    ...                example_input=torch.zeros(1, 4))
    >>> data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(10)]
    >>> _ = warmup(net, data, fraction=0.2)
    >>> score = compute_proxy("sigeo", net, data[:4], arch=net.min_arch())
"""

from __future__ import annotations

from lightning_nas.proxies._activation import jacob_cov, naswot
from lightning_nas.proxies._base import Forward, LossFn, Proxy, Target, batch_input, batch_targets
from lightning_nas.proxies._baselines import flops, num_params
from lightning_nas.proxies._gradient import (
    SIGEO_WARMED_UP_WEIGHTS,
    SIGEO_ZERO_SHOT_WEIGHTS,
    SiGeoTerms,
    fisher,
    grad_norm,
    sigeo,
    sigeo_terms,
    snip,
    synflow,
    zico,
)
from lightning_nas.proxies._objective import ProxyObjective
from lightning_nas.proxies._registry import PROXIES, compute_proxy, get_proxy, rank_archs
from lightning_nas.proxies._warmup import WarmupResult, is_warmed_up, warmup

__all__ = [
    "PROXIES",
    "SIGEO_WARMED_UP_WEIGHTS",
    "SIGEO_ZERO_SHOT_WEIGHTS",
    "Forward",
    "LossFn",
    "Proxy",
    "ProxyObjective",
    "SiGeoTerms",
    "Target",
    "WarmupResult",
    "batch_input",
    "batch_targets",
    "compute_proxy",
    "fisher",
    "flops",
    "get_proxy",
    "grad_norm",
    "is_warmed_up",
    "jacob_cov",
    "naswot",
    "num_params",
    "rank_archs",
    "sigeo",
    "sigeo_terms",
    "snip",
    "synflow",
    "warmup",
    "zico",
]
