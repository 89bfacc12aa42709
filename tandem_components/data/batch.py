"""The batch every loader yields and every loss reads: token ids, next-token labels, domain ids.

Labels equal to ``IGNORE_INDEX`` carry no loss (SFT prompts, padding); the losses in
``training/domain_loss.py`` and ``training/chunked_loss.py`` skip them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

#: the label of a position that takes no loss (PyTorch's cross_entropy default ``ignore_index``)
IGNORE_INDEX = -100


@dataclass
class Batch:
    """A batch of B windows of T tokens.

    Attributes:
        tokens: (B, T) int64 input ids.
        labels: (B, T) int64 next-token targets (``tokens`` shifted left by one).
        domain_ids: (B,) int64 index into the domain list.
    """

    tokens: torch.LongTensor
    labels: torch.LongTensor
    domain_ids: torch.LongTensor

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(
            tokens=self.tokens.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            domain_ids=self.domain_ids.to(device, non_blocking=non_blocking),
        )

    def rows(self, index) -> "Batch":
        """The sub-batch at row ``index`` (a slice or an index tensor)."""
        return Batch(self.tokens[index], self.labels[index], self.domain_ids[index])

    def chunks(self, size: int) -> "Iterator[Batch]":
        """Consecutive sub-batches of at most ``size`` rows (forward a large batch in pieces)."""
        for start in range(0, self.tokens.shape[0], size):
            yield self.rows(slice(start, start + size))
