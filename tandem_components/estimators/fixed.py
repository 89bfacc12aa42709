"""A fixed mixture: no learning. Stage 2, and the uniform / natural baselines."""

from __future__ import annotations

import torch

from tandem_components.estimators.base import HypergradientEstimator


class FixedEstimator(HypergradientEstimator):
    name = "fixed"
    updates_mixture = False

    def __init__(self, num_domains: int):
        self.num_domains = num_domains

    def delta(self, probe_batch, scale: float = 1.0) -> torch.Tensor:
        return torch.zeros(self.num_domains, dtype=torch.float64)
