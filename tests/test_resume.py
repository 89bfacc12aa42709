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


def test_a_v1_checkpoint_is_refused_in_one_line_and_nothing_is_written(embedded_shards, tmp_path, monkeypatch, capsys):
    """Format v1 (single process, before sharded checkpoints) is no longer read (README, training/state.py):
    resuming from one is one line naming the file and the format, before any file is written."""
    import json

    from tests.recipe_runner import run_in_process

    out = tmp_path / "from_v1"
    step = out / "checkpoints" / "step_00000010"
    step.mkdir(parents=True)
    (step / "rng.pt").write_bytes(b"x")
    manifest = {"format": "tandem-training-checkpoint/v1", "step": 10, "config_fingerprint": "0" * 64,
                "files": {"rng.pt": {"bytes": 1, "sha256": "0" * 64}}}
    (step / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p for p in out.rglob("*"))
    args = [*TINY, "max_steps=20", f"data.shards={embedded_shards}", f"output_dir={out}", "resume=true"]
    assert run_in_process("pretrain", STAGE1, *args, monkeypatch=monkeypatch) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tandem: error:")]
    assert len(err) == 1 and "format v1" in err[0] and "manifest.json" in err[0], err
    assert sorted(p for p in out.rglob("*")) == before
