"""Optuna samplers of lightning_nas: constrained, TabNAS-style and predictor-guided search.

Every sampler is a plain :class:`optuna.samplers.BaseSampler`: pass it to
``optuna.create_study(sampler=...)`` in your own Optuna code. Architectures are ordinary Optuna
parameters, and a constraint is a callable ``params -> float or sequence of floats`` that is
feasible when every value is ``<= 0``, as in Optuna.
"""

from __future__ import annotations

from lightning_nas.samplers._assessor import SemiSupervisedAssessor
from lightning_nas.samplers._constrained import ConstrainedSampler
from lightning_nas.samplers._constraint import ConstraintFunc, NoFeasibleArchitectureError, is_rejection
from lightning_nas.samplers._predictor import Predictor, RandomForestPredictor
from lightning_nas.samplers._predictor_sampler import PredictorSampler
from lightning_nas.samplers._tabnas import TabNASSampler

__all__ = [
    "ConstrainedSampler",
    "ConstraintFunc",
    "NoFeasibleArchitectureError",
    "Predictor",
    "PredictorSampler",
    "RandomForestPredictor",
    "SemiSupervisedAssessor",
    "TabNASSampler",
    "is_rejection",
]
