"""Small builders shared by unit tests (tiny real torchtune models, patterned token data)."""

from __future__ import annotations

import os

import numpy as np
import torch

from tandem_components.models import decoder


def tiny_decoder(vocab_size: int = 64, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return decoder(vocab_size=vocab_size, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=32, max_seq_len=64)


def adamw(lr: float = 1e-2):
    return lambda params: torch.optim.AdamW(params, lr=lr)


def patterned_tokens(period: int, offset: int, length: int, vocab_size: int = 64) -> np.ndarray:
    """A deterministic, learnable token stream: offset, offset+1, ... repeating with ``period``."""
    return ((np.arange(length) % period) + offset).astype(np.uint16) % vocab_size


class DivergingDecoder(torch.nn.Module):
    """A real decoder whose logits turn NaN from its ``nan_after``-th forward on: a run that diverges.

    ``nan_rank``: only on this rank (torchrun's ``RANK``), the others stay finite; -1: on every rank.
    ``crash``: raise a RuntimeError there instead (a bug on one rank, not a user error)."""

    def __init__(self, nan_after: int, nan_rank: int = -1, crash: bool = False, **decoder_kwargs):
        super().__init__()
        self.inner = decoder(**decoder_kwargs)
        self.nan_after = nan_after
        self.calls = 0
        self.here = nan_rank in (-1, int(os.environ.get("RANK", "0")))
        self.crash = crash

    @property
    def layers(self):  # what FSDP2 wraps one by one (tandem_components.distributed.parallel.apply_fsdp)
        return self.inner.layers

    def forward(self, tokens):
        self.calls += 1
        logits = self.inner(tokens)
        if self.calls <= self.nan_after or not self.here:
            return logits
        if self.crash:
            raise RuntimeError(f"injected failure on this rank at forward {self.calls}")
        return logits * float("nan")


def diverging_decoder(
    nan_after: int, vocab_size: int, num_layers: int, num_heads: int, num_kv_heads: int, embed_dim: int,
    max_seq_len: int, nan_rank: int = -1, crash: bool = False,
) -> torch.nn.Module:
    """Config builder (``model._component_: tests.helpers.diverging_decoder``)."""
    return DivergingDecoder(
        nan_after, nan_rank=nan_rank, crash=crash, vocab_size=vocab_size, num_layers=num_layers,
        num_heads=num_heads, num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
    )
