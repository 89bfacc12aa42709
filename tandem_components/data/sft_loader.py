"""The α-weighted SFT loader: where the SFT recipe reads α. Samples EXAMPLES by task category.

Same interface as ``data.loader.WeightedDomainLoader`` (a ``torchdata.nodes.BaseNode`` returning
``batch.Batch`` with ``domain_ids`` = category ids; ``set_weights``, ``epochs_seen``, exact
``state_dict`` / ``load_state_dict``, rank/world-size slicing of one global batch), but the unit is an
example, not a window, and examples are revisited:

    1. B * world_size category ids ~ Categorical(α) (one generator, rank-independent);
    2. each category walks through its examples in a permutation that is reshuffled every epoch
       (permutation of epoch e of category m seeded by (seed, m, e)); a category that runs out starts
       its next epoch, so ``epochs_seen`` counts passes (fractional);
    3. ``packing=False``: one example per row, rows padded (pad id, label IGNORE_INDEX) to the longest
       row of this rank's batch; ``packing=True``: a row of category m is filled with consecutive
       examples of m up to T tokens (the last one cut), so every row has exactly T tokens.

Labels are next-token targets with prompt masking (``sft_data.TokenizedExample.inputs_and_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchdata.nodes import BaseNode

from tandem_components.data.batch import IGNORE_INDEX
from tandem_components.data.loader import (
    AlphaSampling,
    Batch,
    ProbeSchedule,
    _check_config,
    _check_int,
    _check_probe_schedule,
    _check_rank,
    _make_rng,
    _rng_state,
    _set_rng_state,
)
from tandem_components.data.sft_data import TokenizedExample
from tandem_components.errors import TandemError

_STREAM_TRAIN = 0
_STREAM_PROBE = 1


def _check_categories(categories) -> list[list[TokenizedExample]]:
    if not isinstance(categories, Sequence) or not categories:
        raise TandemError("categories: expected a non-empty list of example lists, one per category")
    for m, c in enumerate(categories):
        if not c:
            raise TandemError(f"categories[{m}]: no examples")
    return [list(c) for c in categories]


def collate(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int, ids: np.ndarray, length: int | None = None) -> Batch:
    """(inputs, labels) rows -> Batch padded to ``length`` (default: the longest row)."""
    t = length or max(len(r[0]) for r in rows)
    tokens = np.full((len(rows), t), pad_id, dtype=np.int64)
    labels = np.full((len(rows), t), IGNORE_INDEX, dtype=np.int64)
    for i, (x, y) in enumerate(rows):
        tokens[i, : len(x)] = x[:t]
        labels[i, : len(y)] = y[:t]
    return Batch(tokens=torch.from_numpy(tokens), labels=torch.from_numpy(labels),
                 domain_ids=torch.from_numpy(np.asarray(ids, dtype=np.int64)))


class WeightedExampleLoader(AlphaSampling, BaseNode[Batch]):
    """Infinite iterator of SFT batches whose category mix follows α, changeable between batches.

    Args:
        categories: per category, its tokenised examples (``sft_data.tokenize_category``), in the
            mixture's domain order.
        weights: α, (M,) >= 0 summing to 1.
        batch_size: B rows per rank (the global batch is B * world_size). seq_len: T, the most input
            tokens of a row.
        seed, rank, world_size: as in ``WeightedDomainLoader`` (every rank draws the global batch).
        pad_id: token id of padding (labels there are IGNORE_INDEX). packing: see the module docstring.

    Attributes:
        examples_drawn: (M,) int64 examples consumed per category by all ranks together.
    """

    def __init__(self, categories, weights, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                 world_size: int = 1, pad_id: int = 0, packing: bool = False):
        super().__init__()
        self._cats = _check_categories(categories)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seq_len = _check_int(seq_len, "seq_len", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self.pad_id = int(pad_id)
        self.packing = bool(packing)
        self._sizes = np.array([len(c) for c in self._cats], dtype=np.int64)
        self._initial_weights = self._validate_weights(weights)
        self.reset(None)

    @property
    def num_domains(self) -> int:
        return len(self._cats)

    @property
    def examples_drawn(self) -> torch.Tensor:
        return torch.from_numpy(self._drawn.copy())

    @property
    def domain_lengths(self) -> torch.Tensor:
        """(M,) examples per category."""
        return torch.from_numpy(self._sizes.copy())

    def epochs_seen(self) -> torch.Tensor:
        """(M,) float64: examples drawn / examples in the category (all ranks together)."""
        return torch.from_numpy(self._drawn / self._sizes.astype(np.float64))

    # ---- per-category epoch order ------------------------------------------------------------------------
    def _permutation(self, m: int, epoch: int) -> np.ndarray:
        key = (m, epoch)
        if self._perm_key[m] != key:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 7, m, epoch])))
            self._perm[m] = rng.permutation(int(self._sizes[m]))
            self._perm_key[m] = key
        return self._perm[m]

    def _next_example(self, m: int) -> TokenizedExample:
        n = int(self._sizes[m])
        drawn = int(self._drawn[m])
        epoch, pos = divmod(drawn, n)
        self._drawn[m] += 1
        return self._cats[m][int(self._permutation(m, epoch)[pos])]

    def _row(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.packing:
            x, y = self._next_example(m).inputs_and_labels()
            return x[: self.seq_len], y[: self.seq_len]
        xs, ys, n = [], [], 0
        while n < self.seq_len:
            x, y = self._next_example(m).inputs_and_labels()
            xs.append(x)
            ys.append(y)
            n += len(x)
        return np.concatenate(xs)[: self.seq_len], np.concatenate(ys)[: self.seq_len]

    # ---- BaseNode interface ------------------------------------------------------------------------------
    def reset(self, initial_state: dict | None = None) -> None:
        super().reset(initial_state)
        self._rng = _make_rng(self.seed, 0, _STREAM_TRAIN)
        self._drawn = np.zeros(self.num_domains, dtype=np.int64)
        self._perm: list[Any] = [None] * self.num_domains
        self._perm_key: list[Any] = [None] * self.num_domains
        self._num_batches = 0
        self.set_weights(self._initial_weights)
        if initial_state is not None:
            self._load(initial_state)

    def next(self) -> Batch:
        b, w = self.batch_size, self.world_size
        ids = self._draw_domains(b * w)
        # every rank consumes the examples of the whole global batch (cursors stay identical) ...
        rows = [self._row(int(m)) for m in ids]
        mine = slice(self.rank * b, (self.rank + 1) * b)  # ... and keeps its own rows
        self._num_batches += 1
        return collate(rows[mine], self.pad_id, ids[mine], self.seq_len if self.packing else None)

    def get_state(self) -> dict[str, Any]:
        return {
            "rng": _rng_state(self._rng), "weights": torch.from_numpy(self._weights.copy()),
            "examples_drawn": torch.from_numpy(self._drawn.copy()), "num_batches": self._num_batches,
            "seed": self.seed, "global_batch_size": self.batch_size * self.world_size, "seq_len": self.seq_len,
            "packing": self.packing, "domain_lengths": torch.from_numpy(self._sizes.copy()),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Resume exactly: the next batches equal those of the uninterrupted run."""
        self.reset(sd)

    def _load(self, sd: dict) -> None:
        _check_config(sd, {"seed": self.seed, "global_batch_size": self.batch_size * self.world_size,
                           "seq_len": self.seq_len, "packing": self.packing,
                           "domain_lengths": self._sizes.tolist()}, "SFT loader")
        for k in ("rng", "weights", "examples_drawn", "num_batches"):
            if k not in sd:
                raise TandemError(f"SFT loader state_dict: missing key {k!r}")
        self.set_weights(torch.as_tensor(sd["weights"], dtype=torch.float64))
        self._drawn = torch.as_tensor(sd["examples_drawn"], dtype=torch.int64).numpy().copy()
        self._num_batches = int(sd["num_batches"])
        _set_rng_state(self._rng, sd["rng"])

    @property
    def num_batches(self) -> int:
        return self._num_batches


class PerCategorySampler:
    """``per_domain`` random examples of every probed category (paired probe batches for Δ), grouped by
    category (``domain_ids`` = [c0]*k + [c1]*k + ...), one example per row, padded to the longest row.
    Which categories: all of them, or ``domains_per_probe`` in turns (``data.loader.ProbeSchedule``)."""

    def __init__(self, categories, per_domain: int, seq_len: int, seed: int, rank: int = 0, world_size: int = 1,
                 pad_id: int = 0, domains_per_probe: int | None = None, probe_order: str = "reshuffled"):
        self._cats = _check_categories(categories)
        self.per_domain = _check_int(per_domain, "per_domain", 1)
        self.seq_len = _check_int(seq_len, "seq_len", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self.pad_id = int(pad_id)
        self._sizes = np.array([len(c) for c in self._cats], dtype=np.int64)
        self.schedule = ProbeSchedule(len(self._cats), domains_per_probe, self.seed, probe_order)
        self._rng = _make_rng(self.seed, 0, _STREAM_PROBE)
        self._num_calls = 0

    @property
    def num_domains(self) -> int:
        return len(self._cats)

    def sample(self) -> Batch:
        k, w = self.per_domain, self.world_size
        rows, ids = [], []
        for m in self.schedule.domains(self._num_calls).tolist():
            picks = self._rng.integers(0, int(self._sizes[m]), size=k * w)[self.rank * k:(self.rank + 1) * k]
            for i in picks.tolist():
                x, y = self._cats[m][i].inputs_and_labels()
                rows.append((x[: self.seq_len], y[: self.seq_len]))
                ids.append(m)
        self._num_calls += 1
        return collate(rows, self.pad_id, np.array(ids))

    def state_dict(self) -> dict:
        return {"rng": _rng_state(self._rng), "num_calls": self._num_calls, "seed": self.seed,
                "global_per_domain": self.per_domain * self.world_size, "seq_len": self.seq_len,
                "domain_lengths": torch.from_numpy(self._sizes.copy()),
                "domains_per_probe": self.schedule.domains_per_probe, "probe_order": self.schedule.order}

    def load_state_dict(self, sd: dict) -> None:
        _check_config(sd, {"seed": self.seed, "global_per_domain": self.per_domain * self.world_size,
                           "seq_len": self.seq_len, "domain_lengths": self._sizes.tolist()}, "per-category sampler")
        _check_probe_schedule(sd, self.schedule)
        _set_rng_state(self._rng, sd["rng"])
        self._num_calls = int(sd["num_calls"])


def eval_example_batches(categories, seq_len: int, max_examples_per_category: int, pad_id: int = 0) -> list[Batch]:
    """Deterministic evaluation: one Batch per category holding its first k examples (file order),
    k = min(max_examples_per_category, examples), padded to the category's longest row."""
    cats = _check_categories(categories)
    k_max = _check_int(max_examples_per_category, "max_examples_per_category", 1)
    batches = []
    for m, examples in enumerate(cats):
        rows = []
        for e in examples[:k_max]:
            x, y = e.inputs_and_labels()
            rows.append((x[:seq_len], y[:seq_len]))
        batches.append(collate(rows, pad_id, np.full(len(rows), m)))
    return batches
