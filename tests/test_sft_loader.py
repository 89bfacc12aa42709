"""The α-weighted SFT loader: frequencies follow α, epochs, masking, packing, exact resume, ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tandem_components.data.sft_data import TokenizedExample
from tandem_components.data.sft_loader import PerCategorySampler, WeightedExampleLoader, eval_example_batches
from tandem_components.training.domain_loss import IGNORE_INDEX


def _cats(sizes=(5, 40, 12), prompt_len=3):
    rng = np.random.default_rng(0)
    cats = []
    for m, n in enumerate(sizes):
        exs = []
        for i in range(n):
            length = int(rng.integers(6, 20))
            ids = np.arange(length, dtype=np.int64) + 100 * m + 1000 * i
            exs.append(TokenizedExample(ids=ids, prompt_len=prompt_len))
        cats.append(exs)
    return cats


def test_frequencies_follow_alpha_and_epochs_count_revisits():
    alpha = [0.6, 0.1, 0.3]
    loader = WeightedExampleLoader(_cats(), alpha, batch_size=16, seq_len=32, seed=0)
    counts = np.zeros(3)
    for _ in range(300):
        counts += np.bincount(next(loader).domain_ids.numpy(), minlength=3)
    assert np.allclose(counts / counts.sum(), alpha, atol=0.02)
    epochs = loader.epochs_seen().numpy()
    assert np.allclose(epochs, counts / np.array([5, 40, 12]))
    assert epochs[0] > 100  # the 5-example category was revisited many times
    loader.set_weights([0.0, 1.0, 0.0])
    assert set(next(loader).domain_ids.tolist()) == {1}


def test_every_example_once_per_epoch_reshuffled():
    cats = _cats(sizes=(7,))
    loader = WeightedExampleLoader(cats, [1.0], batch_size=7, seq_len=32, seed=3)
    first = [int(r[0]) for r in next(loader).tokens]
    second = [int(r[0]) for r in next(loader).tokens]
    assert sorted(first) == sorted(second) == sorted(int(e.ids[0]) for e in cats[0])
    assert first != second  # reshuffled per epoch


def test_masking_and_padding():
    cats = _cats()
    batch = next(WeightedExampleLoader(cats, [1 / 3] * 3, batch_size=8, seq_len=64, seed=1))
    assert batch.tokens.shape == batch.labels.shape and batch.tokens.shape[1] <= 19
    for row_x, row_y in zip(batch.tokens, batch.labels):
        valid = row_y != IGNORE_INDEX
        first = int(valid.nonzero()[0])
        assert first == 2  # prompt_len 3: targets 1, 2 are prompt tokens, masked
        n = int(valid.sum())
        assert torch.equal(row_y[first:first + n - 1], row_x[first + 1:first + n])  # next-token targets
        assert (row_y[first + n:] == IGNORE_INDEX).all()  # padding carries no loss


def test_packing_fills_rows_from_one_category():
    loader = WeightedExampleLoader(_cats(), [0.2, 0.5, 0.3], batch_size=4, seq_len=50, seed=0, packing=True)
    batch = next(loader)
    assert batch.tokens.shape == (4, 50)
    for row, m in zip(batch.tokens, batch.domain_ids):
        assert ((row % 1000) // 100 == m).all()  # every token of the row comes from its category


@pytest.mark.parametrize("packing", [False, True])
def test_resume_is_exact(packing):
    cats = _cats()
    a = WeightedExampleLoader(cats, [0.3, 0.3, 0.4], batch_size=4, seq_len=24, seed=5, packing=packing)
    for _ in range(7):
        next(a)
    a.set_weights([0.5, 0.25, 0.25])
    sd = a.state_dict()
    expected = [next(a) for _ in range(5)]
    b = WeightedExampleLoader(cats, [0.3, 0.3, 0.4], batch_size=4, seq_len=24, seed=5, packing=packing)
    b.load_state_dict(sd)
    for want in expected:
        got = next(b)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.labels, want.labels)
        assert torch.equal(got.domain_ids, want.domain_ids)
    assert torch.equal(a.epochs_seen(), b.epochs_seen())


def test_ranks_split_the_global_batch():
    cats = _cats()
    whole = next(WeightedExampleLoader(cats, [0.3, 0.3, 0.4], batch_size=8, seq_len=24, seed=2))
    parts = [next(WeightedExampleLoader(cats, [0.3, 0.3, 0.4], batch_size=4, seq_len=24, seed=2, rank=r,
                                        world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([p.domain_ids for p in parts]), whole.domain_ids)
    for p, rows in zip(parts, (slice(0, 4), slice(4, 8))):
        t = p.tokens.shape[1]
        assert torch.equal(p.tokens, whole.tokens[rows, :t])


def test_probe_sampler_and_eval_batches_are_deterministic():
    cats = _cats()
    s1, s2 = PerCategorySampler(cats, 4, 32, seed=0), PerCategorySampler(cats, 4, 32, seed=0)
    b = s1.sample()
    assert b.domain_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and torch.equal(b.tokens, s2.sample().tokens)
    sd = s1.state_dict()
    nxt = s1.sample()
    s2.load_state_dict(sd)
    assert torch.equal(s2.sample().tokens, nxt.tokens)
    ev = eval_example_batches(cats, 32, 6)
    assert [len(x.tokens) for x in ev] == [5, 6, 6]
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(ev, eval_example_batches(cats, 32, 6)))
