"""Per-domain losses without materialising the (B, T, V) logits.

``domain_loss.domain_losses`` takes full logits: with a 128k vocabulary and 8k tokens per rank that is
4 GiB in float32, the largest activation of the step. Here the output projection and the cross-entropy
run on chunks of the sequence: each chunk's logits are upcast to float32, reduced to per-sample loss
sums, and (with ``checkpoint_chunks``) freed and recomputed in backward, so at most one chunk of logits
exists at a time. The result is the same ``DomainLosses`` (mean, per-domain sums, counts), equal to
``domain_losses`` up to float32 summation order.

Three entry points:
- ``chunked_domain_losses(hidden, output, ...)``: from final (normed) hidden states and the projection;
- ``domain_losses_from_chunks(logit_chunks, ...)``: from torchtune's chunked model output
  (``model.set_num_output_chunks(n)`` makes a ``TransformerDecoder`` return a list of logits chunks;
  those chunks all stay alive, only the float32 upcast is per chunk, as in ``CEWithChunkedOutputLoss``);
- ``model_chunked_domain_losses(model, batch, num_domains)``: drop-in for
  ``domain_loss.model_domain_losses`` (same signature: ``TandemEstimator(forward=...)``,
  ``evaluate_per_domain(forward=...)``); works under FSDP2 and per-layer compile.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tandem_components.training.domain_loss import IGNORE_INDEX, DomainLosses, reduce_per_domain

DEFAULT_NUM_CHUNKS = 8


def _chunk_loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, t, V) logits chunk, (B, t) labels -> (B,) float32 summed cross-entropy per sample."""
    b, t, v = logits.shape
    loss = F.cross_entropy(
        logits.reshape(b * t, v).float(), labels.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return loss.view(b, t).sum(dim=1)


def _project_and_sum(output: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _chunk_loss_sums(output(hidden), labels)


def _sample_sums(
    hidden: torch.Tensor, output: nn.Module, labels: torch.Tensor, num_chunks: int, checkpoint_chunks: bool
) -> torch.Tensor:
    """(B,) float32 per-sample loss sums of ``output(hidden)``, one chunk of T at a time."""
    step = functools.partial(_project_and_sum, output)
    total = None
    for h, y in zip(hidden.chunk(num_chunks, dim=1), labels.chunk(num_chunks, dim=1), strict=True):
        if checkpoint_chunks and torch.is_grad_enabled():
            part = checkpoint(step, h, y, use_reentrant=False)  # logits freed now, recomputed in backward
        else:
            part = step(h, y)
        total = part if total is None else total + part
    return total


def chunked_domain_losses(
    hidden: torch.Tensor,
    output: nn.Module,
    labels: torch.Tensor,
    domain_ids: torch.Tensor,
    num_domains: int,
    num_chunks: int = DEFAULT_NUM_CHUNKS,
    checkpoint_chunks: bool = True,
) -> DomainLosses:
    """``domain_losses(output(hidden), ...)`` computed one sequence chunk at a time.

    Args:
        hidden: (B, T, D) final hidden states, after the final norm.
        output: the output projection D -> V (``model.output``).
        labels: (B, T) targets, ``IGNORE_INDEX`` where no loss is taken.
        domain_ids: (B,) int64 domain of each sample.
        num_domains: M.
        num_chunks: chunks along T (``torch.chunk``: the last may be shorter).
        checkpoint_chunks: recompute each chunk's logits in backward instead of keeping them, so peak
            logits memory is one float32 chunk, (B, T/num_chunks, V), in forward and in backward.
    """
    sample_sums = _sample_sums(hidden, output, labels, num_chunks, checkpoint_chunks)
    return reduce_per_domain(sample_sums, labels, domain_ids, num_domains)


def domain_losses_from_chunks(
    logit_chunks: list[torch.Tensor], labels: torch.Tensor, domain_ids: torch.Tensor, num_domains: int
) -> DomainLosses:
    """``DomainLosses`` from a list of (B, T_i, V) logits chunks along T (torchtune's chunked output)."""
    sizes = [c.shape[1] for c in logit_chunks]
    sample_sums = None
    for logits, y in zip(logit_chunks, labels.split(sizes, dim=1), strict=True):
        part = _chunk_loss_sums(logits, y)
        sample_sums = part if sample_sums is None else sample_sums + part
    return reduce_per_domain(sample_sums, labels, domain_ids, num_domains)


def model_chunked_domain_losses(
    model: nn.Module, batch, num_domains: int, num_chunks: int = DEFAULT_NUM_CHUNKS
) -> DomainLosses:
    """Forward ``batch`` through a torchtune ``TransformerDecoder`` with a chunked, checkpointed loss head.

    The decoder's ``unembed`` calls ``self.chunked_output(normed_hidden)`` when ``num_output_chunks > 0``;
    for the duration of this call that hook computes the per-sample loss sums instead of returning
    logits. The loss thus runs *inside* the model's forward, where FSDP2 has the root's parameters (the
    output projection) unsharded and registers its backward hooks on the returned tensor, exactly as for
    ordinary logits. ``chunked_output`` is excluded from ``torch.compile``; per-layer compile is unaffected.
    Use ``functools.partial(model_chunked_domain_losses, num_chunks=n)`` to pick n.
    """
    labels = batch.labels

    def loss_head(hidden: torch.Tensor) -> torch.Tensor:  # (B, T, D) normed hidden -> (B,) loss sums
        return _sample_sums(hidden, model.output, labels, num_chunks, checkpoint_chunks=True)

    previous_chunks = model.num_output_chunks
    model.chunked_output = loss_head  # instance attribute: shadows the method for this call only
    model.num_output_chunks = num_chunks
    try:
        sample_sums = model(batch.tokens)
    finally:
        del model.chunked_output
        model.num_output_chunks = previous_chunks
    return reduce_per_domain(sample_sums, labels, batch.domain_ids, num_domains)
