"""Cost model (tandem_components/training/cost_model.py): hand-computed cases."""

import pytest
import torch

from tandem_components.models import decoder
from tandem_components.training.cost_model import (
    UnitCosts,
    decoder_flops_per_token,
    decoder_matmul_params,
    episode_counts,
    mfu,
    predict_fixed_time,
    predict_overhead_ratio,
    predict_stage1_time,
    tandem_flops_per_proxy_token,
)


def test_counts_whole_episodes():
    # 30 steps, E=10, K=5: 3 episodes -> 3 syncs, 15 reference steps, 3 updates, 6 probe forwards
    n = episode_counts(30, 10, 5)
    assert (n.proxy_steps, n.reference_steps, n.updates, n.probe_forwards, n.syncs) == (30, 15, 3, 6, 3)


def test_counts_partial_last_episode():
    # 23 steps, E=10, K=5: 2 full episodes + 3 steps: sync yes, 3 reference steps, no update
    n = episode_counts(23, 10, 5)
    assert (n.reference_steps, n.updates, n.probe_forwards, n.syncs) == (13, 2, 4, 3)
    # 27 steps: the partial episode reaches k = K - 1 -> it updates
    n = episode_counts(27, 10, 5)
    assert (n.reference_steps, n.updates, n.probe_forwards, n.syncs) == (15, 3, 6, 3)


def test_counts_match_the_recipe_loop():
    # the loop of recipes/pretrain.py, written out
    for steps, e, k in [(1, 1, 1), (7, 3, 2), (40, 10, 5), (41, 10, 10), (100, 20, 5)]:
        ref = upd = syn = 0
        for step in range(1, steps + 1):
            pos = (step - 1) % e
            syn += pos == 0
            ref += pos < k
            upd += pos == k - 1
        n = episode_counts(steps, e, k)
        assert (n.reference_steps, n.updates, n.syncs) == (ref, upd, syn)


def test_prediction_hand_computed():
    u = UnitCosts(train_step_s=1.0, reference_step_s=2.0, probe_forward_s=0.5, sync_s=0.1)
    # 30 steps, E=10, K=5: 30*1 + 15*2 + 6*0.5 + 3*0.1 = 63.3
    assert predict_stage1_time(u, 30, 10, 5) == pytest.approx(63.3)
    assert predict_fixed_time(u, 30) == pytest.approx(30.0)
    assert predict_overhead_ratio(u, 30, 10, 5) == pytest.approx(2.11)
    # E = K = 1: every step is a whole episode: 1 + 2 + 2*0.5 + 0.1 = 4.1 per step
    assert predict_stage1_time(u, 10, 1, 1) == pytest.approx(41.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        episode_counts(10, 5, 6)
    with pytest.raises(ValueError):
        episode_counts(10, 0, 1)


def test_matmul_params_match_the_real_decoder():
    dims = {"vocab_size": 512, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "embed_dim": 64}
    model = decoder(max_seq_len=32, **dims)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert decoder_matmul_params(**dims) == linear
    # by hand: head_dim 16, hidden = 256 * ceil(int(2*256/3)=170 / 256) = 256
    # per layer: 2*64*64 + 2*64*32 + 3*64*256 = 8192 + 4096 + 49152 = 61440; output 64*512 = 32768
    assert decoder_matmul_params(**dims) == 2 * 61440 + 32768


def test_flops_per_token_and_mfu():
    dims = {"vocab_size": 512, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "embed_dim": 64}
    # 6 * 155648 + 12 * 2 * 64 * 128 = 933888 + 196608
    assert decoder_flops_per_token(seq_len=128, **dims) == 1130496.0
    assert mfu(1000.0, 1e9, peak_flops=1e13) == pytest.approx(0.1)
    # E=10, K=5, val batch = train batch, no probe: (10 + 10) / 10 = 2x
    assert tandem_flops_per_proxy_token(1.0, 10, 5) == pytest.approx(2.0)
    # probe batch of 7 train batches, 2 forwards of 1/3 step: + 14/3 per episode
    assert tandem_flops_per_proxy_token(1.0, 10, 5, probe_batch_ratio=7.0) == pytest.approx(2.0 + 14 / 30)
