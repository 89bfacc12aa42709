"""The interface every mixture learner implements: a hypergradient Δ per domain.

The recipe's loop is the same for every learner (METHOD.md, "Algorithm"):

    for each episode of E steps:
        estimator.begin_episode()                   # TANDEM: sync w <- u
        for k in range(E):
            proxy step on an α-weighted train batch
            if k < K: estimator.probe_step(train_batch, val_batch)   # TANDEM: one reference step
            if k == K - 1:
                Δ = estimator.delta(probe_batch)    # (M,), one value per domain
                α = mixture.step(Δ)                 # larger Δ -> less weight

Conventions: Δ is a *descent direction's gradient*: the mixture moves α against it, so a domain the
learner wants more of gets a smaller (more negative) Δ. A learner with ``updates_mixture = False``
(a fixed mixture) never steps α.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from tandem_components.errors import TandemError


class HypergradientEstimator(ABC):
    #: name used by the config key ``mixture.learner`` and written into the export's provenance
    name: str = ""
    #: whether α is updated at all (False for fixed mixtures)
    updates_mixture: bool = True
    #: whether ``probe_step`` needs validation batches (the recipe only samples them if so)
    uses_validation_batches: bool = False

    def begin_episode(self) -> None:
        """Called at the first step of every episode."""

    def probe_step(self, train_batch, val_batch) -> dict[str, float]:
        """Extra work at each of the K probing steps, after the proxy's step on ``train_batch``.

        Returns metrics to log (name -> float).
        """
        return {}

    @abstractmethod
    def delta(self, probe_batch) -> torch.Tensor:
        """Δ, shape (M,) float64, identical on every rank (reduce across ranks before returning)."""

    def diagnostics(self) -> dict[str, float]:
        """Measures of the last Δ to log with it (e.g. TANDEM's ``delta_agreement``), name -> float."""
        return {}

    def hyperparameters(self) -> dict[str, Any]:
        """Settings recorded in the mixture export's provenance."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class PerDomainSignalEstimator(HypergradientEstimator):
    """An estimator whose Δ is a per-domain signal measured on the probe batch.

    A domain may be absent from a probe batch (or have no target tokens in it): its Δ then keeps its
    previous value (0 before the first update) instead of becoming NaN, via ``_merge``. That last Δ is
    the state a resumed run needs.
    """

    def __init__(self, num_domains: int):
        self.num_domains = num_domains
        self.last_delta = torch.zeros(num_domains, dtype=torch.float64)
        self.measured = torch.zeros(num_domains, dtype=torch.bool)  # has a Δ of its own been measured yet

    def _merge(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Δ = ``values`` where ``present``, the previous Δ elsewhere; remembered for the next update.

        A domain never measured yet (a bounded probe reaches it in a later update) takes the mean Δ of
        the domains measured now: until its first measurement it neither gains nor loses against them
        (a 0 there would favour every domain probed first, Δ being mostly negative)."""
        delta = self.last_delta.clone()
        delta[present] = values[present].to(torch.float64)
        unmeasured = ~self.measured & ~present
        if bool(present.any()) and bool(unmeasured.any()):
            delta[unmeasured] = delta[present].mean()
        self.measured |= present
        self.last_delta = delta
        return delta.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"last_delta": self.last_delta.clone(), "measured": self.measured.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "last_delta" not in state:
            raise TandemError(f"{self.name} state_dict: missing key 'last_delta'")
        last = torch.as_tensor(state["last_delta"], dtype=torch.float64)
        if last.shape != (self.num_domains,):
            raise TandemError(
                f"{self.name} state_dict: last_delta has shape {tuple(last.shape)}, expected ({self.num_domains},)"
            )
        self.last_delta = last.clone()
        # a state from before bounded probes: every probe held every domain, so each was measured
        self.measured = torch.as_tensor(state.get("measured", torch.ones(self.num_domains, dtype=torch.bool)),
                                        dtype=torch.bool).clone()
