"""Hypergradient estimators Δ behind one interface (``base.HypergradientEstimator``): TANDEM's twin gap,
DoReMi, DoGE, fixed. ``mixture.learner`` in a config names one of ``LEARNERS``."""

from tandem_components.estimators.base import CARRY_MODES, HypergradientEstimator, PerDomainSignalEstimator
from tandem_components.estimators.doge import DoGEEstimator
from tandem_components.estimators.doremi import DoReMiEstimator
from tandem_components.estimators.fixed import FixedEstimator
from tandem_components.estimators.tandem import TandemEstimator

#: config name -> estimator class
LEARNERS = {
    "tandem": TandemEstimator,
    "fixed": FixedEstimator,
    "doremi": DoReMiEstimator,
    "doge": DoGEEstimator,
}

__all__ = [
    "PerDomainSignalEstimator",
    "HypergradientEstimator",
    "FixedEstimator",
    "TandemEstimator",
    "DoReMiEstimator",
    "DoGEEstimator",
    "LEARNERS",
    "CARRY_MODES",
]
