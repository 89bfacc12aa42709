"""The interface every mixture learner implements: a hypergradient Δ per domain.

The recipe's loop is the same for every learner (METHOD.md, "Algorithm"):

    for each episode of E steps:
        estimator.begin_episode()                   # TANDEM: sync w <- u
        for k in range(E):
            proxy step on an α-weighted train batch
            if k < K: estimator.probe_step(train_batch, val_batch)   # TANDEM: one reference step
            if k == K - 1:
                Δ = estimator.delta(probe_batch, scale)   # (M,), one value per domain
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
    def delta(self, probe_batch, scale: float = 1.0) -> torch.Tensor:
        """Δ, shape (M,) float64, identical on every rank (reduce across ranks before returning); each
        value measured now is multiplied by ``scale`` (a factor of the steps it was measured over)."""

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


#: mixture.carry_delta: what a domain absent from Δ's probe (a bounded probe holds D of M in turns) contributes
CARRY_MODES = ("neutral", "last")


class PerDomainSignalEstimator(HypergradientEstimator):
    """An estimator whose Δ is a per-domain signal measured on the probe batch.

    ``delta(probe, scale)`` multiplies each measured value by ``scale`` *when it is measured* (TANDEM's
    ``mixture.delta_scale: lr`` factor of the K probing steps it came from), so a value carried to a later
    update keeps the factor of its own measurement.

    A domain may be absent from a probe batch (a bounded probe, or no target tokens in it). What it then
    contributes to the α step is ``carry`` ([project], METHOD.md "Δ's probe at many domains"):

    - ``neutral`` (default): the mean Δ of the domains measured now. The α step ignores a shift shared by
      every domain, so an absent domain neither gains nor loses against the probed ones: each measurement
      moves α once, at the update it was made, and no old measurement is re-applied until the domain's
      next turn.
    - ``last``: its last measured (scaled) Δ, re-applied at every update until its next turn (up to
      ceil(M / D) times for one measurement; the behaviour before issue 25).

    A domain never measured yet takes the mean Δ of the domains measured now in both modes (a 0 there would
    favour every domain probed first, Δ being mostly negative). The last measured Δ is the state a resumed
    run needs.
    """

    def __init__(self, num_domains: int, carry: str = "neutral"):
        if carry not in CARRY_MODES:
            raise TandemError(f"mixture.carry_delta: expected one of {CARRY_MODES}, got {carry!r}")
        self.num_domains = num_domains
        self.carry = carry
        self.last_delta = torch.zeros(num_domains, dtype=torch.float64)
        self.measured = torch.zeros(num_domains, dtype=torch.bool)  # has a Δ of its own been measured yet
        self.present = torch.zeros(num_domains, dtype=torch.bool)  # measured at the last update

    def _merge(self, values: torch.Tensor, present: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The Δ of this update: ``scale * values`` where ``present``, ``carry`` elsewhere."""
        measured_now = values[present].to(torch.float64) * float(scale)
        self.last_delta[present] = measured_now
        fill = measured_now.mean() if measured_now.numel() else torch.tensor(0.0, dtype=torch.float64)
        if self.carry == "neutral":
            delta = torch.full_like(self.last_delta, float(fill))
        else:
            delta = self.last_delta.clone()
            delta[~self.measured & ~present] = fill
        delta[present] = measured_now
        self.measured |= present
        self.present = present.clone()
        return delta

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
