"""Training checkpoints (tandem_components/training/state.py): exact resume, keep-last-k, and refusal of
every kind of damaged checkpoint with one line naming the file."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tandem_components.data.loader import PerDomainSampler, WeightedDomainLoader
from tandem_components.errors import TandemError
from tandem_components.estimators import TandemEstimator
from tandem_components.mixture.state import MixtureState
from tandem_components.torchtune_api import get_cosine_schedule_with_warmup
from tandem_components.training.state import (
    MANIFEST_NAME,
    config_fingerprint,
    find_latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
    truncate_trajectory,
)
from tandem_components.training.twins import build_twins
from tests.helpers import adamw, patterned_tokens, tiny_decoder

DOMAINS = ["a", "b", "c"]
EPISODE_LEN, PROBE_STEPS = 3, 2  # E, K
FINGERPRINT = "f" * 64


class TinyRun:
    """The recipe's loop in miniature: twins, a cosine schedule, α updates, loaders and global RNGs."""

    def __init__(self, init_seed: int = 0):
        tokens = [patterned_tokens(5 + m, 3 * m, 2_000) for m in range(len(DOMAINS))]
        self.twins = build_twins(lambda: tiny_decoder(seed=init_seed), adamw(1e-2), adamw(1e-2))
        self.scheduler = get_cosine_schedule_with_warmup(self.twins.proxy_optimizer, 2, 20)
        self.mixture = MixtureState(DOMAINS, lr=0.5, min_weight=0.05)
        self.estimator = TandemEstimator(self.twins, len(DOMAINS), gamma=1.0, max_grad_norm=1.0)
        self.loader = WeightedDomainLoader(tokens, self.mixture.weights, batch_size=4, seq_len=8, seed=0)
        self.val_loader = WeightedDomainLoader(tokens, self.mixture.weights, batch_size=2, seq_len=8, seed=1)
        self.sampler = PerDomainSampler(tokens, per_domain=2, seq_len=8, seed=2)
        self.batches: list[torch.Tensor] = []
        self.noise: list[float] = []

    def step(self, step: int) -> None:
        k = (step - 1) % EPISODE_LEN
        if k == 0:
            self.estimator.begin_episode()
        batch = next(self.loader)
        self.batches.append(batch.tokens)
        model, optimizer = self.twins.proxy, self.twins.proxy_optimizer
        logits = model(batch.tokens)
        # global generators in the loss, so that a missed RNG restore changes the parameters
        noise = 1.0 + 1e-3 * (torch.rand(()) + float(np.random.rand()) + random.random())
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels.flatten()) * noise
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.noise.append(float(noise))
        if k < PROBE_STEPS:
            self.estimator.probe_step(batch, next(self.val_loader))
        if k == PROBE_STEPS - 1:
            alpha = self.mixture.step(self.estimator.delta(self.sampler.sample()))
            self.loader.set_weights(alpha)

    def state(self) -> dict:
        return {
            "proxy_model": self.twins.proxy.state_dict(),
            "reference_model": self.twins.reference.state_dict(),
            "proxy_optimizer": self.twins.proxy_optimizer.state_dict(),
            "reference_optimizer": self.twins.reference_optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "mixture": self.mixture.state_dict(),
            "estimator": self.estimator.state_dict(),
            "train_loader": self.loader.state_dict(),
            "val_loader": self.val_loader.state_dict(),
            "probe_sampler": self.sampler.state_dict(),
        }

    def load(self, ckpt: dict) -> None:
        self.twins.proxy.load_state_dict(ckpt["proxy_model"])
        self.twins.reference.load_state_dict(ckpt["reference_model"])
        self.twins.proxy_optimizer.load_state_dict(ckpt["proxy_optimizer"])
        self.twins.reference_optimizer.load_state_dict(ckpt["reference_optimizer"])
        self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.mixture.load_state_dict(ckpt["mixture"])
        self.estimator.load_state_dict(ckpt["estimator"])
        self.loader.load_state_dict(ckpt["train_loader"])
        self.val_loader.load_state_dict(ckpt["val_loader"])
        self.sampler.load_state_dict(ckpt["probe_sampler"])


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _parameters(run: TinyRun) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*run.twins.proxy.parameters(), *run.twins.reference.parameters()]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread (2 shared cores), and the same count holds for both runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def saved(one_thread, tmp_path_factory):
    """An uninterrupted 6-step run, and a checkpoint written by a second run after its step 4."""
    total, at = 6, 4  # step 4 is inside an episode: the reference differs from the proxy there
    _seed_globals(0)
    full = TinyRun()
    for step in range(1, total + 1):
        full.step(step)
    _seed_globals(0)
    first = TinyRun()
    for step in range(1, at + 1):
        first.step(step)
    root = tmp_path_factory.mktemp("ckpt")
    path = save_training_checkpoint(root, at, first.state(), fingerprint=FINGERPRINT)
    return {"full": full, "path": path, "at": at, "total": total}


def test_resume_continues_bit_identically(saved):
    _seed_globals(123)  # a different process: other global RNG states, other initial weights
    resumed = TinyRun(init_seed=7)
    ckpt = load_training_checkpoint(saved["path"], FINGERPRINT)
    assert ckpt["step"] == saved["at"]
    resumed.load(ckpt)
    restore_rng_state(ckpt["rng"])
    for step in range(saved["at"] + 1, saved["total"] + 1):
        resumed.step(step)
    full = saved["full"]
    for got, want in zip(resumed.batches, full.batches[saved["at"]:], strict=True):
        assert torch.equal(got, want)
    assert resumed.noise == full.noise[saved["at"]:]
    for got, want in zip(_parameters(resumed), _parameters(full), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(resumed.mixture.weights, full.mixture.weights)
    assert resumed.mixture.num_updates == full.mixture.num_updates == 2
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()
    assert torch.equal(resumed.estimator.last_delta, full.estimator.last_delta)


def test_loading_never_falls_back_to_pickle(saved, monkeypatch):
    calls = []
    real_load = torch.load

    def load_spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load_spy)
    ckpt = load_training_checkpoint(saved["path"], FINGERPRINT)
    manifest = json.loads((saved["path"] / MANIFEST_NAME).read_text())
    assert len(calls) == len(manifest["files"]) and all(c is True for c in calls)
    assert set(ckpt) >= {"proxy_model", "lr_scheduler", "rng", "mixture", "train_loader", "step"}
    assert ckpt["lr_scheduler"]["lr_lambdas"] == [None]  # the closure is rebuilt from the config


def test_state_that_needs_pickle_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"sched\[0\].*not weights_only loadable"):
        save_training_checkpoint(tmp_path, 1, {"sched": [lambda s: 1.0]}, fingerprint=FINGERPRINT)
    with pytest.raises(TypeError, match="ndarray"):
        save_training_checkpoint(tmp_path, 1, {"x": {"a": np.zeros(2)}}, fingerprint=FINGERPRINT)
    assert list(tmp_path.iterdir()) == []


def test_keep_last_k_and_find_latest(tmp_path):
    assert find_latest_checkpoint(tmp_path / "none") is None
    for step in (10, 20, 30, 40):
        state = {"x": {"v": torch.tensor([step])}}
        save_training_checkpoint(tmp_path, step, state, fingerprint=FINGERPRINT, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030", "step_00000040"]
    assert find_latest_checkpoint(tmp_path).name == "step_00000040"
    # a killed save leaves only a hidden partial dir: ignored, and cleaned by the next save
    (tmp_path / ".step_00000050.partial-xyz").mkdir()
    assert find_latest_checkpoint(tmp_path).name == "step_00000040"
    save_training_checkpoint(tmp_path, 40, {"x": {"v": torch.tensor([41])}}, fingerprint=FINGERPRINT, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000030", "step_00000040"]
    assert load_training_checkpoint(tmp_path / "step_00000040", FINGERPRINT)["x"]["v"].item() == 41
    # resumed from step 30: step 40 is from the abandoned run and goes once step 35 is written
    save_training_checkpoint(tmp_path, 35, {"x": {"v": torch.tensor([35])}}, fingerprint=FINGERPRINT, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030", "step_00000035"]


def _copy(path: Path, dest: Path) -> Path:
    return Path(shutil.copytree(path, dest))


def _flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_any_corrupted_byte_is_refused_naming_the_file(saved, tmp_path):
    for name in sorted(p.name for p in saved["path"].iterdir()):
        ckpt = _copy(saved["path"], tmp_path / name)
        _flip_byte(ckpt / name)
        with pytest.raises(TandemError) as e:
            load_training_checkpoint(ckpt, FINGERPRINT)
        message = str(e.value)
        assert str(ckpt / name) in message and "\n" not in message, message


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage_manifest", "fingerprint", "unpicklable"])
def test_damaged_checkpoint_is_refused_with_one_line(saved, tmp_path, damage):
    ckpt = _copy(saved["path"], tmp_path / "ckpt")
    target, expected = ckpt / "proxy_optimizer.pt", "truncated"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "delete":
        target.unlink()
        expected = "missing"
    elif damage == "garbage_manifest":
        target, expected = ckpt / MANIFEST_NAME, "unreadable checkpoint manifest"
        target.write_text('{"format": "tandem-training-checkpoint/v1", "step": ')
    elif damage == "fingerprint":
        target, expected = ckpt / MANIFEST_NAME, "different config"
    else:  # a file whose checksum matches but that needs pickle: rewrite it and its manifest entry
        torch.save({"f": np.zeros(3)}, target)
        manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
        manifest["files"][target.name] = {
            "bytes": target.stat().st_size, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()
        }
        (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
        expected = "unreadable checkpoint file"
    with pytest.raises(TandemError) as e:
        load_training_checkpoint(ckpt, "0" * 64 if damage == "fingerprint" else FINGERPRINT)
    message = str(e.value)
    assert str(target) in message and expected in message and "\n" not in message, message


def test_fingerprint_ignores_only_resume_safe_keys():
    cfg = {"output_dir": "a", "max_steps": 10, "seed": 0, "data": {"shards": "x", "seq_len": 8},
           "eval": {"every_n_steps": 5}, "metric_logger": {"log_dir": "a/logs"}}
    base = config_fingerprint(cfg, extra={"corpus": "abc"})
    moved = {**cfg, "output_dir": "b", "data": {"shards": "y", "seq_len": 8}, "eval": {}, "resume": True}
    assert config_fingerprint(moved, extra={"corpus": "abc"}) == base
    assert config_fingerprint({**cfg, "max_steps": 11}, extra={"corpus": "abc"}) != base
    assert config_fingerprint({**cfg, "data": {"shards": "x", "seq_len": 9}}, extra={"corpus": "abc"}) != base
    assert config_fingerprint(cfg, extra={"corpus": "abd"}) != base


def test_truncate_trajectory(tmp_path):
    path = tmp_path / "mixture_trajectory.jsonl"
    rows = [json.dumps({"update": i, "step": 5 * i}) for i in range(1, 5)]
    path.write_text("\n".join(rows) + '\n{"update": 5, "st')  # killed mid-write
    assert truncate_trajectory(path, 2) == 2
    assert path.read_text() == rows[0] + "\n" + rows[1] + "\n"
    assert truncate_trajectory(tmp_path / "new.jsonl", 0) == 0
    with pytest.raises(TandemError, match="holds 2 complete rows, the checkpoint has 3"):
        truncate_trajectory(path, 3)


# ---- the sharded part (DCP) and the checks a resume makes before touching anything -------------------------
from tandem_components.training.sharded_state import get_sharded_state, set_sharded_state  # noqa: E402


def _model_and_optimizer(seed: int):
    model = tiny_decoder(seed=seed)
    optimizer = adamw(1e-2)(model.parameters())
    return model, optimizer


@pytest.fixture
def sharded_checkpoint(tmp_path):
    """A checkpoint whose model and optimizer went through DCP (one process: one shard file)."""
    model, optimizer = _model_and_optimizer(0)
    model(torch.arange(16).view(2, 8)).float().mean().backward()
    optimizer.step()
    path = save_training_checkpoint(tmp_path / "ckpts", 3, {"x": {"v": torch.tensor([3])}}, fingerprint=FINGERPRINT,
                                    sharded=get_sharded_state({"model": (model, optimizer)}), domains=DOMAINS)
    return path, model, optimizer


def test_the_sharded_part_round_trips_into_a_fresh_model(sharded_checkpoint):
    path, model, optimizer = sharded_checkpoint
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["format"] == "tandem-training-checkpoint/v2" and manifest["world_size"] == 1
    assert any(name.startswith("sharded/") and name.endswith(".distcp") for name in manifest["files"])
    fresh, fresh_optimizer = _model_and_optimizer(seed=5)
    parts = {"model": (fresh, fresh_optimizer)}
    state = get_sharded_state(parts)
    ckpt = load_training_checkpoint(path, FINGERPRINT, domains=DOMAINS, sharded=state)
    set_sharded_state(parts, state)
    assert ckpt["step"] == 3 and ckpt["sharded"]
    for got, want in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(got, want)
    want = next(iter(optimizer.state.values()))
    got = next(iter(fresh_optimizer.state.values()))
    assert torch.equal(got["exp_avg_sq"], want["exp_avg_sq"]) and float(got["step"]) == float(want["step"]) == 1.0


@pytest.mark.parametrize("damage", ["delete_shard", "truncate_shard", "other_domains"])
def test_a_damaged_sharded_checkpoint_is_refused_before_anything_loads(sharded_checkpoint, damage):
    path, _, _ = sharded_checkpoint
    shard = next((path / "sharded").glob("*.distcp"))
    domains, expected, target = DOMAINS, "", shard
    if damage == "delete_shard":
        shard.unlink()
        expected = "missing from training checkpoint"
    elif damage == "truncate_shard":
        shard.write_bytes(shard.read_bytes()[:100])
        expected = "truncated or corrupt"
    else:
        domains, target, expected = ["a", "b", "z"], path / MANIFEST_NAME, "written for the domains ['a', 'b', 'c']"
    fresh, fresh_optimizer = _model_and_optimizer(seed=5)
    state = get_sharded_state({"model": (fresh, fresh_optimizer)})
    before = [t.clone() for t in fresh.state_dict().values()]
    with pytest.raises(TandemError) as e:
        load_training_checkpoint(path, FINGERPRINT, domains=domains, sharded=state)
    message = str(e.value)
    assert str(target) in message and expected in message and "\n" not in message, message
    assert e.value.every_rank  # all ranks verify together and raise the same line
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.state_dict().values()))  # nothing touched
