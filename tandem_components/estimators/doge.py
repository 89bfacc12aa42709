"""DoGE's per-domain signal: alignment of each domain's training gradient with the validation gradient.

Fan et al. 2023, "DoGE: Domain Reweighting with Generalization Estimation" (arXiv 2310.15393).
DoGE asks how one proxy step under α would change the validation loss. With the look-ahead step
u' = u − η Σ_m α_m ∇L^m(u) and a first-order expansion,

    L_val(u') ≈ L_val(u) − η Σ_m α_m ⟨∇L^m(u), ∇L_val(u)⟩
    ∂ L_val(u') / ∂α_m ≈ −η ⟨∇L^m(u), ∇L_val(u)⟩

so, folding the proxy's step size η into lr_α,

    Δ_m = −⟨∇L^m_train(u), ∇L_val(u)⟩

A domain whose gradient points the same way as the validation gradient (its step lowers L_val) gets a
negative Δ and gains weight (base.py's convention: α moves against Δ). This is the paper's
"generalization estimation" score W_m with the opposite sign.

Cost: one validation forward/backward plus one forward/backward *per domain present in the probe batch*
(M backward passes per update, no second model): METHOD.md's "2CT + per-domain gradients". ∇L^m is the
token-mean loss gradient on domain m's rows of the probe batch; ∇L_val on one batch from ``val_batches()``.
Dot products run over all trainable parameters and accumulate in float64.

The proxy's training is not disturbed: the ``.grad`` of every parameter is saved before and put back
after (whatever it was: None, or a gradient being accumulated), and no optimizer is touched.

Distributed (FSDP2): after ``backward`` each rank's ``.grad`` holds its shard of the gradient already
reduced (averaged) over ranks, so the local dot product over the shard summed with ``all_reduce_sum``
is the exact dot product of the global gradients; in one process it is just the dot product. Because
FSDP2's backward is collective, every rank must run the same sequence of backward passes: a domain is
processed when it is present on *any* rank (token counts are all-reduced first), and a rank that holds
no rows of it runs the backward with a zero-weighted loss on its whole probe batch (its gradient
contribution is zero). FSDP2 averages over all W ranks, so such a domain's dot product is rescaled by
W / (number of ranks holding it): the mean over the ranks that hold it, exact when they hold equal
token counts (the per-domain probe sampler gives every rank the same rows per domain). A distributed
proxy must be FSDP2-sharded (DTensor parameters): with replicated parameters (DDP) every rank would
hold the whole gradient and the sum over ranks would count it W times, so that is refused.

Settings in the stage-1 config's ``mixture`` section (the paper updates α by exponentiated gradient too)::

    learner: doge
    update: exponentiated_gradient
    lr: 0.1             # lr_α, sized from the measured scale of Δ (below); re-measure for a real model

Scale: ⟨∇L^m, ∇L_val⟩ is in nats² per unit parameter step; it depends on the model, the batch sizes and
the training phase (gradients shrink as the proxy trains). Measured on the 1-layer tiny decoder of
tests/helpers.py (vocab 64, width 32, 16-token windows, 8 probe rows per domain, val batch of 8, three
patterned domains with 30% token noise, AdamW lr 3e-3): |Δ_m| ≈ 0.1-0.9 at initialisation (≈ 5 for
the aligned domain on the noise-free domains of the tests with a one-domain validation set) and
≈ 0.01-0.5 after 30-300 proxy steps, noisy (signs flip between probe batches), with differences between
domains of the same order as Δ itself. An exponentiated-gradient step moves α_m by about
α_m · lr_α · (Δ_m − Σ_k α_k Δ_k), so lr_α ≈ 0.05-0.2 moves α by about 0.01 per update there. These are
starting points: log Δ and re-size lr_α for a real model (the paper's own α step multiplies this score
by the proxy's learning rate η, which we fold into lr_α).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from tandem_components.distributed.collectives import all_reduce_sum, local_shard, rank_and_world_size
from tandem_components.errors import TandemError
from tandem_components.estimators.base import DEFAULT_FIT_DECAY, PerDomainSignalEstimator
from tandem_components.training.domain_loss import IGNORE_INDEX, DomainLosses, model_domain_losses


class DoGEEstimator(PerDomainSignalEstimator):
    """Δ_m = −⟨∇L^m(u), ∇L_val(u)⟩, per-domain gradient alignment (DoGE, Fan et al. 2023).

    Args:
        proxy: the proxy u being trained. Its gradients are computed and discarded; its ``.grad`` is
            restored afterwards, its optimizer is never called.
        num_domains: M.
        val_batches: returns the next validation batch (a ``data.Batch`` on the proxy's device), one
            per ``delta`` call. It is drawn here, not by the recipe's probing loop, hence
            ``uses_validation_batches = False``; its sampler's state is the caller's to checkpoint.
        forward: ``(model, batch, M) -> DomainLosses``; ``.mean`` is what is differentiated.
    """

    name = "doge"
    uses_validation_batches = False

    def __init__(
        self,
        proxy: nn.Module,
        num_domains: int,
        val_batches: Callable[[], Any],
        forward: Callable[..., DomainLosses] = model_domain_losses,
        carry: str = "neutral",
        num_val_domains: int | None = None,
        fit_decay: float = DEFAULT_FIT_DECAY,
    ):
        if not callable(val_batches):
            kind = type(val_batches).__name__
            raise TandemError(f"doge: val_batches must be a callable returning a batch, got {kind}")
        self.proxy = proxy
        super().__init__(int(num_domains), carry=carry, fit_decay=fit_decay)
        self.val_batches = val_batches
        self.num_val_domains = int(num_val_domains or num_domains)  # training domains, then any targets
        self.forward = forward

    def _domain_holders(self, probe_batch, device) -> torch.Tensor:
        """(M,) float64: how many ranks hold at least one target token of each domain (0 = absent)."""
        valid = (probe_batch.labels != IGNORE_INDEX).sum(dim=1).double().to(device)
        counts = torch.zeros(self.num_domains, dtype=torch.float64, device=device)
        counts.index_add_(0, probe_batch.domain_ids.to(device), valid)
        return all_reduce_sum((counts > 0).double()).cpu()

    def alignments(self, probe_batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Global ⟨∇L^m, ∇L_val⟩ per domain, (M,) float64 (0 where absent), and the (M,) bool presence mask."""
        params = [p for p in self.proxy.parameters() if p.requires_grad]
        world = rank_and_world_size()[1]
        if world > 1 and not all(hasattr(p, "to_local") for p in params):
            raise TandemError("doge: a distributed proxy must be FSDP2-sharded (its parameters DTensors)")
        saved = [p.grad for p in params]
        try:
            with torch.enable_grad():
                for p in params:
                    p.grad = None
                val = self.forward(self.proxy, self.val_batches(), self.num_val_domains)
                val.mean.backward()
                # keep the validation gradient by reference (no copy); the next backward allocates anew
                val_grads = [None if p.grad is None else local_shard(p.grad).detach() for p in params]
                device = val.mean.device
                holders = self._domain_holders(probe_batch, device)
                present = holders > 0
                dots = torch.zeros(self.num_domains, dtype=torch.float64, device=device)
                domain_ids = probe_batch.domain_ids.to(probe_batch.tokens.device)
                for m in torch.nonzero(present).flatten().tolist():
                    for p in params:
                        p.grad = None
                    rows = torch.nonzero(domain_ids == m).flatten()
                    if rows.numel() > 0:
                        loss = self.forward(self.proxy, probe_batch.rows(rows), self.num_domains).mean
                    else:  # present on another rank only: take part in FSDP's collectives, contribute 0
                        loss = 0.0 * self.forward(self.proxy, probe_batch, self.num_domains).mean
                    loss.backward()
                    dot = torch.zeros((), dtype=torch.float64, device=device)
                    for p, g_val in zip(params, val_grads):
                        if p.grad is not None and g_val is not None:
                            dot += torch.sum(local_shard(p.grad).double() * g_val.double())
                    dots[m] = dot * (world / holders[m].item())  # FSDP2 averaged over all W ranks
                all_reduce_sum(dots)
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        return dots.cpu(), present

    def delta(self, probe_batch, scale: float = 1.0) -> torch.Tensor:
        dots, present = self.alignments(probe_batch)
        return self._merge(-dots, present, scale)

    def hyperparameters(self) -> dict[str, Any]:
        return {"signal": "gradient_alignment", "val_batches_per_update": 1}

