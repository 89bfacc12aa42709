"""Per-domain losses from ONE forward pass.

A batch mixes domains; each sample carries its domain id. The per-token cross-entropy is summed per
sample, then segment-reduced into per-domain sums and token counts with ``index_add`` (no Python loop
over domains). Sums and counts, rather than means, are returned so that they can be all-reduced across
ranks before dividing (α must be identical on every rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tandem_components.data.batch import IGNORE_INDEX
from tandem_components.distributed.collectives import all_reduce_sum, rank_and_world_size


@dataclass
class DomainLosses:
    """Losses of one batch.

    Attributes:
        mean: scalar, token-mean cross-entropy over the whole batch (differentiable: what is trained on).
        sums: (M,) float64, summed per-token loss of each domain (detached).
        counts: (M,) float64, number of target tokens of each domain.
    """

    mean: torch.Tensor
    sums: torch.Tensor
    counts: torch.Tensor

    def per_domain(self) -> torch.Tensor:
        """(M,) mean loss per domain in nats/token; NaN for a domain with no tokens in the batch."""
        return self.sums / self.counts  # 0/0 -> NaN marks "domain absent", callers decide what to do

    def global_mean(self) -> torch.Tensor:
        """What a step differentiates: this rank's share of the token mean over the GLOBAL batch
        (``reduce_global``'s first half)."""
        return self.reduce_global()[0]

    def reduce_global(self) -> tuple[torch.Tensor, float]:
        """(what a step differentiates, the global batch's token-mean loss), with one all-reduce.

        FSDP2 averages gradients over the N ranks, so each rank differentiates ``local_sum * N /
        global_count``. With the same number of target tokens on every rank (pretraining's windows) the
        factor is exactly 1 and this is ``mean``; SFT's rows differ in length, and the plain local mean
        would weight a rank's tokens by 1 / its own count, so the same config would learn another α on 2
        ranks than on 1. The loss is the same float on every rank: a NaN on any rank is seen by all of
        them, so they stop together. In one process: ``mean`` and its value.
        """
        _, world_size = rank_and_world_size()
        if world_size == 1:
            return self.mean, float(self.mean.detach())
        local_count = self.counts.sum()
        # float64: this rank's loss sum (from ``mean``, what is differentiated: its NaN is the one that
        # matters) and token count
        stats = torch.stack([self.mean.detach().double() * local_count, local_count])
        all_reduce_sum(stats)
        total = stats[1].clamp_min(1.0)
        objective = self.mean * (local_count * world_size / total).to(self.mean.dtype)
        return objective, float(stats[0] / total)


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T) cross-entropy in float32; 0 where ``labels == IGNORE_INDEX``."""
    b, t, v = logits.shape
    loss = F.cross_entropy(
        logits.reshape(b * t, v).float(), labels.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return loss.view(b, t)


def domain_losses(
    logits: torch.Tensor, labels: torch.Tensor, domain_ids: torch.Tensor, num_domains: int
) -> DomainLosses:
    """Loss of a mixed batch, overall (for backward) and per domain (for Δ and logging).

    Args:
        logits: (B, T, V) model outputs.
        labels: (B, T) targets, ``IGNORE_INDEX`` where no loss is taken (e.g. SFT prompts).
        domain_ids: (B,) int64 domain of each sample.
        num_domains: M.
    """
    return reduce_per_domain(per_token_loss(logits, labels).sum(dim=1), labels, domain_ids, num_domains)


def reduce_per_domain(
    sample_sums: torch.Tensor, labels: torch.Tensor, domain_ids: torch.Tensor, num_domains: int
) -> DomainLosses:
    """(B,) per-sample loss sums -> ``DomainLosses``: the segment reduction shared by the full and the
    chunked (``chunked_loss.py``) loss."""
    sample_counts = (labels != IGNORE_INDEX).to(sample_sums.dtype).sum(dim=1)
    mean = sample_sums.sum() / sample_counts.sum().clamp_min(1.0)
    sums = torch.zeros(num_domains, dtype=torch.float64, device=sample_sums.device)
    counts = torch.zeros(num_domains, dtype=torch.float64, device=sample_sums.device)
    sums.index_add_(0, domain_ids, sample_sums.detach().double())
    counts.index_add_(0, domain_ids, sample_counts.double())
    return DomainLosses(mean=mean, sums=sums, counts=counts)


def model_domain_losses(model: torch.nn.Module, batch, num_domains: int) -> DomainLosses:
    """Forward ``batch`` (a ``data.Batch``) through ``model`` and reduce the loss per domain."""
    logits = model(batch.tokens)
    return domain_losses(logits, batch.labels, batch.domain_ids, num_domains)
