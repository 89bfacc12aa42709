"""TANDEM's Δ: sign and pairing, on a real (tiny) torchtune decoder."""

import pytest
import torch

from tandem_components.data.loader import PerDomainSampler, WeightedDomainLoader
from tandem_components.estimators import FixedEstimator, TandemEstimator
from tandem_components.errors import TandemError
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


@pytest.mark.parametrize("carry, absent", [("neutral", 0.0), ("last", -0.5)])
def test_delta_is_zero_right_after_sync_and_an_absent_domain_is_carried(carry, absent):
    """Right after the sync Δ = 0 exactly. A probe without domain 1: its Δ is the mean of the measured ones
    (neutral: it does not move against them) or its last measured value (last), never NaN."""
    domains = _domains()
    twins = build_twins(tiny_decoder, adamw(), adamw())
    estimator = TandemEstimator(twins, num_domains=2, carry=carry)
    probe = PerDomainSampler(domains, per_domain=2, seq_len=SEQ, seed=0).sample()
    estimator.begin_episode()
    assert torch.equal(estimator.delta(probe), torch.zeros(2, dtype=torch.float64))
    only_a = type(probe)(probe.tokens[:2], probe.labels[:2], probe.domain_ids[:2])
    assert (only_a.domain_ids == 0).all()
    estimator.last_delta = torch.tensor([0.25, -0.5], dtype=torch.float64)
    delta = estimator.delta(only_a)
    assert delta[0] == 0.0 and delta[1] == absent
    assert estimator.last_delta.tolist() == [0.0, -0.5]  # the last measurement is kept either way
    restored = TandemEstimator(twins, num_domains=2, carry=carry)
    restored.load_state_dict(estimator.state_dict())
    assert torch.equal(restored.last_delta, estimator.last_delta)


def test_delta_is_scaled_when_it_is_measured_and_a_carried_entry_keeps_its_factor():
    """``mixture.delta_scale``'s factor belongs to the probing steps a Δ was measured over: a value carried
    to a later update keeps the factor of its own measurement (hand-computed)."""
    est = TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=3, carry="last")
    first = est._merge(torch.tensor([-0.1, -0.3, 0.0], dtype=torch.float64),
                       present=torch.tensor([True, True, False]), scale=2.0)
    assert first.tolist() == pytest.approx([-0.2, -0.6, -0.4])  # 2 x measured; never measured: their mean
    second = est._merge(torch.tensor([0.0, 0.0, -0.05], dtype=torch.float64),
                        present=torch.tensor([False, False, True]), scale=10.0)
    assert second.tolist() == pytest.approx([-0.2, -0.6, -0.5])  # 0 and 1 keep x2; 2 measured now: x10
    neutral = TandemEstimator(est.twins, num_domains=3)
    neutral._merge(torch.tensor([-0.1, -0.3, 0.0], dtype=torch.float64), present=torch.tensor([True, True, False]),
                   scale=2.0)
    again = neutral._merge(torch.tensor([0.0, 0.0, -0.05], dtype=torch.float64),
                           present=torch.tensor([False, False, True]), scale=10.0)
    assert again.tolist() == pytest.approx([-0.5, -0.5, -0.5])  # only the measured domain is compared: no move
    assert neutral.last_delta.tolist() == pytest.approx([-0.2, -0.6, -0.5])


def test_fitted_carry_recovers_each_domains_delta_from_probes_of_two_whatever_their_shared_level():
    """carry_delta: fitted. Probes of two domains at a time, each update's Δ shifted by a level of its own
    (b_t, as large as the differences): the fit returns every domain's Δ, centred, exactly, once the probes
    link them, at updates where a domain is not measured too. A domain not linked yet gets 0; with neutral the
    same measurements move only the two probed domains, by their difference."""
    est = TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=4, carry="fitted", fit_decay=0.5)
    theta = torch.tensor([0.0, 0.1, 0.2, 0.6], dtype=torch.float64)
    centred = (theta - theta[:3].mean()).tolist()
    pairs, levels = [(0, 1), (1, 2), (0, 2), (2, 0)], [0.3, -0.2, 0.05, -0.4]
    for t, ((a, b), level) in enumerate(zip(pairs, levels)):
        present = torch.zeros(4, dtype=torch.bool)
        present[[a, b]] = True
        delta = est._merge(theta + level, present=present)
        if t == 0:
            assert delta.tolist() == pytest.approx([-0.05, 0.05, 0.0, 0.0])
    assert delta.tolist()[:3] == pytest.approx(centred[:3]) and delta[3] == 0.0  # domain 3 never measured
    present = torch.tensor([False, False, True, True])
    delta = est._merge(theta - 1.0, present=present)  # domain 3 joins, against 2 only
    assert delta.tolist() == pytest.approx((theta - theta.mean()).tolist())
    restored = TandemEstimator(est.twins, num_domains=4, carry="fitted", fit_decay=0.5)
    restored.load_state_dict(est.state_dict())
    assert torch.equal(restored.fit_matrix, est.fit_matrix) and torch.equal(restored.fit_vector, est.fit_vector)


def test_fitted_carry_with_the_full_probe_is_the_decayed_average_of_the_centred_delta():
    """Every domain probed at every update: the fit is sum_t decay^(T-t) (Δ_t - mean Δ_t) / sum_t decay^(T-t)
    (hand-computed): the exponential average a momentum would take, normalised from the first update."""
    est = TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=3, carry="fitted", fit_decay=0.8)
    deltas = [torch.tensor(d, dtype=torch.float64) for d in ([0.3, 0.0, -0.3], [-0.1, 0.2, 0.5], [1.0, 1.1, 0.9])]
    for d in deltas:
        out = est._merge(d, present=torch.ones(3, dtype=torch.bool))
    weights = [0.8**2, 0.8, 1.0]
    expected = sum(w * (d - d.mean()) for w, d in zip(weights, deltas)) / sum(weights)
    assert out.tolist() == pytest.approx(expected.tolist())


def test_a_fit_decay_outside_0_1_is_refused():
    with pytest.raises(TandemError, match="mixture.fit_decay"):
        TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=2, carry="fitted", fit_decay=1.0)


def test_a_carry_mode_that_does_not_exist_is_refused():
    with pytest.raises(TandemError, match="mixture.carry_delta"):
        TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=2, carry="decay")


def test_fixed_estimator_never_moves_the_mixture():
    est = FixedEstimator(3)
    assert not est.updates_mixture
    assert torch.equal(est.delta(None), torch.zeros(3, dtype=torch.float64))


def test_a_domain_not_yet_probed_takes_the_mean_delta_of_those_probed():
    """A bounded probe reaches some domains only in later updates: until then their Δ is the mean of the
    measured ones (neither favoured nor penalised), afterwards their own, carried between probes (carry
    ``last``; ``neutral`` gives every absent domain the mean, tested above)."""
    est = TandemEstimator(build_twins(tiny_decoder, adamw(), adamw()), num_domains=4, carry="last")
    first = est._merge(torch.tensor([-0.2, -0.4, 0.0, 0.0], dtype=torch.float64),
                       present=torch.tensor([True, True, False, False]))
    assert first.tolist() == pytest.approx([-0.2, -0.4, -0.3, -0.3])
    second = est._merge(torch.tensor([0.0, 0.0, -0.1, 0.0], dtype=torch.float64),
                        present=torch.tensor([False, False, True, False]))
    assert second.tolist() == pytest.approx([-0.2, -0.4, -0.1, -0.1])  # 0, 1 carried; 3 still unmeasured
    restored = TandemEstimator(est.twins, num_domains=4)
    restored.load_state_dict(est.state_dict())
    assert restored.measured.tolist() == [True, True, True, False]


def _plain_centred_half_deltas(twins, batch, probed) -> torch.Tensor:
    """Each half's (alternate rows) Δ_m = mean token loss of the reference - of the proxy, by plain
    cross-entropy, centred over the probed domains: (2, len(probed)), independent of the estimator's code."""
    out = torch.zeros(2, len(probed), dtype=torch.float64)
    with torch.no_grad():
        for h, rows in enumerate((slice(0, None, 2), slice(1, None, 2))):
            tokens, labels, ids = batch.tokens[rows], batch.labels[rows], batch.domain_ids[rows]
            for j, d in enumerate(probed):
                m = ids == d
                loss = {name: torch.nn.functional.cross_entropy(model(tokens[m]).flatten(0, 1), labels[m].flatten())
                        for name, model in (("ref", twins.reference), ("prx", twins.proxy))}
                out[h, j] = float(loss["ref"] - loss["prx"])
    return out - out.mean(1, keepdim=True)


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
    seen, halves = [], torch.full((2, 4), float("nan"), dtype=torch.float64)
    for _ in range(2):
        est.begin_episode()
        for _ in range(2):
            batch = next(train)
            twins.proxy(batch.tokens).sum().mul(0).backward()  # the proxy's step does not matter here
            est.probe_step(batch, next(val))
        batch = probe.sample()
        seen.append(sorted(set(batch.domain_ids.tolist())))
        est.delta(batch)
        halves[:, seen[-1]] = _plain_centred_half_deltas(twins, batch, seen[-1])
    assert sorted(seen[0] + seen[1]) == [0, 1, 2, 3]  # two probes of two domains: all four measured once
    assert torch.allclose(est.last_half_deltas, halves, atol=1e-5)
    a, b = halves[0] - halves[0].mean(), halves[1] - halves[1].mean()
    expected = float(a @ b / (a.norm() * b.norm()))  # the centred cosine, by hand
    assert est.agreement == pytest.approx(expected, abs=1e-4) and abs(expected) < 1.0 - 1e-9
    restored = TandemEstimator(twins, num_domains=4)
    restored.load_state_dict(est.state_dict())
    assert torch.equal(restored.last_half_deltas, est.last_half_deltas)


def test_central_delta_is_half_the_difference_between_the_reference_and_its_reflection_through_the_proxy():
    """``delta_difference: central``: Δ_m = [L^m(w) - L^m(2u - w)] / 2, computed here from copies of the
    twins; the reference is left as it was; its even-order terms cancel, so it differs from the forward Δ."""
    import copy

    from tandem_components.training.domain_loss import model_domain_losses

    torch.manual_seed(0)
    domains = _domains()
    twins = build_twins(tiny_decoder, adamw(3e-3), adamw(3e-3))
    forward = TandemEstimator(twins, num_domains=2)
    central = TandemEstimator(twins, num_domains=2, delta_difference="central")
    train = iter(WeightedDomainLoader(domains, [0.5, 0.5], batch_size=8, seq_len=SEQ, seed=0))
    val = iter(WeightedDomainLoader(domains, [1.0, 0.0], batch_size=8, seq_len=SEQ, seed=1))
    forward.begin_episode()
    for _ in range(3):
        forward.probe_step(next(train), next(val))
    probe = PerDomainSampler(domains, per_domain=4, seq_len=SEQ, seed=2).sample()
    before = [p.detach().clone() for p in twins.reference.parameters()]
    reflected = copy.deepcopy(twins.reference)
    with torch.no_grad():
        for p_r, p_u in zip(reflected.parameters(), twins.proxy.parameters()):
            p_r.mul_(-1).add_(p_u, alpha=2)
        w, mirror = model_domain_losses(twins.reference, probe, 2), model_domain_losses(reflected, probe, 2)
    expected = ((w.sums - mirror.sums) / 2 / w.counts).double()
    delta = central.delta(probe)
    torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-7)
    assert (delta - forward.delta(probe)).abs().max() > 1e-4  # the two differences are not the same number
    for p, b in zip(twins.reference.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-6)  # the reference is restored
    assert central.hyperparameters()["delta_difference"] == "central"
    with pytest.raises(TandemError, match="mixture.delta_difference"):
        TandemEstimator(twins, num_domains=2, delta_difference="backward")
