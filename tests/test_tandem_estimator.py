"""TANDEM's Δ: sign and pairing, on a real (tiny) torchtune decoder."""

import pytest
import torch

from tandem_components.data.loader import PerDomainSampler, WeightedDomainLoader
from tandem_components.estimators import FixedEstimator, TandemEstimator
from tandem_components.estimators.tandem import delta_agreement
from tandem_components.mixture.state import MixtureState
from tandem_components.training.twins import build_twins
from tests.helpers import adamw, patterned_tokens, tiny_decoder

SEQ = 16


def _domains():
    # two learnable domains with different patterns
    return [patterned_tokens(7, 0, 4000), patterned_tokens(11, 20, 4000)]


def test_domain_helped_by_validation_data_gets_negative_relative_delta_and_gains_weight():
    torch.manual_seed(0)
    domains = _domains()
    twins = build_twins(tiny_decoder, adamw(3e-3), adamw(3e-3))
    estimator = TandemEstimator(twins, num_domains=2, gamma=1.0)
    train = WeightedDomainLoader(domains, [0.5, 0.5], batch_size=8, seq_len=SEQ, seed=0)
    # the validation objective only cares about domain 0
    val = WeightedDomainLoader(domains, [1.0, 0.0], batch_size=8, seq_len=SEQ, seed=1)
    probe = PerDomainSampler(domains, per_domain=8, seq_len=SEQ, seed=2)
    mixture = MixtureState(["a", "b"], lr=0.5)
    train_it, val_it = iter(train), iter(val)
    estimator.begin_episode()
    for _ in range(5):  # K probing steps: the proxy trains on the mixture, the reference also on val
        batch = next(train_it)
        logits = twins.proxy(batch.tokens)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), batch.labels.reshape(-1))
        loss.backward()
        twins.proxy_optimizer.step()
        twins.proxy_optimizer.zero_grad()
        metrics = estimator.probe_step(batch, next(val_it))
        assert set(metrics) == {"reference/train_loss", "reference/val_loss"}
    delta = estimator.delta(probe.sample())
    assert delta.dtype == torch.float64 and delta.shape == (2,)
    assert delta[0] < delta[1], delta  # domain 0's loss dropped more in the reference
    alpha = mixture.step(delta)
    assert alpha[0] > 0.5 > alpha[1]


def test_delta_is_zero_right_after_sync_and_absent_domain_keeps_previous_delta():
    domains = _domains()
    twins = build_twins(tiny_decoder, adamw(), adamw())
    estimator = TandemEstimator(twins, num_domains=2)
    estimator.last_delta = torch.tensor([0.25, -0.5], dtype=torch.float64)
    probe = PerDomainSampler(domains, per_domain=2, seq_len=SEQ, seed=0).sample()
    estimator.begin_episode()
    assert torch.equal(estimator.delta(probe), torch.zeros(2, dtype=torch.float64))
    # a probe batch without domain 1: its Δ stays at the previous value instead of becoming NaN
    only_a = type(probe)(probe.tokens[:2], probe.labels[:2], probe.domain_ids[:2])
    assert (only_a.domain_ids == 0).all()
    estimator.last_delta = torch.tensor([0.25, -0.5], dtype=torch.float64)
    delta = estimator.delta(only_a)
    assert delta[0] == 0.0 and delta[1] == -0.5
    restored = TandemEstimator(twins, num_domains=2)
    restored.load_state_dict(estimator.state_dict())
    assert torch.equal(restored.last_delta, estimator.last_delta)


def test_fixed_estimator_never_moves_the_mixture():
    est = FixedEstimator(3)
    assert not est.updates_mixture
    assert torch.equal(est.delta(None), torch.zeros(3, dtype=torch.float64))


def test_a_domain_not_yet_probed_takes_the_mean_delta_of_those_probed():
    """A bounded probe reaches some domains only in later updates: until then their Δ is the mean of the
    measured ones (neither favoured nor penalised), afterwards their own, carried between probes."""
    est = TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=4)
    first = est._merge(torch.tensor([-0.2, -0.4, 0.0, 0.0], dtype=torch.float64),
                       present=torch.tensor([True, True, False, False]))
    assert first.tolist() == pytest.approx([-0.2, -0.4, -0.3, -0.3])
    second = est._merge(torch.tensor([0.0, 0.0, -0.1, 0.0], dtype=torch.float64),
                        present=torch.tensor([False, False, True, False]))
    assert second.tolist() == pytest.approx([-0.2, -0.4, -0.1, -0.1])  # 0, 1 carried; 3 still unmeasured
    restored = TandemEstimator(est.twins, num_domains=4)
    restored.load_state_dict(est.state_dict())
    assert restored.measured.tolist() == [True, True, True, False]


def test_agreement_under_a_bounded_probe_covers_every_domain_measured_so_far():
    """With 2 of 4 domains per probe, the agreement covers every domain measured so far, each half's Δ
    centred over its own probe and carried over (over two probed domains alone it would always be ±1);
    it survives a resume."""
    torch.manual_seed(0)
    domains = [patterned_tokens(p, o, 3000) for p, o in ((7, 0), (11, 20), (5, 40), (13, 10))]
    twins = build_twins(tiny_decoder, adamw(3e-3), adamw(3e-3))
    est = TandemEstimator(twins, num_domains=4)
    probe = PerDomainSampler(domains, per_domain=4, seq_len=SEQ, seed=0, domains_per_probe=2)
    train = iter(WeightedDomainLoader(domains, [0.25] * 4, batch_size=8, seq_len=SEQ, seed=1))
    val = iter(WeightedDomainLoader(domains, [1.0, 0.0, 0.0, 0.0], batch_size=8, seq_len=SEQ, seed=2))
    seen = []
    for _ in range(2):
        est.begin_episode()
        for _ in range(2):
            batch = next(train)
            twins.proxy(batch.tokens).sum().mul(0).backward()  # the proxy's step does not matter here
            est.probe_step(batch, next(val))
        batch = probe.sample()
        seen.append(sorted(set(batch.domain_ids.tolist())))
        est.delta(batch)
    assert sorted(seen[0] + seen[1]) == [0, 1, 2, 3]  # two probes of two domains: all four measured once
    assert not est.last_half_deltas.isnan().any()
    for probed in seen:  # each half's Δ is centred over its own probe: no drift between updates in there
        assert est.last_half_deltas[:, probed].sum(1).abs().max() < 1e-12
    expected = delta_agreement(est.last_half_deltas[0], est.last_half_deltas[1], torch.ones(4, dtype=torch.bool))
    assert est.agreement == pytest.approx(expected) and abs(expected) < 1.0 - 1e-9
    restored = TandemEstimator(twins, num_domains=4)
    restored.load_state_dict(est.state_dict())
    assert torch.equal(restored.last_half_deltas, est.last_half_deltas)
