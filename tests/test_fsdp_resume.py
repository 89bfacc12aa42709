"""Sharded training checkpoints (DCP) of a 2-rank FSDP2 stage-1 run: killed with SIGKILL at a random update,
resumed on 2 ranks (bit-identical to an uninterrupted run), on 1 rank (resharded), and a 1-rank checkpoint
on 2 ranks; a corrupted shard is refused naming the file."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.recipe_runner import REPO_ROOT, TINY, tune_command, tune_env, tune_run

pytestmark = pytest.mark.slow

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
TWO = ["--nproc_per_node", "2"]
RUN = [*TINY, "max_steps=40", "mixture.episode_len=5", "mixture.probe_steps=2", "checkpoint.every_n_steps=5",
       "mixture.probe_seqs_per_domain=4", "mixture.probe_budget=8", "mixture.val_batch_size=8",
       "mixture.delta_scale=none"]  # a bounded probe: its turns resume across world sizes too


def _rows(out) -> list[dict]:
    path = out / "mixture_trajectory.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _summary(out) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_time_s")
    return summary


def _eval(out) -> dict:
    return {d: e["loss"] for d, e in json.loads((out / "eval.json").read_text())["domains"].items()}


def _kill_at_random_update(args: list[str], out) -> int:
    """Start a 2-rank run and SIGKILL all of it (the launcher and both ranks at once, as a lost node would)
    after a random number of α updates, past the first checkpoint. Returns that number."""
    kill_after = random.Random(os.getpid()).randint(2, 6)
    run = subprocess.Popen(tune_command("pretrain", STAGE1, *args, f"output_dir={out}", launcher=TWO),
                           cwd=REPO_ROOT, env=tune_env(TWO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_rows(out)) < kill_after and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run finished before it could be killed"
    for pid in [run.pid, *_descendants(run.pid)]:  # torchrun starts each rank in a session of its own
        os.kill(pid, signal.SIGKILL)
    run.wait()
    return kill_after


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), found before any is killed."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def runs(embedded_shards, tmp_path_factory):
    """An uninterrupted 2-rank run, and a 2-rank run killed mid-way (its output copied before any resume)."""
    root = tmp_path_factory.mktemp("fsdp_resume")
    args = [*RUN, f"data.shards={embedded_shards}"]
    proc = tune_run("pretrain", STAGE1, *args, f"output_dir={root / 'uninterrupted'}", launcher=TWO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = root / "killed"
    _kill_at_random_update(args, killed)
    assert not (killed / "eval.json").exists()
    assert sorted((killed / "checkpoints").glob("step_*")), "no checkpoint was written before the kill"
    return {"root": root, "args": args, "uninterrupted": root / "uninterrupted", "killed": killed}


def _copy_killed(runs, name: str):
    return shutil.copytree(runs["killed"], runs["root"] / name)


def test_kill_9_then_resume_on_two_ranks_is_bit_identical(runs):
    out = _copy_killed(runs, "resumed_on_2")
    proc = tune_run("pretrain", STAGE1, *runs["args"], f"output_dir={out}", "resume=true", launcher=TWO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("resumed from") == 1  # said once, by rank 0
    ref = runs["uninterrupted"]
    assert (out / "mixture_trajectory.jsonl").read_text() == (ref / "mixture_trajectory.jsonl").read_text()
    assert (out / "eval.json").read_text() == (ref / "eval.json").read_text()
    assert (out / "eval_test.json").read_text() == (ref / "eval_test.json").read_text()
    assert _summary(out) == _summary(ref)
    assert (out / "model" / "model.safetensors").read_bytes() == (ref / "model" / "model.safetensors").read_bytes()


def test_a_two_rank_checkpoint_resumes_on_one_rank_and_back(runs):
    """2 -> 1: DCP reshards the twins and their optimizers into one process; the loaders continue the same
    global batches. Then 1 -> 2 from a checkpoint the 1-rank run wrote. α and the losses stay within the
    float noise of 1 vs 2 ranks (different reduction orders), far below anything a mixture changes."""
    ref = runs["uninterrupted"]
    one = _copy_killed(runs, "resumed_on_1")
    proc = tune_run("pretrain", STAGE1, *runs["args"], f"output_dir={one}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written on 2 rank(s), resharded to 1" in proc.stderr
    _assert_close(one, ref)

    back = runs["root"] / "back_on_2"  # 1 -> 2: the newest checkpoint the 1-rank run wrote, on 2 ranks
    shutil.copytree(one, back)
    written_on_one = [p for p in sorted((back / "checkpoints").glob("step_*"))
                      if json.loads((p / "manifest.json").read_text())["world_size"] == 1]
    assert written_on_one, "the 1-rank run wrote no checkpoint"
    proc = tune_run("pretrain", STAGE1, *runs["args"], f"output_dir={back}", f"resume={written_on_one[-1]}",
                    launcher=TWO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written on 1 rank(s), resharded to 2" in proc.stderr
    _assert_close(back, ref)


def _assert_close(out, ref) -> None:
    rows, ref_rows = _rows(out), _rows(ref)
    assert len(rows) == len(ref_rows) == 8
    for row, want in zip(rows, ref_rows):
        assert all(abs(row["alpha"][d] - want["alpha"][d]) < 1e-5 for d in want["alpha"]), (row, want)
    got, want = _eval(out), _eval(ref)
    assert all(abs(got[d] - want[d]) < 1e-5 for d in want), (got, want)


def test_a_corrupted_shard_is_refused_naming_the_file(runs):
    out = _copy_killed(runs, "corrupted")
    latest = sorted((out / "checkpoints").glob("step_*"))[-1]
    shard = latest / "sharded" / "__1_0.distcp"  # written by rank 1
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = sorted(p.name for p in out.rglob("*"))
    proc = tune_run("pretrain", STAGE1, *runs["args"], f"output_dir={out}", "resume=true", launcher=TWO)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tandem: error:")]
    assert len(errors) == 1 and str(shard) in errors[0] and "checksum mismatch" in errors[0], proc.stderr[-2000:]
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written
