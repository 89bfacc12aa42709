"""DoReMi and DoGE behind the estimator interface: Δ on hand-computed cases, freezing, no side effects."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tandem_components.data.loader import Batch, PerDomainSampler, WeightedDomainLoader
from tandem_components.errors import TandemError
from tandem_components.estimators import LEARNERS, DoGEEstimator, DoReMiEstimator
from tandem_components.estimators.doremi import freeze
from tandem_components.mixture.state import MixtureState
from tests.helpers import adamw, patterned_tokens, tiny_decoder

SEQ = 16
V = 4


def _domains():
    return [patterned_tokens(7, 0, 4000), patterned_tokens(11, 20, 4000)]


def _train(model, domains, weights, steps, seed, lr=1e-2):
    optimizer = adamw(lr)(model.parameters())
    it = iter(WeightedDomainLoader(domains, weights, batch_size=8, seq_len=SEQ, seed=seed))
    for _ in range(steps):
        batch = next(it)
        F.cross_entropy(model(batch.tokens).reshape(-1, 64), batch.labels.reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def _roundtrip(state, tmp_path):
    path = tmp_path / "estimator.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def test_both_baselines_are_registered():
    assert LEARNERS["doremi"] is DoReMiEstimator and LEARNERS["doge"] is DoGEEstimator
    assert DoReMiEstimator.name == "doremi" and DoGEEstimator.name == "doge"
    assert not DoReMiEstimator.uses_validation_batches and not DoGEEstimator.uses_validation_batches


# ---- DoReMi -----------------------------------------------------------------------------------------------
class FixedLogits(nn.Module):
    """Returns preset (B, T, V) logits whatever the tokens: per-token losses are known by hand."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", probs.log())
        self.bias = nn.Parameter(torch.zeros(probs.shape[-1]))  # a parameter, so freezing is observable

    def forward(self, tokens):
        return self.logits + self.bias  # a shift shared by every class: the loss is -log p(label)


def _probs(p_label: list[list[float]]) -> torch.Tensor:
    """(B, T, V) distributions with p_label on class 0 and the rest spread over the other V - 1."""
    p = torch.tensor(p_label, dtype=torch.float64)
    rest = ((1 - p) / (V - 1)).unsqueeze(-1).expand(*p.shape, V - 1)
    return torch.cat([p.unsqueeze(-1), rest], dim=-1).float()


def test_doremi_delta_is_minus_the_per_token_clipped_excess_loss():
    # labels are class 0 everywhere, so ℓ = -log p0. Rows 0-1: domain 0, row 2: domain 1, row 3: domain 2;
    # domain 3 has no rows.
    proxy = FixedLogits(_probs([[0.5, 0.25], [0.125, 0.5], [0.25, 0.9], [0.125, 0.25]]))
    reference = FixedLogits(_probs([[0.25, 0.5], [0.5, 0.5], [0.5, 0.1], [0.5, 0.125]]))
    labels = torch.zeros(4, 2, dtype=torch.long)
    labels[2, 1] = -100  # ignored: its (negative) excess must not count, nor its token
    batch = Batch(tokens=torch.zeros(4, 2, dtype=torch.long), labels=labels, domain_ids=torch.tensor([0, 0, 1, 2]))
    est = DoReMiEstimator(proxy, reference, num_domains=4, carry="last")  # the carried value is checked below
    est.last_delta = torch.tensor([9.0, 9.0, 9.0, 0.75], dtype=torch.float64)
    est.measured[:] = True  # an earlier update measured every domain: domain 3 carries its 0.75
    ln2 = math.log(2.0)
    # per-token excess ℓ_u - ℓ_ref:
    #   domain 0: (ln2 - ln4, ln4 - ln2), (ln8 - ln2, 0)  = -ln2, +ln2, +2 ln2, 0 -> clipped mean 3 ln2 / 4
    #   domain 1: (ln4 - ln2), ignored                    = +ln2              -> ln2
    #   domain 2: (ln8 - ln2, ln4 - ln8)                  = +2 ln2, -ln2      -> clipped mean ln2
    expected = torch.tensor([-3 * ln2 / 4, -ln2, -ln2, 0.75], dtype=torch.float64)
    delta = est.delta(batch)
    assert delta.dtype == torch.float64 and delta.shape == (4,)
    torch.testing.assert_close(delta, expected, rtol=1e-6, atol=1e-6)
    # the token-level clip is visible: clipping the domain means instead would give ln2/2 and ln2/2
    mean_then_clip = torch.tensor([-ln2 / 2, -ln2, -ln2 / 2], dtype=torch.float64)
    assert (delta[[0, 2]] < mean_then_clip[[0, 2]] - 0.1).all()
    assert delta[3] == 0.75  # absent domain keeps its previous Δ
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training
    assert all(p.requires_grad for p in proxy.parameters())  # the proxy is left alone


def test_doremi_reference_is_frozen_through_deltas_and_proxy_steps():
    domains = _domains()
    proxy, reference = tiny_decoder(seed=0), tiny_decoder(seed=1)
    reference.train()
    est = DoReMiEstimator(proxy, reference, num_domains=2)
    assert est.reference is reference
    assert all(not p.requires_grad for p in reference.parameters()) and not reference.training
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    probe = PerDomainSampler(domains, per_domain=2, seq_len=SEQ, seed=0)
    optimizer = adamw()(proxy.parameters())
    it = iter(WeightedDomainLoader(domains, [0.5, 0.5], batch_size=4, seq_len=SEQ, seed=0))
    proxy_before = [p.detach().clone() for p in proxy.parameters()]
    for _ in range(3):
        est.delta(probe.sample())
        batch = next(it)
        F.cross_entropy(proxy(batch.tokens).reshape(-1, 64), batch.labels.reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = reference.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in reference.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(proxy_before, proxy.parameters()))  # the proxy did train


def test_freeze_and_reference_must_be_a_separate_model():
    model = tiny_decoder()
    assert freeze(model) is model and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    proxy = tiny_decoder()
    with pytest.raises(TandemError, match="reference"):
        DoReMiEstimator(proxy, proxy, num_domains=2)


def test_doremi_state_dict_round_trip(tmp_path):
    est = DoReMiEstimator(tiny_decoder(seed=0), tiny_decoder(seed=1), num_domains=2, reference_path="ref/model.pt")
    est.delta(PerDomainSampler(_domains(), per_domain=2, seq_len=SEQ, seed=0).sample())
    state = _roundtrip(est.state_dict(), tmp_path)
    assert state["reference_path"] == "ref/model.pt"
    assert est.hyperparameters()["reference_path"] == "ref/model.pt"
    restored = DoReMiEstimator(tiny_decoder(seed=0), tiny_decoder(seed=1), num_domains=2)
    restored.load_state_dict(state)
    assert torch.equal(restored.last_delta, est.last_delta) and restored.reference_path == "ref/model.pt"
    with pytest.raises(TandemError, match="last_delta"):
        DoReMiEstimator(tiny_decoder(), tiny_decoder(), num_domains=3).load_state_dict(state)


def test_doremi_domain_the_proxy_is_much_worse_on_gains_weight():
    domains = _domains()
    reference = _train(tiny_decoder(seed=1), domains, [0.5, 0.5], steps=10, seed=1)  # the uniform reference
    proxy = _train(tiny_decoder(seed=0), domains, [1.0, 0.0], steps=10, seed=0)  # never saw domain 1
    est = DoReMiEstimator(proxy, reference, num_domains=2)
    delta = est.delta(PerDomainSampler(domains, per_domain=8, seq_len=SEQ, seed=2).sample())
    assert delta[1] < delta[0] <= 0.0, delta
    mixture = MixtureState(["a", "b"], update="exponentiated_gradient", lr=1.0, smoothing=1e-3)
    alpha = mixture.step(delta)
    assert alpha[1] > 0.5 > alpha[0]


# ---- DoGE -------------------------------------------------------------------------------------------------
class TinyLM(nn.Module):
    """Embedding + linear head: (B, T) -> (B, T, V) logits, gradients small enough to check by hand."""

    def __init__(self, vocab: int = 8, dim: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def _random_batch(gen, rows, domain_ids, vocab=8, t=5):
    tokens = torch.randint(0, vocab, (rows, t), generator=gen)
    labels = torch.randint(0, vocab, (rows, t), generator=gen)
    return Batch(tokens=tokens, labels=labels, domain_ids=torch.tensor(domain_ids))


def _grads(model, batch):
    logits = model(batch.tokens)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1))
    return torch.autograd.grad(loss, list(model.parameters()))


def test_doge_delta_is_minus_the_gradient_alignment_with_validation():
    gen = torch.Generator().manual_seed(0)
    model = TinyLM()
    probe = _random_batch(gen, 5, [0, 2, 0, 2, 2])  # domain 1 absent
    val = _random_batch(gen, 4, [0, 1, 2, 1])
    est = DoGEEstimator(model, num_domains=3, val_batches=lambda: val, carry="last")  # the carry is checked
    est.last_delta = torch.tensor([5.0, -0.25, 5.0], dtype=torch.float64)
    est.measured[:] = True  # measured before: domain 1, absent now, carries its -0.25
    with torch.no_grad():  # a caller's no_grad must not break it: it differentiates what it needs
        delta = est.delta(probe)

    g_val = _grads(model, val)
    expected = [None, -0.25, None]
    for m in (0, 2):
        rows = (probe.domain_ids == m).nonzero().flatten()
        g_m = _grads(model, Batch(probe.tokens[rows], probe.labels[rows], probe.domain_ids[rows]))
        expected[m] = -sum(float((a.double() * b.double()).sum()) for a, b in zip(g_m, g_val))
    expected = torch.tensor(expected, dtype=torch.float64)
    assert delta.dtype == torch.float64 and delta.shape == (3,)
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-8)
    assert delta[1] == -0.25  # absent domain keeps its previous Δ
    assert delta[0] != delta[2]


def test_doge_leaves_grads_and_the_next_optimizer_step_unchanged():
    domains = _domains()
    probe = PerDomainSampler(domains, per_domain=2, seq_len=SEQ, seed=0).sample()
    val_it = iter(WeightedDomainLoader(domains, [0.5, 0.5], batch_size=4, seq_len=SEQ, seed=1))
    batch = next(iter(WeightedDomainLoader(domains, [0.5, 0.5], batch_size=4, seq_len=SEQ, seed=2)))
    proxy = tiny_decoder(seed=0)
    twin = copy.deepcopy(proxy)
    opt, twin_opt = adamw()(proxy.parameters()), adamw()(twin.parameters())
    est = DoGEEstimator(proxy, num_domains=2, val_batches=lambda: next(val_it))

    est.delta(probe)  # no gradient yet: it stays None
    assert all(p.grad is None for p in proxy.parameters())

    for model in (proxy, twin):  # a gradient being accumulated when Δ is measured
        F.cross_entropy(model(batch.tokens).reshape(-1, 64), batch.labels.reshape(-1)).backward()
    grads = [p.grad for p in proxy.parameters()]
    grad_values = [g.clone() for g in grads]
    delta = est.delta(probe)
    assert torch.isfinite(delta).all() and (delta != 0).all()
    assert all(p.grad is g for p, g in zip(proxy.parameters(), grads))
    assert all(torch.equal(p.grad, g) for p, g in zip(proxy.parameters(), grad_values))
    opt.step()
    twin_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(proxy.parameters(), twin.parameters()))
    assert all(
        torch.equal(opt.state[a]["exp_avg"], twin_opt.state[b]["exp_avg"])
        for a, b in zip(proxy.parameters(), twin.parameters())
    )


def test_doge_domain_aligned_with_validation_gains_weight():
    domains = _domains()
    proxy = tiny_decoder(seed=0)
    val_it = iter(WeightedDomainLoader(domains, [1.0, 0.0], batch_size=8, seq_len=SEQ, seed=1))  # only domain 0
    est = DoGEEstimator(proxy, num_domains=2, val_batches=lambda: next(val_it))
    delta = est.delta(PerDomainSampler(domains, per_domain=8, seq_len=SEQ, seed=2).sample())
    assert delta[0] < delta[1], delta
    alpha = MixtureState(["a", "b"], update="exponentiated_gradient", lr=0.1).step(delta)
    assert alpha[0] > 0.5 > alpha[1]


def test_doge_state_dict_round_trip(tmp_path):
    est = DoGEEstimator(TinyLM(), num_domains=3, val_batches=lambda: None)
    est.last_delta = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    state = _roundtrip(est.state_dict(), tmp_path)
    restored = DoGEEstimator(TinyLM(), num_domains=3, val_batches=lambda: None)
    restored.load_state_dict(state)
    assert torch.equal(restored.last_delta, est.last_delta)
    assert est.hyperparameters()["signal"] == "gradient_alignment"
    with pytest.raises(TandemError, match="last_delta"):
        DoGEEstimator(TinyLM(), num_domains=2, val_batches=lambda: None).load_state_dict(state)
    with pytest.raises(TandemError, match="callable"):
        DoGEEstimator(TinyLM(), num_domains=2, val_batches=None)
