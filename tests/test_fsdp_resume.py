"""Sharded training checkpoints (DCP) of a 2-rank FSDP2 stage-1 run: killed with SIGKILL at a fixed update,
resumed on 2 ranks (bit-identical to an uninterrupted run); resumed on 1 rank (resharded), killed again
mid-run, and that unfinished 1-rank run's newest checkpoint resumed on 2 ranks; a corrupted shard is refused
naming the file."""

from __future__ import annotations

import json
import os
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
#: the α updates (of 8; one every 5 steps from step 2) after which the 2-rank run is killed: past the
#: checkpoints of steps 5, 10 and 15
KILL_AFTER = 4
#: and the 1-rank run resumed from it: past its own checkpoints of steps 20 and 25, before the end
KILL_ONE_RANK_AFTER = 6


def _rows(out) -> list[dict]:
    path = out / "mixture_trajectory.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _summary(out) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_time_s")
    return summary


def _eval(out) -> dict:
    return {d: e["loss"] for d, e in json.loads((out / "eval.json").read_text())["domains"].items()}


def _run_and_kill(args: list[str], out, after: int, launcher=TWO) -> str:
    """Start a run and SIGKILL all of it (the launcher and every rank at once, as a lost node would) once
    ``after`` α updates are in its trajectory. Returns what it wrote to stderr."""
    log = Path(str(out) + ".stderr")
    with open(log, "wb") as err:
        run = subprocess.Popen(tune_command("pretrain", STAGE1, *args, f"output_dir={out}", launcher=launcher),
                               cwd=REPO_ROOT, env=tune_env(launcher), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while len(_rows(out)) < after and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.poll() is None, "the run finished before it could be killed"
        for pid in [run.pid, *_descendants(run.pid)]:  # torchrun starts each rank in a session of its own
            os.kill(pid, signal.SIGKILL)
        run.wait()
    assert not (Path(out) / "eval.json").exists()
    return log.read_text(errors="replace")


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
    _run_and_kill(args, killed, after=KILL_AFTER)
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


def test_a_two_rank_checkpoint_resumes_on_one_rank_and_an_unfinished_one_rank_run_on_two(runs):
    """2 -> 1: DCP reshards the twins and their optimizers into one process; the loaders continue the same
    global batches. That 1-rank run is itself killed mid-run, and its newest checkpoint (written on 1 rank,
    at a step the run never finished past) resumes on 2 ranks: 1 -> 2. α and the losses at the end of the
    chain stay within the float noise of 1 vs 2 ranks (different reduction orders), far below anything a
    mixture changes."""
    one = _copy_killed(runs, "resumed_on_1")
    err = _run_and_kill([*runs["args"], "resume=true"], one, after=KILL_ONE_RANK_AFTER, launcher=[])
    assert "written on 2 rank(s), resharded to 1" in err
    newest = sorted((one / "checkpoints").glob("step_*"))[-1]
    assert json.loads((newest / "manifest.json").read_text())["world_size"] == 1, newest
    assert int(newest.name.split("_")[1]) < 40  # a mid-run checkpoint of an unfinished run

    back = runs["root"] / "back_on_2"
    shutil.copytree(one, back)
    proc = tune_run("pretrain", STAGE1, *runs["args"], f"output_dir={back}", "resume=true", launcher=TWO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {back / 'checkpoints' / newest.name}" in proc.stderr
    assert "written on 1 rank(s), resharded to 2" in proc.stderr
    _assert_close(back, runs["uninterrupted"])


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
