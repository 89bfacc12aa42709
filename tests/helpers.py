"""Small builders shared by unit tests (tiny real torchtune models, patterned token data)."""

from __future__ import annotations

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
