import torch

from tandem_components.training.twins import build_twins
from tests.helpers import adamw, tiny_decoder


def _train_step(model, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (4, 16), generator=g)
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), tokens[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_twins_start_equal_and_sync_makes_them_equal_again():
    twins = build_twins(tiny_decoder, adamw(1e-2), adamw(1e-2))
    assert _params_equal(twins.proxy, twins.reference)
    assert twins.proxy is not twins.reference
    _train_step(twins.proxy, twins.proxy_optimizer, 1)
    _train_step(twins.reference, twins.reference_optimizer, 2)
    assert not _params_equal(twins.proxy, twins.reference)
    assert twins.parameter_distance() > 0
    twins.sync()
    assert _params_equal(twins.proxy, twins.reference)
    assert twins.parameter_distance() == 0.0
    # optimizer state copied too: the reference continues exactly as the proxy would
    for p_ref, p_prx in zip(twins.reference.parameters(), twins.proxy.parameters()):
        s_ref, s_prx = twins.reference_optimizer.state[p_ref], twins.proxy_optimizer.state[p_prx]
        for k in s_prx:
            assert torch.equal(s_ref[k], s_prx[k])


def test_synced_reference_is_the_proxys_exact_continuation():
    twins = build_twins(tiny_decoder, adamw(1e-2), adamw(1e-2))
    _train_step(twins.proxy, twins.proxy_optimizer, 1)
    twins.sync()
    _train_step(twins.proxy, twins.proxy_optimizer, 3)
    _train_step(twins.reference, twins.reference_optimizer, 3)
    assert _params_equal(twins.proxy, twins.reference)


def test_sync_does_not_reallocate():
    twins = build_twins(tiny_decoder, adamw(1e-2), adamw(1e-2))
    _train_step(twins.proxy, twins.proxy_optimizer, 1)
    _train_step(twins.reference, twins.reference_optimizer, 1)
    twins.sync()  # first sync after both stepped: state exists on both sides
    before = [p.data_ptr() for p in twins.reference.parameters()]
    state_before = [
        v.data_ptr() for s in twins.reference_optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    ]
    for seed in range(3):
        _train_step(twins.proxy, twins.proxy_optimizer, 10 + seed)
        _train_step(twins.reference, twins.reference_optimizer, 20 + seed)
        twins.sync()
    assert [p.data_ptr() for p in twins.reference.parameters()] == before
    state_after = [
        v.data_ptr() for s in twins.reference_optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    ]
    assert state_after == state_before
