"""Exact resume: kill -9 a real run at a random step, resume it, and get a bit-identical result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from tests.recipe_runner import REPO_ROOT, TINY, tune_command, tune_env, tune_run

pytestmark = pytest.mark.slow

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
RUN = [*TINY, "max_steps=40", "mixture.episode_len=5", "mixture.probe_steps=2", "checkpoint.every_n_steps=5"]


def _updates_written(out) -> int:
    path = out / "mixture_trajectory.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_9_then_resume_is_bit_identical(embedded_shards, tmp_path):
    shards = f"data.shards={embedded_shards}"
    reference, crashed = tmp_path / "uninterrupted", tmp_path / "crashed"
    proc = tune_run("pretrain", STAGE1, *RUN, shards, f"output_dir={reference}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Kill at a random point after the first checkpoint (step 5) and before the end (8 updates in all).
    kill_after_updates = random.Random(os.getpid()).randint(2, 6)
    run = subprocess.Popen(
        tune_command("pretrain", STAGE1, *RUN, shards, f"output_dir={crashed}"), cwd=REPO_ROOT,
        env=tune_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while _updates_written(crashed) < kill_after_updates and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run finished before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (crashed / "eval.json").exists()
    checkpoints = sorted((crashed / "checkpoints").glob("step_*"))
    assert checkpoints, "no checkpoint was written before the kill"

    proc = tune_run("pretrain", STAGE1, *RUN, shards, f"output_dir={crashed}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr

    for name in ("mixture_trajectory.jsonl", "eval.json", "summary.json"):
        a, b = (reference / name).read_text(), (crashed / name).read_text()
        if name == "summary.json":  # wall time differs, nothing else may
            import json
            a, b = json.loads(a), json.loads(b)
            a.pop("wall_time_s"), b.pop("wall_time_s")
        assert a == b, name
    assert (reference / "model" / "model.safetensors").read_bytes() == (crashed / "model" / "model.safetensors").read_bytes()


def test_resume_refuses_a_checkpoint_with_a_corrupted_byte(embedded_shards, tmp_path, monkeypatch, capsys):
    from tests.recipe_runner import run_in_process

    out = tmp_path / "run"
    args = [*TINY, "max_steps=10", "mixture.episode_len=5", "mixture.probe_steps=2", "checkpoint.every_n_steps=5",
            f"data.shards={embedded_shards}", f"output_dir={out}"]
    assert run_in_process("pretrain", STAGE1, *args, monkeypatch=monkeypatch) == 0
    weights = out / "checkpoints" / "step_00000005" / "sharded" / "__0_0.distcp"  # the models' shard
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    eval_before = (out / "eval.json").read_bytes()
    capsys.readouterr()
    assert run_in_process("pretrain", STAGE1, *args, "resume=true", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(weights) in err[0], err
    assert (out / "eval.json").read_bytes() == eval_before  # nothing rewritten


def test_bad_config_through_tune_run_is_one_line(embedded_shards, tmp_path):
    proc = tune_run("pretrain", STAGE1, f"data.shards={embedded_shards}", f"output_dir={tmp_path / 'out'}",
                    "mixture.probe_steps=11")
    lines = [line for line in proc.stderr.splitlines() if "Skipping import of cpp extensions" not in line]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "mixture.probe_steps" in lines[0]
    assert not (tmp_path / "out").exists()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(embedded_shards, tmp_path, monkeypatch, capsys):
    from tests.recipe_runner import run_in_process

    out = tmp_path / "run"
    args = [*TINY, "max_steps=20", "checkpoint.every_n_steps=5", "mixture.weights=uniform", "mixture.weights_from=null",
            "model._component_=tests.helpers.diverging_decoder", "model.nan_after=12", "model.num_layers=1",
            f"data.shards={embedded_shards}", f"output_dir={out}"]
    capsys.readouterr()
    assert run_in_process("pretrain", "configs/pretrain/tiny_stage2.yaml", *args, monkeypatch=monkeypatch) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tandem: error")]
    assert len(err) == 1 and "not finite" in err[0] and "step_00000010" in err[0], err
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))] == ["step_00000005", "step_00000010"]
    assert not (out / "eval.json").exists() and not (out / "model").exists()
    from tandem_components.training.state import load_training_checkpoint
    assert load_training_checkpoint(out / "checkpoints" / "step_00000010", None)["step"] == 10  # intact


def _write_v1_checkpoint(v2, dest, fingerprint: str) -> None:
    """The checkpoint a single-process run of the previous version wrote at the same step (format v1):
    the models and optimizers as full state dicts (the optimizers' own, numbered by parameter order),
    loader states with their rank and per-rank sizes, one RNG state, and a manifest of checksums."""
    import hashlib
    import json

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dest.mkdir(parents=True)
    scratch = dest.parent / "v2_as_one_file.pt"
    dcp_to_torch_save(v2 / "sharded", scratch)
    full = torch.load(scratch, weights_only=True)
    scratch.unlink()

    def numbered(osd):
        order = [name for group in osd["param_groups"] for name in group["params"]]
        index = {name: i for i, name in enumerate(order)}
        return {"state": {index[n]: s for n, s in osd["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]}

    def v1_loader(sd):
        sd = dict(sd)
        sd["rank"] = 0
        for new, old in (("global_batch_size", "batch_size"), ("global_per_domain", "per_domain")):
            if new in sd:
                sd[old] = sd.pop(new)
        return sd

    components = {
        "model": full["model"]["model"], "optimizer": numbered(full["model"]["optimizer"]),
        "reference_model": full["reference"]["model"], "reference_optimizer": numbered(full["reference"]["optimizer"]),
        "rng": torch.load(v2 / "rng.pt", weights_only=True)["ranks"][0],
    }
    for name in ("lr_scheduler", "mixture", "estimator", "train_loader", "val_loader", "probe_sampler"):
        sd = torch.load(v2 / f"{name}.pt", weights_only=True)
        components[name] = v1_loader(sd) if name.endswith(("loader", "sampler")) else sd
    files = {}
    for name, value in components.items():
        torch.save(value, dest / f"{name}.pt")
        data = (dest / f"{name}.pt").read_bytes()
        files[f"{name}.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": "tandem-training-checkpoint/v1", "step": 10, "config_fingerprint": fingerprint,
                "torch_version": torch.__version__, "components": sorted(components), "files": files}
    (dest / "manifest.json").write_text(json.dumps(manifest))


def test_a_v1_checkpoint_resumes_with_a_notice(embedded_shards, tmp_path, monkeypatch, caplog):
    """Format v1 (single process, before sharded checkpoints) is read once, with a one-line notice, and
    the run continues exactly as if it had never stopped; its next checkpoints are sharded (v2)."""
    from omegaconf import OmegaConf

    from tandem_components.data.shards import ShardedCorpus
    from tandem_components.training.state import config_fingerprint
    from tests.recipe_runner import run_in_process

    args = [*TINY, "max_steps=20", "mixture.episode_len=5", "mixture.probe_steps=2", "checkpoint.every_n_steps=5",
            "mixture.probe_budget=null", f"data.shards={embedded_shards}"]  # v1 runs probed every domain
    reference = tmp_path / "uninterrupted"
    assert run_in_process("pretrain", STAGE1, *args, f"output_dir={reference}", monkeypatch=monkeypatch) == 0

    out = tmp_path / "from_v1"
    cfg = OmegaConf.merge(OmegaConf.load(REPO_ROOT / STAGE1), OmegaConf.from_dotlist([*args, f"output_dir={out}"]))
    v1_fingerprint = config_fingerprint(  # the old fingerprint held the world size
        cfg, extra={"corpus_index_sha256": ShardedCorpus.open(embedded_shards).index_sha256, "world_size": 1})
    _write_v1_checkpoint(reference / "checkpoints" / "step_00000010", out / "checkpoints" / "step_00000010", v1_fingerprint)
    rows = (reference / "mixture_trajectory.jsonl").read_text().splitlines()
    (out / "mixture_trajectory.jsonl").write_text("\n".join(rows[:2]) + "\n")  # the 2 updates before step 10
    caplog.clear()
    assert run_in_process("pretrain", STAGE1, *args, f"output_dir={out}", "resume=true", monkeypatch=monkeypatch) == 0
    assert "a single-process checkpoint (format v1), read once" in caplog.text
    for name in ("mixture_trajectory.jsonl", "eval.json", "eval_test.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert (out / "model" / "model.safetensors").read_bytes() == (reference / "model" / "model.safetensors").read_bytes()
    assert (out / "checkpoints" / "step_00000015" / "sharded" / ".metadata").is_file()  # written as v2
