"""Optuna's own sampler conformance suites, run against the samplers of lightning_nas."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from lightning_nas.samplers import ConstrainedSampler, PredictorSampler, RandomForestPredictor, TabNASSampler


def always_feasible(params: dict) -> list[float]:
    return [-1.0, 0.0]


# A declared dimension that the suites never suggest: the constraint still runs on every
# jointly sampled architecture, and the suites' own parameters pass through untouched.
DECLARED = {"unused_width": IntDistribution(1, 4)}


class TestConstrainedSampler(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture(params=["tpe", "random"])
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        def make() -> BaseSampler:
            base = (
                optuna.samplers.TPESampler(n_startup_trials=2, seed=0)
                if request.param == "tpe"
                else optuna.samplers.RandomSampler(seed=0)
            )
            return ConstrainedSampler(base, always_feasible, DECLARED, seed=0)

        return make


class TestTabNASSampler(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture(params=["inferred space", "declared space with constraint"])
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        if request.param == "inferred space":
            return lambda: TabNASSampler(seed=0)
        return lambda: TabNASSampler(DECLARED, always_feasible, n_mc_samples=16, seed=0)


class TestPredictorSampler(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        # One startup trial, so that the suites exercise the predictor on every distribution.
        return lambda: PredictorSampler(
            predictor=RandomForestPredictor(n_estimators=5, seed=0),
            n_startup_trials=1,
            n_candidates=32,
            seed=0,
        )
