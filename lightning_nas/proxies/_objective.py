"""A proxy as an Optuna objective over the sub-networks of a supernet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import optuna
import torch.nn.functional as F

from lightning_nas.inputs import call_model
from lightning_nas.proxies._base import Forward, LossFn, Proxy
from lightning_nas.proxies._registry import get_proxy
from lightning_nas.space import Arch, SearchSpace
from lightning_nas.supernet import Supernet

__all__ = ["ProxyObjective"]


class ProxyObjective:
    """``objective(trial) -> score``: suggest a sub-network, score it with a proxy (maximize).

    Each trial asks ``space.suggest(trial)`` for an architecture, scores it inside the supernet
    with its inherited weights, and records the user attributes ``arch``, ``params``, ``flops``
    (when the supernet has an example input), ``proxy`` (the name) and the score under the
    proxy's name. Any Optuna sampler can drive it; create the study with
    ``direction=ProxyObjective.direction``.

    Args:
        supernet: The supernet whose sub-networks are scored (warmed up or not).
        proxy: A name in :data:`~lightning_nas.proxies.PROXIES` or a proxy function.
        batches: The batches every trial is scored on (kept fixed so scores are comparable).
        space: The space to search; default the supernet's.
        loss_fn: ``loss_fn(outputs, targets)``.
        prefix: Prefix of the Optuna parameter names.
        forward: How to run the model on a batch.
        **options: Proxy-specific options, e.g. ``warmed_up=True`` for ``"sigeo"``.

    Example:
        >>> import optuna, torch
        >>> from lightning_nas import Supernet
        >>> net = Supernet(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
        ...                example_input=torch.zeros(1, 4))
        >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
        >>> objective = ProxyObjective(net, "zico", batches)
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(direction=objective.direction)
        >>> study.optimize(objective, n_trials=3)
        >>> sorted(study.best_trial.user_attrs)
        ['arch', 'flops', 'params', 'proxy', 'zico']
    """

    direction = "maximize"

    def __init__(
        self,
        supernet: Supernet,
        proxy: str | Proxy = "sigeo",
        batches: Iterable[Any] = (),
        *,
        space: SearchSpace | None = None,
        loss_fn: LossFn = F.cross_entropy,
        prefix: str = "",
        forward: Forward = call_model,
        **options: Any,
    ) -> None:
        self.supernet = supernet
        self.proxy = get_proxy(proxy)
        self.name = proxy if isinstance(proxy, str) else getattr(proxy, "__name__", "proxy")
        self.batches = list(batches)
        self.space = supernet.space if space is None else space
        self.loss_fn = loss_fn
        self.prefix = prefix
        self.forward = forward
        self.options = options

    def score(self, arch: Mapping[str, int]) -> float:
        """The proxy score of one sub-network."""
        return float(
            self.proxy(self.supernet, self.batches, self.loss_fn, arch=arch, forward=self.forward, **self.options)
        )

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        arch: Arch = self.space.suggest(trial, prefix=self.prefix)
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("params", self.supernet.num_params(arch))
        if self.supernet.example_input is not None:
            trial.set_user_attr("flops", self.supernet.flops(arch))
        value = self.score(arch)
        trial.set_user_attr("proxy", self.name)
        trial.set_user_attr(self.name, value)
        return value
