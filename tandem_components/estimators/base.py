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
CARRY_MODES = ("neutral", "last", "fitted")
#: mixture.fit_decay (carry_delta: fitted): the fit's weight on a measurement one pass over the domains older
DEFAULT_FIT_DECAY = 0.9


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
    - ``fitted``: every domain, measured now or not, gets its value in a least-squares fit of all the
      measurements so far, Δ_m(t) = θ_m + b_t + noise (b_t: the level shared by the domains probed at update
      t, which the α step ignores), each past update's equations down-weighted by ``fit_decay`` per update.
      The Δ returned is θ̂, centred (per connected group of domains compared so far; 0 for a domain never
      measured). Why: under ``neutral`` a bounded probe moves a domain only against the partners it drew, so
      its α carries the luck of the draw (a copy of the target's text paired with junk rises, one paired with
      another copy barely moves), and Δ's pull reaches each domain (D - 1) / (M - 1) as often as with the
      full probe while ``mixture.repetition_price`` acts at every update. The fit compares every pair,
      directly or through chains of probes, and moves every domain at every update; with the full probe
      it is the exponential average of the centred Δ (``mixture.momentum`` then belongs at 0: the fit is
      the average). docs/METHOD.md "Δ's probe at many domains".

    A domain never measured yet takes the mean Δ of the domains measured now in ``neutral`` and ``last`` (a
    0 there would favour every domain probed first, Δ being mostly negative). The last measured Δ (and the
    fit's normal equations) are the state a resumed run needs.
    """

    def __init__(self, num_domains: int, carry: str = "neutral", fit_decay: float = DEFAULT_FIT_DECAY):
        if carry not in CARRY_MODES:
            raise TandemError(f"mixture.carry_delta: expected one of {CARRY_MODES}, got {carry!r}")
        if not 0.0 <= float(fit_decay) < 1.0:
            raise TandemError(f"mixture.fit_decay: expected 0 <= fit_decay < 1, got {fit_decay!r}")
        self.num_domains = num_domains
        self.carry = carry
        self.fit_decay = float(fit_decay)
        # the fit's normal equations, sum_t decay^(T-t) P_t theta = sum_t decay^(T-t) P_t Δ(t), P_t the centring
        # projection on the domains of probe t (carry_delta: fitted)
        self.fit_matrix = torch.zeros(num_domains, num_domains, dtype=torch.float64)
        self.fit_vector = torch.zeros(num_domains, dtype=torch.float64)
        self.last_delta = torch.zeros(num_domains, dtype=torch.float64)
        self.measured = torch.zeros(num_domains, dtype=torch.bool)  # has a Δ of its own been measured yet
        self.present = torch.zeros(num_domains, dtype=torch.bool)  # measured at the last update

    def _merge(self, values: torch.Tensor, present: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The Δ of this update: ``scale * values`` where ``present``, ``carry`` elsewhere."""
        measured_now = values[present].to(torch.float64) * float(scale)
        self.last_delta[present] = measured_now
        self.measured |= present
        self.present = present.clone()
        if self.carry == "fitted":
            return self._fit(measured_now, present)
        fill = measured_now.mean() if measured_now.numel() else torch.tensor(0.0, dtype=torch.float64)
        if self.carry == "neutral":
            delta = torch.full_like(self.last_delta, float(fill))
        else:
            delta = self.last_delta.clone()
            delta[~self.measured & ~present] = fill
        delta[present] = measured_now
        return delta

    def _fit(self, measured_now: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """θ̂ of ``carry_delta: fitted``: add this probe's centred equations, decay the old ones, solve."""
        ids = present.nonzero().flatten()
        centring = torch.zeros(self.num_domains, self.num_domains, dtype=torch.float64)
        if len(ids):
            centring[ids[:, None], ids] = torch.eye(len(ids), dtype=torch.float64) - 1.0 / len(ids)
        values = torch.zeros(self.num_domains, dtype=torch.float64)
        values[present] = measured_now
        self.fit_matrix = self.fit_decay * self.fit_matrix + centring
        self.fit_vector = self.fit_decay * self.fit_vector + centring @ values
        # the minimum-norm solution: centred over each group of domains the probes have linked, 0 elsewhere
        return torch.linalg.pinv(self.fit_matrix, hermitian=True, rtol=1e-10) @ self.fit_vector

    def state_dict(self) -> dict[str, Any]:
        return {"last_delta": self.last_delta.clone(), "measured": self.measured.clone(),
                "fit_matrix": self.fit_matrix.clone(), "fit_vector": self.fit_vector.clone()}

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
        # a state from before carry_delta: fitted: the fit starts from the next measurement
        self.fit_matrix = torch.as_tensor(state.get("fit_matrix", torch.zeros(self.num_domains, self.num_domains)),
                                          dtype=torch.float64).clone()
        self.fit_vector = torch.as_tensor(state.get("fit_vector", torch.zeros(self.num_domains)),
                                          dtype=torch.float64).clone()
