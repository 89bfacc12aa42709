"""The α-weighted loader: frequencies follow α (also after set_weights), windows, budgets, exact resume.

Domain m's synthetic tokens are ``m * OFFSET + arange(n)``, so a token's value tells its domain and
position, and a window is a contiguous slice iff its values are consecutive.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tandem_components.data.loader import Batch, PerDomainSampler, WeightedDomainLoader, eval_windows
from tandem_components.errors import TandemError

OFFSET = 1_000_000
# chi-square critical values at p = 0.001 (upper tail), by degrees of freedom
CHI2_CRIT_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}


def _domains(lengths=(5000, 3000, 8000, 2000), dtype=np.int64):
    return [(m * OFFSET + np.arange(n)).astype(dtype) for m, n in enumerate(lengths)]


def _chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    keep = probs > 0
    assert counts[~keep].sum() == 0  # a zero-weight domain is never drawn
    return float((((counts - expected) ** 2)[keep] / expected[keep]).sum())


def _save_load(sd: dict) -> dict:
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _check_window(batch: Batch, arrays, budgets=None):
    t = batch.tokens.shape[1]
    for i in range(batch.tokens.shape[0]):
        d = int(batch.domain_ids[i])
        tok, lab = batch.tokens[i].numpy(), batch.labels[i].numpy()
        assert np.array_equal(lab[:-1], tok[1:])
        start = int(tok[0]) - d * OFFSET
        n = len(arrays[d]) if budgets is None or budgets[d] is None else min(len(arrays[d]), budgets[d])
        assert 0 <= start <= n - t - 1
        window = arrays[d][start : start + t + 1]
        assert np.array_equal(tok, window[:-1]) and np.array_equal(lab, window[1:])


def test_domain_frequencies_follow_alpha_and_set_weights():
    arrays = _domains()
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    loader = WeightedDomainLoader(arrays, alpha, batch_size=100, seq_len=8, seed=0)
    counts = np.zeros(4, dtype=np.int64)
    for _ in range(200):
        counts += np.bincount(next(loader).domain_ids.numpy(), minlength=4)
    assert _chi2(counts, alpha) < CHI2_CRIT_001[3]
    # after set_weights the very next batches follow the new α (with one domain at zero)
    beta = np.array([0.0, 0.5, 0.125, 0.375])
    loader.set_weights(torch.tensor(beta))
    counts = np.zeros(4, dtype=np.int64)
    for _ in range(200):
        counts += np.bincount(next(loader).domain_ids.numpy(), minlength=4)
    assert _chi2(counts, beta) < CHI2_CRIT_001[2]
    # and the old α is clearly rejected for them
    assert _chi2(counts + 1, alpha) > 10 * CHI2_CRIT_001[3]
    # one-hot: every sample from that domain
    loader.set_weights([0.0, 0.0, 1.0, 0.0])
    assert bool((next(loader).domain_ids == 2).all())


def test_windows_are_contiguous_slices_of_the_right_domain():
    arrays = _domains(dtype=np.uint32)
    loader = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=16, seq_len=32, seed=1)
    for batch in [next(loader) for _ in range(20)]:
        assert batch.tokens.shape == (16, 32) and batch.labels.shape == (16, 32) and batch.domain_ids.shape == (16,)
        assert batch.tokens.dtype == batch.labels.dtype == batch.domain_ids.dtype == torch.int64
        _check_window(batch, arrays)
    moved = batch.to("cpu")
    assert torch.equal(moved.tokens, batch.tokens) and torch.equal(moved.domain_ids, batch.domain_ids)


def test_every_start_reachable_including_last():
    # n = T + 3 -> starts {0, 1, 2}; all three must occur, nothing past the end
    arrays = [np.arange(8 + 3, dtype=np.int64)]
    loader = WeightedDomainLoader(arrays, [1.0], batch_size=64, seq_len=8, seed=2)
    starts = set(next(loader).tokens[:, 0].tolist())
    assert starts == {0, 1, 2}


def test_token_budget_respected_and_epochs_exact():
    arrays = _domains()
    budgets = [40, None, 100, 10_000]  # domain 3 budget above its length -> its length
    loader = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=8, seq_len=16, seed=3, token_budget=budgets)
    assert loader.domain_lengths.tolist() == [40, 3000, 100, 2000]
    counts = np.zeros(4, dtype=np.int64)
    for _ in range(50):
        b = next(loader)
        _check_window(b, arrays, budgets)
        counts += np.bincount(b.domain_ids.numpy(), minlength=4)
    assert loader.tokens_drawn.dtype == torch.int64
    assert loader.tokens_drawn.tolist() == (counts * 16).tolist()
    want = torch.tensor(counts * 16, dtype=torch.float64) / torch.tensor([40.0, 3000.0, 100.0, 2000.0])
    assert torch.equal(loader.epochs_seen(), want)
    assert loader.epochs_seen()[0] > 10  # the tiny domain is repeated many times


def test_validation_errors():
    arrays = _domains()
    with pytest.raises(TandemError, match=r"domain_tokens\[1\]"):
        WeightedDomainLoader([arrays[0], np.arange(10)], [0.5, 0.5], batch_size=2, seq_len=16, seed=0)
    with pytest.raises(TandemError, match=r"token_budget\[0\]=10"):
        WeightedDomainLoader(arrays, [0.25] * 4, batch_size=2, seq_len=16, seed=0, token_budget=[10, None, None, None])
    with pytest.raises(TandemError, match="batch_size"):
        WeightedDomainLoader(arrays, [0.25] * 4, batch_size=0, seq_len=16, seed=0)
    with pytest.raises(TandemError, match="weights"):
        WeightedDomainLoader(arrays, [0.5, 0.5], batch_size=2, seq_len=16, seed=0)
    with pytest.raises(TandemError, match="token_budget"):
        WeightedDomainLoader(arrays, [0.25] * 4, batch_size=2, seq_len=16, seed=0, token_budget=[10])
    with pytest.raises(TandemError, match="rank"):
        WeightedDomainLoader(arrays, [0.25] * 4, batch_size=2, seq_len=16, seed=0, rank=2, world_size=2)
    loader = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=2, seq_len=16, seed=0)
    for bad in ([0.5, 0.5, 0.5, -0.5], [0.3, 0.3, 0.3, 0.3], [0.25] * 3, [float("nan"), 0.5, 0.25, 0.25]):
        with pytest.raises(TandemError, match="weights"):
            loader.set_weights(bad)
    assert loader.weights.tolist() == [0.25] * 4


def test_resume_gives_identical_batches_after_set_weights():
    arrays = _domains()
    kwargs = dict(batch_size=12, seq_len=24, seed=7, token_budget=[None, 500, None, None])
    run = WeightedDomainLoader(arrays, [0.25] * 4, **kwargs)
    for _ in range(5):
        next(run)
    run.set_weights([0.1, 0.6, 0.2, 0.1])
    for _ in range(3):
        next(run)
    run.set_weights([0.7, 0.1, 0.1, 0.1])  # set after the last batch, before the save
    sd = _save_load(run.state_dict())
    expected = [next(run) for _ in range(6)]

    resumed = WeightedDomainLoader(arrays, [0.25] * 4, **kwargs)
    resumed.load_state_dict(sd)
    assert torch.equal(resumed.tokens_drawn, torch.as_tensor(sd["tokens_drawn"]))
    assert resumed.weights.tolist() == [0.7, 0.1, 0.1, 0.1]
    for want in expected:
        got = next(resumed)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.labels, want.labels)
        assert torch.equal(got.domain_ids, want.domain_ids)
    assert torch.equal(resumed.tokens_drawn, run.tokens_drawn)
    # a mismatched configuration is refused, not silently resumed with different batches
    with pytest.raises(TandemError, match="batch_size"):
        WeightedDomainLoader(arrays, [0.25] * 4, **{**kwargs, "batch_size": 4}).load_state_dict(sd)
    # reset(None) goes back to the start: the same first batch as a fresh loader
    fresh = WeightedDomainLoader(arrays, [0.25] * 4, **kwargs)
    run.reset()
    assert torch.equal(next(run).tokens, next(fresh).tokens)


def test_torchdata_loader_wrapper_and_iteration():
    from torchdata.nodes import Loader

    arrays = _domains()
    node = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=4, seq_len=8, seed=5)
    it = iter(node)
    assert it is node
    direct = [next(it) for _ in range(3)]
    wrapped = iter(Loader(WeightedDomainLoader(arrays, [0.25] * 4, batch_size=4, seq_len=8, seed=5)))
    for want in direct:
        assert torch.equal(next(wrapped).tokens, want.tokens)


def test_ranks_draw_different_data_and_seed_is_deterministic():
    arrays = _domains()
    a = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=8, seq_len=16, seed=11, rank=0, world_size=2)
    b = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=8, seq_len=16, seed=11, rank=1, world_size=2)
    c = WeightedDomainLoader(arrays, [0.25] * 4, batch_size=8, seq_len=16, seed=11, rank=0, world_size=2)
    for _ in range(3):
        ba, bb, bc = next(a), next(b), next(c)
        assert not torch.equal(ba.tokens, bb.tokens)
        assert torch.equal(ba.tokens, bc.tokens) and torch.equal(ba.domain_ids, bc.domain_ids)


def _rows(batch):
    return sorted(zip(batch.domain_ids.tolist(), map(tuple, batch.tokens.tolist())))


def test_union_over_ranks_equals_one_process_with_the_global_batch():
    """Data does not depend on the world size: 2 ranks x B rows = 1 rank x 2B rows, draw for draw."""
    arrays = _domains()
    alpha = [0.1, 0.2, 0.3, 0.4]
    single = WeightedDomainLoader(arrays, alpha, batch_size=8, seq_len=16, seed=5)
    ranks = [WeightedDomainLoader(arrays, alpha, batch_size=4, seq_len=16, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        whole, parts = next(single), [next(r) for r in ranks]
        assert torch.equal(whole.tokens, torch.cat([p.tokens for p in parts]))
        assert torch.equal(whole.domain_ids, torch.cat([p.domain_ids for p in parts]))
    assert torch.equal(single.tokens_drawn, ranks[0].tokens_drawn)  # global counts on every rank
    assert torch.equal(ranks[0].tokens_drawn, ranks[1].tokens_drawn)
    probe_single = PerDomainSampler(arrays, per_domain=6, seq_len=16, seed=1)
    probe_ranks = [PerDomainSampler(arrays, per_domain=3, seq_len=16, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(2):
        whole, parts = probe_single.sample(), [p.sample() for p in probe_ranks]
        assert _rows(whole) == sorted(_rows(parts[0]) + _rows(parts[1]))


def test_per_domain_sampler_counts_windows_and_resume():
    arrays = _domains()
    budgets = [100, None, None, None]
    s = PerDomainSampler(arrays, per_domain=5, seq_len=16, seed=0, token_budget=budgets)
    b1, b2 = s.sample(), s.sample()
    assert b1.tokens.shape == (20, 16)
    assert b1.domain_ids.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    _check_window(b1, arrays, budgets)
    _check_window(b2, arrays, budgets)
    assert not torch.equal(b1.tokens, b2.tokens)  # fresh windows each call
    sd = _save_load(s.state_dict())
    expected = [s.sample() for _ in range(3)]
    r = PerDomainSampler(arrays, per_domain=5, seq_len=16, seed=0, token_budget=budgets)
    r.load_state_dict(sd)
    for want in expected:
        assert torch.equal(r.sample().tokens, want.tokens)
    other_rank = PerDomainSampler(arrays, per_domain=5, seq_len=16, seed=0, rank=1, world_size=2, token_budget=budgets)
    assert not torch.equal(other_rank.sample().tokens, b1.tokens)
    with pytest.raises(TandemError, match="per_domain"):
        PerDomainSampler(arrays, per_domain=0, seq_len=16, seed=0)


def test_eval_windows_deterministic_and_non_overlapping():
    arrays = _domains(lengths=(5000, 300, 34, 17))
    t = 16
    batches = eval_windows(arrays, seq_len=t, max_windows_per_domain=10)
    again = eval_windows(arrays, seq_len=t, max_windows_per_domain=10)
    assert len(batches) == 4
    for m, (b, b2) in enumerate(zip(batches, again)):
        assert torch.equal(b.tokens, b2.tokens) and torch.equal(b.labels, b2.labels)
        assert bool((b.domain_ids == m).all())
        _check_window(b, arrays)
        starts = (b.tokens[:, 0] - m * OFFSET).tolist()
        assert starts == sorted(starts)
        assert all(s2 - s1 >= t + 1 for s1, s2 in zip(starts, starts[1:]))  # no shared token
        assert len(starts) == min(10, len(arrays[m]) // (t + 1))
    # spread over the whole array: first window at 0, last one ends at the last token
    starts0 = (batches[0].tokens[:, 0]).tolist()
    assert starts0[0] == 0 and starts0[-1] == 5000 - t - 1
    with pytest.raises(TandemError, match=r"domain_tokens\[0\]"):
        eval_windows([np.arange(5)], seq_len=t, max_windows_per_domain=3)


# ---- bounded probe (mixture.probe_budget) ------------------------------------------------------------------
@pytest.mark.parametrize("m, d", [(7, 7), (7, 3), (8, 2), (28, 8), (112, 8), (112, 48)])
def test_a_bounded_probe_measures_every_domain_in_every_pass(m, d):
    """D of M domains per probe, D distinct ones each: every domain is measured in every pass of ceil(M / D)
    probes (so in any 2 ceil(M / D) - 1 consecutive ones); the fixed order, in any ceil(M / D)."""
    from tandem_components.data.loader import ProbeSchedule

    for order, window in (("reshuffled", 2), ("fixed", 1)):
        schedule = ProbeSchedule(m, d, seed=5, order=order)
        bound = schedule.bound
        assert bound == -(-m // d)
        calls = [set(schedule.domains(c).tolist()) for c in range(4 * bound + 2)]
        assert all(len(c) == d for c in calls)
        if order == "reshuffled":
            for p in range(4):
                assert set().union(*calls[p * bound:(p + 1) * bound]) == set(range(m)), (order, p)
        span = window * bound - (window - 1)
        for start in range(len(calls) - span + 1):
            assert set().union(*calls[start:start + span]) == set(range(m)), (order, start)
        assert ProbeSchedule(m, d, seed=5, order=order).domains(4).tolist() == schedule.domains(4).tolist()


@pytest.mark.parametrize("m", [6, 7, 8])
def test_a_reshuffled_probe_brings_every_pair_of_domains_together(m):
    """The α step moves weight only among the domains of one probe, so two domains are compared only where
    they meet. With one order for the run and D dividing M the probes are a fixed partition (M = 8, D = 2:
    4 pairs, 24 of the 28 never compared); reshuffled every pass, every pair meets within a few passes."""
    from tandem_components.data.loader import ProbeSchedule

    def pairs(order):
        schedule = ProbeSchedule(m, 2, seed=0, order=order)
        return {tuple(schedule.domains(c).tolist()) for c in range(50 * schedule.bound)}

    assert len(pairs("reshuffled")) == m * (m - 1) // 2
    if m % 2 == 0:
        assert len(pairs("fixed")) == m // 2
    with pytest.raises(TandemError, match="^mixture.probe_order: expected one of"):
        ProbeSchedule(m, 2, seed=0, order="random")


def test_a_bounded_sampler_holds_only_the_scheduled_domains_and_resumes():
    arrays = [np.arange(1000, dtype=np.uint16) + 10 * i for i in range(6)]
    sampler = PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=2)
    first = sampler.sample()
    assert first.tokens.shape == (4, 8)
    assert sorted(set(first.domain_ids.tolist())) == sampler.schedule.domains(0).tolist()
    state = sampler.state_dict()
    following = [sampler.sample() for _ in range(3)]
    again = PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=2)
    again.load_state_dict(state)
    for want in following:
        got = again.sample()
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.domain_ids, want.domain_ids)
    with pytest.raises(TandemError, match="^mixture.probe_budget: the checkpoint's probe held 2 of 6"):
        PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=3).load_state_dict(state)
    before = {k: v for k, v in state.items() if k != "domains_per_probe"}  # a state from before bounded probes
    with pytest.raises(TandemError, match="held 6 of 6 domains per update, this run's holds 2"):
        PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=2).load_state_dict(before)
    PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1).load_state_dict(before)  # probe_budget=null: resumes
    with pytest.raises(TandemError, match="^mixture.probe_order: the checkpoint's probe walked the domains 'reshuffled'"):
        PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=2,
                         probe_order="fixed").load_state_dict(state)
    old_state = {k: v for k, v in state.items() if k != "probe_order"}  # before probe_order: one permutation
    PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1, domains_per_probe=2,
                     probe_order="fixed").load_state_dict(old_state)
    full = PerDomainSampler(arrays, per_domain=2, seq_len=8, seed=1)  # default: every domain, as before
    assert full.sample().domain_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_the_probe_budget_defaults_to_two_training_batches_and_null_means_every_domain():
    from omegaconf import OmegaConf

    from tandem_components.data.loader import domains_per_probe, probe_budget

    assert probe_budget(OmegaConf.create({}), 16) == 32  # not set: 2 x data.batch_size
    assert probe_budget(OmegaConf.create({"probe_budget": None}), 16) is None
    assert probe_budget(OmegaConf.create({"probe_budget": 100}), 16) == 100
    assert domains_per_probe(112, 16, 32) == 2 and domains_per_probe(7, 16, None) == 7
    assert domains_per_probe(7, 16, 1000) == 7 and domains_per_probe(7, 64, 32) == 1  # all M at most, one at least
