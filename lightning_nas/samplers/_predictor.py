from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.ensemble import RandomForestRegressor


@runtime_checkable
class Predictor(Protocol):
    """What :class:`~lightning_nas.samplers.PredictorSampler` needs from a performance predictor.

    ``fit`` learns from encoded architectures ``X`` (shape ``(n, d)``) and targets ``y``
    (shape ``(n,)``); ``predict(X, return_std=True)`` returns the predicted mean and an
    uncertainty (standard deviation) per row, the same convention as scikit-learn's
    ``GaussianProcessRegressor``.

    Example:

        .. testcode::

            import numpy as np
            from sklearn.gaussian_process import GaussianProcessRegressor

            from lightning_nas.samplers import Predictor
            from lightning_nas.samplers import PredictorSampler

            # scikit-learn's GP already has this interface.
            assert isinstance(GaussianProcessRegressor(), Predictor)
            sampler = PredictorSampler(predictor=GaussianProcessRegressor(normalize_y=True))
    """

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...


class RandomForestPredictor:
    """Random-forest performance predictor whose spread across trees is its uncertainty.

    Trees need no feature scaling, cope with one-hot encodings of categorical choices and with
    interactions between dimensions, and fit a few hundred architectures in milliseconds, which
    matters because the sampler refits after every trial. The standard deviation of the
    per-tree predictions serves as the epistemic uncertainty for the acquisition function.

    Example:

        .. testcode::

            import numpy as np

            from lightning_nas.samplers import RandomForestPredictor

            rng = np.random.default_rng(0)
            X = rng.integers(0, 2, size=(100, 6)).astype(float)
            y = X @ np.arange(6.0)
            predictor = RandomForestPredictor(seed=0).fit(X, y)
            mean, std = predictor.predict(X[:3], return_std=True)
            assert mean.shape == std.shape == (3,)

    Args:
        n_estimators:
            Number of trees.
        max_features:
            Fraction of features considered at each split; below 1 decorrelates the trees, which
            makes their spread a more useful uncertainty.
        min_samples_leaf:
            Minimum number of architectures per leaf.
        seed:
            Seed of the forest's bootstrap and feature sampling.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        max_features: float = 0.5,
        min_samples_leaf: int = 1,
        seed: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self._forest: RandomForestRegressor | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> RandomForestPredictor:
        """Fit the forest on encoded architectures ``X`` and their objective values ``y``."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
            raise ValueError(
                f"fit expects X of shape (n, d) and y of shape (n,) with n > 0, got {X.shape} and {y.shape}."
            )
        self._forest = RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.seed,
        ).fit(X, y)
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted objective of each row of ``X``; with ``return_std``, also the tree spread."""
        if self._forest is None:
            raise RuntimeError("RandomForestPredictor.predict called before fit.")
        X = np.asarray(X, dtype=np.float64)
        if not return_std:
            return self._forest.predict(X)
        per_tree = np.stack([tree.predict(X) for tree in self._forest.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)
