from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.samplers import BaseSampler

from lightning_nas.samplers._base import _ArchSampler
from lightning_nas.samplers._constraint import ConstraintFunc, _Closest, _record_rejection
from lightning_nas.samplers._space import SearchSpaceLike, _ArchSpace

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial


class ConstrainedSampler(_ArchSampler):
    """Wrap any sampler so that it only ever returns architectures that satisfy a constraint.

    The constraint is checked *before* the objective runs, by rejection: the base sampler
    proposes a whole architecture, and an infeasible one is thrown away and proposed again.
    This suits resource limits that are cheap to compute exactly from the architecture
    (parameters, FLOPs, a latency table), where evaluating an infeasible network would waste a
    training run.

    How the pieces fit with Optuna:

    * The whole architecture (``search_space``) is sampled jointly in
      :meth:`sample_relative`, because a constraint such as "at most N parameters" couples
      every dimension; sampling dimensions one by one (independent sampling) could not undo a
      choice that makes the rest infeasible. The base sampler's own relative space (for
      example multivariate TPE, GP, NSGA-II) is used for the proposal, and any dimension
      outside it comes from the base sampler's independent sampling.
    * Every rejected proposal of the base sampler is added to the study as a ``PRUNED`` trial
      carrying its constraint values. TPE ranks such trials as infeasible and stops proposing
      that region, NSGA-II's constrained domination sees them too; without this record a
      model-based sampler would propose the same infeasible architecture again and again.
      Note that these trials count towards ``TPESampler(n_startup_trials=...)`` and appear in
      ``study.trials`` (system attribute ``lightning_nas:rejected_by``).
    * A sampler that ignores pruned trials (``GPSampler`` models completed trials only) would
      stall, so after ``patience`` rejections in one trial, or as soon as the base sampler
      repeats an already rejected architecture, the remaining tries of that trial are uniform
      random draws (plain rejection sampling, not recorded).
    * The constraint values of the accepted architecture are stored on the trial in the list
      form ``system_attrs["constraints"]``: Optuna 5 reads it as ``FrozenTrial.constraints``
      (keys ``"0"``, ``"1"``, ...), and optuna-dashboard 0.21 displays it, which it does not do
      for the per-key form written by ``Trial.set_constraint``.

    Parameters that are not in ``search_space`` (for example a learning rate) are delegated to
    the base sampler unchanged. Values fixed by ``study.enqueue_trial`` bypass samplers in
    Optuna, so an enqueued architecture is not checked.

    Example:

        .. testcode::

            import optuna
            from optuna.distributions import IntDistribution

            from lightning_nas.samplers import ConstrainedSampler

            space = {"width": IntDistribution(8, 64, step=8), "depth": IntDistribution(1, 8)}


            def params_limit(arch):
                return arch["width"] * arch["width"] * arch["depth"] - 8192


            def objective(trial):
                width = trial.suggest_int("width", 8, 64, step=8)
                depth = trial.suggest_int("depth", 1, 8)
                return width * depth


            sampler = ConstrainedSampler(
                optuna.samplers.TPESampler(seed=0), params_limit, space, seed=0
            )
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective, n_trials=20)
            evaluated = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            assert all(params_limit(t.params) <= 0 for t in evaluated)

    Args:
        base_sampler:
            The sampler that proposes architectures (TPE, NSGA-II, GP, random, ...).
        constraint:
            ``params -> float or sequence of floats``; an architecture is feasible when every
            value is ``<= 0`` (Optuna's convention). It receives the jointly sampled parameters
            and must be cheap: it may be called many times per trial.
        search_space:
            The architecture dimensions: a ``lightning_nas.SearchSpace`` or a mapping of names
            to Optuna distributions. The objective must suggest them with these distributions
            (``SearchSpace.suggest`` does).
        max_tries:
            Architectures examined per trial before giving up with
            :class:`~lightning_nas.samplers.NoFeasibleArchitectureError`.
        patience:
            Consecutive rejected proposals of the base sampler per trial before falling back to
            uniform random draws.
        seed:
            Seed of the fallback random draws.
    """

    def __init__(
        self,
        base_sampler: BaseSampler,
        constraint: ConstraintFunc,
        search_space: SearchSpaceLike,
        *,
        max_tries: int = 1000,
        patience: int = 16,
        seed: int | None = None,
    ) -> None:
        if not isinstance(base_sampler, BaseSampler):
            raise TypeError(f"base_sampler must be an optuna BaseSampler, got {type(base_sampler).__name__}.")
        if not callable(constraint):
            raise TypeError(f"constraint must be callable, got {type(constraint).__name__}.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"ConstrainedSampler: patience must be an int >= 1, got {patience!r}.")
        super().__init__(search_space, constraint, max_tries=max_tries, seed=seed, fallback=base_sampler)
        self._patience = patience

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        assert self._search_space is not None
        search_space = self._fallback.infer_relative_search_space(study, trial)
        search_space.update(self._search_space)
        return search_space

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        assert self._constraint is not None
        space = _ArchSpace(search_space)
        rejected: set[tuple[Any, ...]] = set()
        from_base = True
        closest = _Closest()
        for n_rejected in range(self._max_tries):
            if from_base:
                params = self._propose(study, trial, search_space)
            else:
                params = space.sample(self._rng.rng, 1)[0]
            values = self._constraint(params)
            if self._constraint.is_feasible(values):
                self._accept(study, trial, params, n_rejected)
                return params
            closest.note(values)
            if from_base:
                key = space.key(params)
                if key in rejected:
                    # The base sampler does not learn from rejections (e.g. GPSampler).
                    from_base = False
                    continue
                rejected.add(key)
                _record_rejection(study, params, search_space, values, type(self).__name__)
                from_base = len(rejected) < self._patience
        raise self._constraint.infeasible_error(self._max_tries, closest.values)

    def _propose(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        base_space = self._fallback.infer_relative_search_space(study, trial)
        relative_space = {
            name: distribution for name, distribution in base_space.items() if search_space.get(name) == distribution
        }
        params: dict[str, Any] = {}
        if relative_space:
            proposed = self._fallback.sample_relative(study, trial, relative_space)
            params = {name: proposed[name] for name in relative_space if name in proposed}
        for name, distribution in search_space.items():
            if name not in params:
                params[name] = self._fallback.sample_independent(study, trial, name, distribution)
        return params
