"""TANDEM's hypergradient: Δ_m = γ · (L^m(w_K) − L^m(u_K)).

The reference w sees the validation data the proxy u does not (METHOD.md): at each of the K probing
steps, after the proxy's step on the α-weighted train batch, w takes one step on

    ∇ L_val(w) + γ ∇ L_train(α, w)

on the *same* train batch (paired, so that the twins differ only by the validation signal) plus a
validation batch. At step K both twins are evaluated on one paired probe batch (the same train tokens
of every domain for both), per-domain loss sums and counts are all-reduced across ranks, and

    Δ_m = γ · (L^m(w) − L^m(u))

A domain whose loss drops more in w than in u (Δ_m < 0) helps the validation objective: α_m grows.
A domain absent from the probe batch keeps its previous Δ (no NaN reaches α).
"""

from __future__ import annotations

from typing import Callable

import torch

from tandem_components.distributed import all_reduce_sum
from tandem_components.domain_loss import DomainLosses, model_domain_losses
from tandem_components.estimators.base import PerDomainSignalEstimator
from tandem_components.twins import TwinModels


class TandemEstimator(PerDomainSignalEstimator):
    name = "tandem"
    uses_validation_batches = True

    def __init__(
        self,
        twins: TwinModels,
        num_domains: int,
        gamma: float = 1.0,
        max_grad_norm: float | None = None,
        forward: Callable[..., DomainLosses] = model_domain_losses,
        probe_micro_batch: int | None = None,
    ):
        super().__init__(num_domains)
        # The paired probe batch holds M x probe_seqs_per_domain sequences (7x a training batch in the
        # tiny config): forwarding it in pieces keeps stage 1's peak memory near two models' worth.
        self.probe_micro_batch = probe_micro_batch
        self.twins = twins
        self.gamma = float(gamma)
        self.max_grad_norm = max_grad_norm
        self.forward = forward

    def begin_episode(self) -> None:
        self.twins.sync()

    def probe_step(self, train_batch, val_batch) -> dict[str, float]:
        """One reference step on γ·L_train(α, w) + L_val(w)."""
        reference, optimizer = self.twins.reference, self.twins.reference_optimizer
        train = self.forward(reference, train_batch, self.num_domains)
        val = self.forward(reference, val_batch, self.num_domains)
        loss = val.mean + self.gamma * train.mean
        loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(reference.parameters(), self.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"reference/train_loss": float(train.mean.detach()), "reference/val_loss": float(val.mean.detach())}

    @torch.no_grad()
    def delta(self, probe_batch) -> torch.Tensor:
        stats = 0  # rows: reference loss sums, proxy loss sums, token counts (per domain)
        for chunk in probe_batch.chunks(self.probe_micro_batch or probe_batch.tokens.shape[0]):
            ref = self.forward(self.twins.reference, chunk, self.num_domains)
            prx = self.forward(self.twins.proxy, chunk, self.num_domains)
            stats = stats + torch.stack([ref.sums, prx.sums, ref.counts])
        # One collective for all three vectors; every rank then holds the same global sums.
        stats = all_reduce_sum(stats)
        ref_sums, prx_sums, counts = stats.cpu().unbind(0)
        return self._merge(self.gamma * (ref_sums - prx_sums) / counts, present=counts > 0)

    def hyperparameters(self) -> dict:
        return {"gamma": self.gamma}

