"""The named baseline mixtures of ``mixture.weights`` (tandem_components/mixture/named.py): ``temperature``
(p_m ∝ n_m^τ) and ``unimax`` (the run's tokens uniform over domains, capped at max_epochs * n_m), checked
against hand-computed weights; bad values are one-line TandemErrors naming the key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tandem_components.config_validation import DATA_RESTRICTED_SCHEMA, validate_pretrain_config
from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tandem_components.mixture.named import named_or_mapping_weights, resolve_initial_weights
from tests.conftest import REPO_ROOT

D3 = ["a", "b", "c"]
STAGE1 = REPO_ROOT / "configs" / "pretrain" / "tiny_stage1.yaml"


def _close(weights: torch.Tensor, expected: list[float]) -> None:
    assert weights.dtype == torch.float64
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def _refused(culprit: str, fn, *args, **kwargs) -> str:
    with pytest.raises(TandemError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert culprit in message and "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------ temperature


def test_temperature_half():
    # sqrt([100, 400, 1600]) = [10, 20, 40]
    w = named_or_mapping_weights("temperature", D3, [100, 400, 1600], key="mixture.weights", temperature=0.5)
    _close(w, [10 / 70, 20 / 70, 40 / 70])


def test_temperature_zero_is_uniform_and_one_is_natural():
    n = [100, 400, 1600]
    _close(named_or_mapping_weights("temperature", D3, n, key="mixture.weights", temperature=0), [1 / 3] * 3)
    _close(named_or_mapping_weights("temperature", D3, n, key="mixture.weights", temperature=1), [1 / 21, 4 / 21, 16 / 21])
    _close(named_or_mapping_weights("temperature", D3, n, key="mixture.weights", temperature=1.0),
           named_or_mapping_weights("natural", D3, n, key="mixture.weights").tolist())


def test_temperature_large_does_not_overflow():
    w = named_or_mapping_weights("temperature", D3, [10**9, 2 * 10**9, 3 * 10**9], key="mixture.weights", temperature=60)
    assert torch.isfinite(w).all() and abs(float(w.sum()) - 1) < 1e-12 and w[2] > 0.99


@pytest.mark.parametrize("tau", [-0.5, None, "half", True, float("nan"), float("inf")])
def test_bad_temperature(tau):
    message = _refused("mixture.temperature", named_or_mapping_weights, "temperature", D3, [1, 2, 3], key="mixture.weights",
                       temperature=tau)
    assert ">= 0" in message


# ------------------------------------------------------------------------------------------ unimax


def test_unimax_cap_binds_on_the_small_domain():
    # share 1000 each; a is capped at 2 * 100 = 200, its 800 spread over b and c: 1400 each (caps 2000, 20000)
    w = named_or_mapping_weights("unimax", D3, [100, 1000, 10000], key="mixture.weights", max_epochs=2, run_tokens=3000)
    _close(w, [200 / 3000, 1400 / 3000, 1400 / 3000])


def test_unimax_caps_cascade():
    # share 1500 each: a capped at 100, then (4500 - 100) / 2 = 2200 > b's cap 1000, so c gets 3400
    w = named_or_mapping_weights("unimax", D3, [100, 1000, 10000], key="mixture.weights", max_epochs=1, run_tokens=4500)
    _close(w, [100 / 4500, 1000 / 4500, 3400 / 4500])


def test_unimax_domain_order_does_not_matter():
    w = named_or_mapping_weights("unimax", D3, [10000, 100, 1000], key="mixture.weights", max_epochs=2, run_tokens=3000)
    _close(w, [1400 / 3000, 200 / 3000, 1400 / 3000])


def test_unimax_without_a_binding_cap_is_uniform():
    w = named_or_mapping_weights("unimax", D3, [100, 1000, 10000], key="mixture.weights", max_epochs=100, run_tokens=3000)
    _close(w, [1 / 3] * 3)


def test_unimax_exactly_at_the_cap():
    # C * sum(n) == N: every domain gets exactly C * n_m, i.e. the natural mixture
    w = named_or_mapping_weights("unimax", D3, [100, 1000, 10000], key="mixture.weights", max_epochs=1, run_tokens=11100)
    _close(w, [100 / 11100, 1000 / 11100, 10000 / 11100])


@pytest.mark.parametrize("cap", [0, -1, None, "two", False, float("nan"), float("inf")])
def test_bad_max_epochs(cap):
    message = _refused("mixture.max_epochs", named_or_mapping_weights, "unimax", D3, [100, 1000, 10000], key="mixture.weights",
                       max_epochs=cap, run_tokens=3000)
    assert "> 0" in message


def test_max_epochs_too_small_to_place_the_run():
    # 2 * 11100 = 22200 < 30000
    message = _refused("mixture.max_epochs", named_or_mapping_weights, "unimax", D3, [100, 1000, 10000], key="mixture.weights",
                       max_epochs=2, run_tokens=30000)
    assert "22,200" in message and "30,000" in message


def test_unimax_needs_run_tokens():
    _refused("mixture.reference_weights", named_or_mapping_weights, "unimax", D3, [1, 2, 3], key="mixture.reference_weights",
             max_epochs=2)


def test_unknown_name_lists_the_allowed_ones():
    message = _refused("mixture.weights", named_or_mapping_weights, "unimix", D3, [1, 2, 3], key="mixture.weights")
    for name in ("'uniform'", "'natural'", "'temperature'", "'unimax'", "mapping"):
        assert name in message


# ------------------------------------------------------------------------------------------ from the config


def test_resolve_initial_weights_reads_the_mixture_keys():
    n = [100, 1000, 10000]
    mix = OmegaConf.create({"weights": "temperature", "temperature": 0.5})
    _close(resolve_initial_weights(mix, D3, [100, 400, 1600]), [10 / 70, 20 / 70, 40 / 70])
    mix = OmegaConf.create({"weights": "unimax", "max_epochs": 2})
    _close(resolve_initial_weights(mix, D3, n, run_tokens=3000), [200 / 3000, 1400 / 3000, 1400 / 3000])
    _refused("mixture.temperature", resolve_initial_weights, OmegaConf.create({"weights": "temperature"}), D3, n)
    _refused("mixture.max_epochs", resolve_initial_weights, OmegaConf.create({"weights": "unimax"}), D3, n,
             run_tokens=3000)


@pytest.fixture
def stage1(embedded_shards, tmp_path):
    cfg = OmegaConf.load(STAGE1)
    cfg.data.shards = str(embedded_shards)
    cfg.output_dir = str(tmp_path / "out")
    return cfg


def test_config_validation(stage1):
    run_tokens = stage1.max_steps * stage1.data.batch_size * stage1.data.seq_len  # batch_size is global
    corpus = ShardedCorpus.open(stage1.data.shards)
    train = sum(corpus.num_tokens(d, "train") for d in corpus.domains)

    stage1.mixture.weights, stage1.mixture.temperature = "temperature", 0.5
    validate_pretrain_config(stage1)
    stage1.mixture.temperature = -1
    _refused("mixture.temperature", validate_pretrain_config, stage1)
    del stage1.mixture["temperature"]
    _refused("mixture.temperature", validate_pretrain_config, stage1)

    stage1.mixture.weights, stage1.mixture.max_epochs = "unimax", 2 * run_tokens / train
    validate_pretrain_config(stage1)
    stage1.mixture.max_epochs = 0
    _refused("mixture.max_epochs", validate_pretrain_config, stage1)
    stage1.mixture.max_epochs = 0.5 * run_tokens / train  # C * sum(n) = N / 2
    _refused("mixture.max_epochs", validate_pretrain_config, stage1)
    stage1.mixture.max_epochs = 1.5 * run_tokens / train  # enough: the batch is global, so on 2 ranks too
    validate_pretrain_config(stage1)
    validate_pretrain_config(stage1, world_size=2)

    # data-restricted: n = the token budget, so the same C places fewer tokens
    stage1.data.total_token_budget = train // 2
    stage1.mixture.max_epochs = 1.5 * run_tokens / train
    _refused("mixture.max_epochs", validate_pretrain_config, stage1, schema=DATA_RESTRICTED_SCHEMA)
    stage1.mixture.max_epochs = 3 * run_tokens / train
    validate_pretrain_config(stage1, schema=DATA_RESTRICTED_SCHEMA)
