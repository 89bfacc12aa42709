"""TANDEM's hypergradient: Δ_m = γ · (L^m(w_K) − L^m(u_K)).

The reference w sees the validation data the proxy u does not (METHOD.md): at each of the K probing
steps, after the proxy's step on the α-weighted train batch, w steps on the *same* train batch (paired,
so that the twins differ only by the validation signal) plus a validation batch, minimising
β L_val(w) + γ L_train(α, w) (β = ``validation_weight``, 1 in the paper). How the two gradients are
combined is ``reference_step`` ([project], METHOD.md "The reference's step"):

- ``split`` (default): the train gradient takes exactly the proxy's step (same clipping, same AdamW
  state, synced at each episode), then the validation gradient, clipped on its own, takes a step of
  size lr_w · β / γ preconditioned by that AdamW's second moment (the proxy's curvature estimate),
  each coordinate's step at most lr_w · β / γ.
  With β = 0 the reference's steps are the proxy's bit for bit and Δ = 0 exactly. Why: under AdamW
  and clipping a summed gradient is renormalised as a whole, so the reference takes about half a train
  step and half a val step; Δ then carries a "w trained less on train" term that penalises the domains
  with the largest α, whatever the validation data says.
- ``joint``: one clipped AdamW step on ∇(β L_val + γ L_train), the paper's formula taken literally.

At step K both twins are evaluated on one paired probe batch (the same train tokens of every domain for
both), per-domain loss sums and counts are all-reduced across ranks, and

    Δ_m = γ · (L^m(w) − L^m(u))

A domain whose loss drops more in w than in u (Δ_m < 0) helps the validation objective: α_m grows.
With ``delta_difference: central`` ([project], METHOD.md "Δ as a central difference"; the SFT and
data-restricted default)

    Δ_m = γ · (L^m(w) − L^m(2u − w)) / 2

the reference against its reflection through the proxy (the same steps taken backwards): the one-sided
difference carries the steps' curvature ½ δᵀH_mδ, positive for every domain and largest where the model is
most sensitive, and in SFT it outweighed the first-order term; the central one cancels every even order.
Each measured Δ_m is multiplied by the ``mixture.delta_scale`` factor of its own K probing steps when it is
measured. A domain absent from the probe batch (a bounded probe, ``mixture.probe_budget``, holds D of the M
domains in turns) contributes ``mixture.carry_delta`` (base.py; default: neutral, no NaN reaches α). Δ's noise is measured at every update:
``delta_agreement``, the centred cosine between the Δ of the probe batch's two halves. Under a bounded
probe each half's Δ is centred over the domains of its own probe and carried over for the absent ones,
and the cosine is taken over every domain measured so far: over the D probed domains alone it would be
±1 at D = 2, and uncentred carried values would agree through the drift of Δ's level between updates,
which both halves share. With the full probe this is the plain centred cosine of the two halves.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tandem_components.distributed.collectives import all_reduce_sum, local_shard
from tandem_components.errors import TandemError
from tandem_components.estimators.base import DEFAULT_FIT_DECAY, PerDomainSignalEstimator
from tandem_components.training.domain_loss import DomainLosses, model_domain_losses
from tandem_components.training.twins import TwinModels

#: mixture.reference_step: how the reference combines its train and validation gradients
REFERENCE_STEPS = ("split", "joint")
#: mixture.delta_difference: L(w) - L(u), the paper's | [L(w) - L(2u - w)] / 2, the val step's curvature cancelled
DELTA_DIFFERENCES = ("forward", "central")
#: mixture.delta_scale: Δ as measured, or normalised by the lr of its probing steps (recipes/pretrain.py)
DELTA_SCALES = ("none", "lr")


def delta_agreement(a: torch.Tensor, b: torch.Tensor, present: torch.Tensor) -> float:
    """cos(Δ, Δ̃) of two independent estimates (the paper's Figure 8 measure of Δ's noise), over the
    domains both saw, each centred first: the simplex update ignores a shift shared by all domains, and
    that shift (Δ is mostly negative for every domain) would make two pure-noise estimates look aligned.
    1: the two halves of the probe agree on which domains to favour; ~0: Δ is mostly noise. NaN when
    fewer than two domains are in both halves or a half is constant."""
    a, b = a[present].double(), b[present].double()
    if a.numel() < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    norm = a.norm() * b.norm()
    return max(-1.0, min(1.0, float(a @ b / norm))) if norm > 0 else float("nan")  # rounding: |cos| <= 1


class TandemEstimator(PerDomainSignalEstimator):
    name = "tandem"
    uses_validation_batches = True

    def __init__(
        self,
        twins: TwinModels,
        num_domains: int,
        gamma: float = 1.0,
        max_grad_norm: float | None = None,
        reference_step: str = "split",
        validation_weight: float = 1.0,
        forward: Callable[..., DomainLosses] = model_domain_losses,
        probe_micro_batch: int | None = None,
        carry: str = "neutral",
        num_val_domains: int | None = None,
        delta_difference: str = "forward",
        fit_decay: float = DEFAULT_FIT_DECAY,
    ):
        super().__init__(num_domains, carry=carry, fit_decay=fit_decay)
        if delta_difference not in DELTA_DIFFERENCES:
            raise TandemError(f"mixture.delta_difference: expected one of {DELTA_DIFFERENCES}, got {delta_difference!r}")
        self.delta_difference = delta_difference
        # the validation batches' domains: the M training domains, then any target (val-only) domains
        self.num_val_domains = int(num_val_domains or num_domains)
        # The paired probe batch holds M x probe_seqs_per_domain sequences (7x a training batch in the
        # tiny config): forwarding it in pieces keeps stage 1's peak memory near two models' worth.
        self.probe_micro_batch = probe_micro_batch
        self.twins = twins
        if reference_step not in REFERENCE_STEPS:
            raise TandemError(f"mixture.reference_step: expected one of {REFERENCE_STEPS}, got {reference_step!r}")
        if reference_step == "split" and not gamma > 0:
            raise TandemError(f"mixture.gamma: the split reference step needs γ > 0 (val step lr_w·β/γ), got {gamma}")
        self.gamma = float(gamma)
        self.max_grad_norm = max_grad_norm
        self.reference_step = reference_step
        self.validation_weight = float(validation_weight)
        self.forward = forward
        self.agreement = float("nan")  # delta_agreement of the last update
        # each half's last Δ per domain, centred over its own probe (NaN: not measured yet), for the agreement
        self.last_half_deltas = torch.full((2, num_domains), float("nan"), dtype=torch.float64)

    def begin_episode(self) -> None:
        self.twins.sync()

    def probe_step(self, train_batch, val_batch) -> dict[str, float]:
        """One reference step on β·L_val(w) + γ·L_train(α, w) (``reference_step`` says how)."""
        if self.reference_step == "joint":
            return self._joint_step(train_batch, val_batch)
        reference, optimizer = self.twins.reference, self.twins.reference_optimizer
        metrics = {}
        val_grads = None
        if self.validation_weight:  # the val gradient first, at the same w as the train gradient
            val = self.forward(reference, val_batch, self.num_val_domains)
            val.global_mean().backward()
            self._clip(reference)
            val_grads = [p.grad for p in reference.parameters()]
            optimizer.zero_grad(set_to_none=True)
            metrics["reference/val_loss"] = float(val.mean.detach())
        train = self.forward(reference, train_batch, self.num_domains)  # exactly the proxy's step
        train.global_mean().backward()
        self._clip(reference)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if val_grads is not None:
            self._preconditioned_step(val_grads, self.validation_weight / self.gamma)
        metrics["reference/train_loss"] = float(train.mean.detach())
        return metrics

    def _joint_step(self, train_batch, val_batch) -> dict[str, float]:
        reference, optimizer = self.twins.reference, self.twins.reference_optimizer
        train = self.forward(reference, train_batch, self.num_domains)
        val = self.forward(reference, val_batch, self.num_val_domains)
        loss = self.validation_weight * val.global_mean() + self.gamma * train.global_mean()
        loss.backward()
        self._clip(reference)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"reference/train_loss": float(train.mean.detach()), "reference/val_loss": float(val.mean.detach())}

    def _clip(self, model) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)

    @torch.no_grad()
    def _preconditioned_step(self, grads, scale: float) -> None:
        """w -= lr_w · scale · clamp(g / (sqrt(v̂) + eps), -1, 1), v̂ the reference AdamW's bias-corrected
        second moment (a plain lr_w · scale · g step for an optimizer without one). Shard-local under FSDP2."""
        optimizer = self.twins.reference_optimizer
        grad_of = dict(zip(self.twins.reference.parameters(), grads))
        for group in optimizer.param_groups:
            lr, eps = group["lr"], group.get("eps", 0.0)
            beta2 = group["betas"][1] if "betas" in group else None
            for p in group["params"]:
                g = grad_of.get(p)
                if g is None:
                    continue
                state = optimizer.state.get(p, {})
                if beta2 is not None and "exp_avg_sq" in state:
                    step = float(state["step"])
                    denom = (local_shard(state["exp_avg_sq"]) / (1 - beta2**step)).sqrt_().add_(eps)
                    # clamped: v̂ holds the train gradients only, and where they are ~0 (embeddings of
                    # tokens absent from the train batches) g_val / sqrt(v̂) is unbounded; |Adam's step|
                    # is about lr per coordinate, so the val step is held to that too
                    local_shard(p).add_((local_shard(g) / denom).clamp_(-1.0, 1.0), alpha=-lr * scale)
                else:
                    local_shard(p).add_(local_shard(g), alpha=-lr * scale)

    @torch.no_grad()
    def delta(self, probe_batch, scale: float = 1.0) -> torch.Tensor:
        """Δ on the whole probe batch, times ``scale`` (``mixture.delta_scale``'s factor of these K probing
        steps); also measures its noise as the agreement of two halves (below; a cosine: no scale)."""
        reference = self._probe_sums(self.twins.reference, probe_batch)
        if self.delta_difference == "central":  # L(u) is not needed: the reflection 2u - w takes its place
            self.twins.reflect_reference()  # w -> 2u - w: the val steps taken backwards
            other = self._probe_sums(self.twins.reference, probe_batch)
            self.twins.reflect_reference()  # and back (the next episode re-syncs w anyway)
        else:
            other = self._probe_sums(self.twins.proxy, probe_batch)
        # One collective for both halves; every rank then holds the same global sums. (half, row, domain):
        halves = all_reduce_sum(torch.stack([reference[:, 0], other[:, 0], reference[:, 1]], 1)).cpu()
        differences = halves[:, 0] - halves[:, 1]  # L(w) - L(u), the paper's, or L(w) - L(2u - w) ...
        if self.delta_difference == "central":
            differences = differences / 2  # ... halved: [L(w) - L(2u - w)] / 2, even orders cancel
        counts = halves[:, 2].sum(0)
        half_deltas = self.gamma * differences / halves[:, 2]
        both = (halves[:, 2] > 0).all(0)
        self.last_half_deltas[:, both] = half_deltas[:, both] - half_deltas[:, both].mean(1, keepdim=True)
        seen = ~self.last_half_deltas.isnan().any(0)
        self.agreement = delta_agreement(self.last_half_deltas[0], self.last_half_deltas[1], present=seen)
        return self._merge(self.gamma * differences.sum(0) / counts, present=counts > 0, scale=scale)

    def _probe_sums(self, model, probe_batch) -> torch.Tensor:
        """(half, [loss sums, token counts], domain) of ``model`` on the probe batch's two halves (alternate
        rows: each domain's sequences split evenly), forwarded in pieces of ``probe_micro_batch`` rows."""
        out = torch.zeros(2, 2, self.num_domains, dtype=torch.float64, device=probe_batch.tokens.device)
        for half, rows in enumerate((slice(0, None, 2), slice(1, None, 2))):
            for chunk in probe_batch.rows(rows).chunks(self.probe_micro_batch or probe_batch.tokens.shape[0]):
                losses = self.forward(model, chunk, self.num_domains)
                out[half] += torch.stack([losses.sums, losses.counts]).double()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_half_deltas": self.last_half_deltas.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # a state from before bounded probes: the next update measures every domain's halves anew
        default = torch.full((2, self.num_domains), float("nan"), dtype=torch.float64)
        self.last_half_deltas = torch.as_tensor(state.get("last_half_deltas", default), dtype=torch.float64).clone()

    def diagnostics(self) -> dict[str, float]:
        return {"delta_agreement": self.agreement}

    def hyperparameters(self) -> dict:
        return {"gamma": self.gamma, "reference_step": self.reference_step,
                "validation_weight": self.validation_weight,
                "delta_difference": self.delta_difference}

