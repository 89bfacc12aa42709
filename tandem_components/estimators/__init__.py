"""Hypergradient estimators behind one interface (``base.HypergradientEstimator``).

``mixture.learner`` in a config names one of ``LEARNERS``.
"""

from tandem_components.estimators.base import HypergradientEstimator
from tandem_components.estimators.fixed import FixedEstimator
from tandem_components.estimators.tandem import TandemEstimator

#: config name -> estimator class
LEARNERS = {
    "tandem": TandemEstimator,
    "fixed": FixedEstimator,
}

__all__ = ["HypergradientEstimator", "FixedEstimator", "TandemEstimator", "LEARNERS"]
