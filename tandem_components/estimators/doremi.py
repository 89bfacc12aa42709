"""DoReMi's per-domain signal: the clipped per-token excess loss of the proxy over a frozen reference.

Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining"
(arXiv 2305.10429), Algorithm 1. A reference model is trained *once* on a fixed reference mixture
(uniform by default) and then frozen; while the proxy u trains, every update measures, per domain m,

    λ_m = (1 / |m|) Σ_{tokens x of domain m}  max(ℓ_u(x) − ℓ_ref(x), 0)         (nats/token)

on the probe batch, and the paper steps

    α <- α · exp(η λ) / Z,     α <- (1 − c) α + c / M

Here the clip is per TOKEN, as in the paper: a domain with tokens the proxy already fits better than
the reference (negative excess) and tokens it fits worse is scored by the worse ones only. This differs
from clipping the per-domain mean, which is why the estimator needs per-token losses of both models
rather than the per-domain sums of ``domain_loss.domain_losses``.

In our framework (base.py's convention: α moves against Δ) this is

    Δ_m = −λ_m          (more excess -> more weight)

and the settings that reproduce DoReMi are, in the stage-1 config's ``mixture`` section::

    learner: doremi
    update: exponentiated_gradient   # α <- α exp(−lr Δ) / Z = α exp(η λ) / Z
    lr: 1.0                          # η = 1 (paper)
    smoothing: 1.0e-3                # c = 1e-3 (paper)

and in the stage-2 config ``mixture.use: average``: DoReMi's output is the trajectory average ᾱ of
the export, not the last α.

Scale: λ is in nats/token. Measured on the 1-layer tiny decoder of tests/helpers.py (three patterned
domains with 30% token noise, reference trained 300 AdamW steps on the uniform mixture, proxy trained on
α = (0.6, 0.3, 0.1)): λ_m ≈ 2.1-2.5 for an untrained proxy, 0.5-0.9 after 30 proxy steps and 0.1-0.3
after 300, ordered as expected (the least-trained domain has the largest excess). With η = 1 one step
then changes α_m by a factor exp(λ_m − Σ_k α_k λ_k), i.e. tens of percent per update: DoReMi relies on
smoothing and on exporting ᾱ, not on a small η.

Differences from the original, by design of this framework:

- Original DoReMi samples the proxy's batches *uniformly* and reweights the proxy's per-domain losses
  by α. Here the proxy's batches are *sampled by α* (the loader reads α), which gives the same
  objective in expectation (E_{m~α}[L^m] = Σ_m α_m L^m) with higher variance for small α_m.
- Original DoReMi takes one α step per proxy step on the training batch itself; here Δ is measured on
  the recipe's paired per-domain probe batch once per episode (E = K = 1 recovers one step per step).

Δ is computed identically on every rank: per-domain sums of clipped excess and token counts are
all-reduced before dividing. A domain with no tokens in the probe batch keeps its previous Δ.
The reference costs memory (one more model, no optimizer state) and one forward per update: the
paper's "3CT" cost (reference training + proxy + reference forward) in METHOD.md's cost table.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from tandem_components.distributed.collectives import all_reduce_sum
from tandem_components.errors import TandemError
from tandem_components.estimators.base import DEFAULT_FIT_DECAY, PerDomainSignalEstimator
from tandem_components.training.domain_loss import IGNORE_INDEX, per_token_loss

log = logging.getLogger(__name__)


def model_token_losses(model: nn.Module, batch) -> torch.Tensor:
    """(B, T) float32 per-token cross-entropy of ``batch`` (a ``data.Batch``); 0 at ignored labels."""
    return per_token_loss(model(batch.tokens), batch.labels)


def freeze(model: nn.Module) -> nn.Module:
    """Freeze ``model`` in place: no parameter requires grad, eval mode. Returns it.

    DoReMi's reference is trained once and never stepped again: with ``requires_grad`` off no optimizer
    step can move it (a gradient is never populated) and no backward pass pays for it.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


class DoReMiEstimator(PerDomainSignalEstimator):
    """Δ_m = −mean_{tokens of m} max(ℓ_u − ℓ_ref, 0) on the probe batch (DoReMi, Xie et al. 2023).

    Args:
        proxy: the proxy u being trained (only read: forward passes under ``no_grad``).
        reference: the reference model, already trained on the reference mixture. Frozen here
            (``freeze``): requires_grad False, eval mode; this estimator never steps it.
        num_domains: M.
        token_losses: ``(model, batch) -> (B, T)`` per-token loss, 0 where the label is ignored.
            Replaces ``forward=model_domain_losses`` of the other estimators, because the per-token
            clip needs token-level losses of both models (per-domain sums are too coarse).
        reference_path: where the reference's weights were loaded from; recorded in the provenance and
            in ``state_dict`` (the recipe loads the weights, this class only records the path).
    """

    name = "doremi"
    uses_validation_batches = False

    def __init__(
        self,
        proxy: nn.Module,
        reference: nn.Module,
        num_domains: int,
        token_losses: Callable[[nn.Module, Any], torch.Tensor] = model_token_losses,
        reference_path: str | None = None,
        carry: str = "neutral",
        fit_decay: float = DEFAULT_FIT_DECAY,
    ):
        if proxy is reference:
            raise TandemError("doremi: the reference must be a separate model from the proxy (got the same object)")
        proxy_params = {id(p) for p in proxy.parameters()}
        if any(id(p) in proxy_params for p in reference.parameters()):
            raise TandemError("doremi: the reference shares parameters with the proxy; it must be a separate copy")
        self.proxy = proxy
        self.reference = freeze(reference)
        super().__init__(int(num_domains), carry=carry, fit_decay=fit_decay)
        self.token_losses = token_losses
        self.reference_path = None if reference_path is None else str(reference_path)

    @torch.no_grad()
    def excess_loss(self, probe_batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (all-reduced) per-domain sums of clipped per-token excess loss and token counts.

        Returns:
            sums: (M,) float64, Σ over domain m's tokens of max(ℓ_u − ℓ_ref, 0), in nats.
            counts: (M,) float64, number of target tokens of domain m.
        """
        proxy_loss = self.token_losses(self.proxy, probe_batch)
        self.reference.eval()  # a caller may have flipped it back to train mode (e.g. model.train() on a parent)
        reference_loss = self.token_losses(self.reference, probe_batch)
        valid = (probe_batch.labels != IGNORE_INDEX).to(proxy_loss.dtype)
        # per-token clip (paper, Alg. 1), ignored tokens contribute 0 to both sum and count
        excess = (proxy_loss.float() - reference_loss.float()).clamp_min(0.0) * valid
        device = proxy_loss.device
        stats = torch.zeros(2, self.num_domains, dtype=torch.float64, device=device)
        domain_ids = probe_batch.domain_ids.to(device)
        stats[0].index_add_(0, domain_ids, excess.sum(dim=1).double())
        stats[1].index_add_(0, domain_ids, valid.sum(dim=1).double())
        all_reduce_sum(stats)  # one collective: every rank then holds the same global sums
        sums, counts = stats.cpu().unbind(0)
        return sums, counts

    def delta(self, probe_batch, scale: float = 1.0) -> torch.Tensor:
        sums, counts = self.excess_loss(probe_batch)
        present = counts > 0
        return self._merge(-(sums / counts), present, scale)

    def hyperparameters(self) -> dict[str, Any]:
        return {"signal": "clipped_token_excess_loss", "reference_path": self.reference_path}

    def state_dict(self) -> dict[str, Any]:
        """Tensors and strings only (``torch.load(weights_only=True)``); the reference's weights are not
        in here: they are a file of their own, named by ``reference_path``."""
        return {**super().state_dict(), "reference_path": self.reference_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        saved_path = state.get("reference_path")
        if saved_path is not None and self.reference_path is not None and saved_path != self.reference_path:
            # not an error: the file may have moved; but Δ is only comparable across the resume if it is the same model
            log.warning(f"doremi: resuming with reference {self.reference_path!r}, checkpoint recorded {saved_path!r}")
        if self.reference_path is None:
            self.reference_path = saved_path
