"""The pretraining and SFT recipes on 2 CPU processes (gloo, FSDP2 for both twins) through `tune run
--nproc_per_node 2`: the same config as a 1-process run learns the same α (the batch keys are global),
and a failure on one rank stops both, with one line, never a hang."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.recipe_runner import TINY, sft_tiny, tune_run

pytestmark = pytest.mark.slow

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
STAGE2 = "configs/pretrain/tiny_stage2.yaml"
SFT_STAGE1 = "configs/sft/tiny_stage1.yaml"
COMMON = [
    # delta_scale none: the comparison is of Δ as measured (lr scaling multiplies it, and its float
    # differences between 1 and 2 ranks, by up to 8 in the first update's warmup)
    *TINY, "max_steps=12", "mixture.episode_len=4", "mixture.probe_steps=2", "mixture.lr=2.0", "mixture.delta_scale=none",
    "eval.windows_per_domain=2",
]


def _alpha_rows(out):
    return [json.loads(line)["alpha"] for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]


#: the batch keys are global sizes: the same values on 1 and 2 ranks (each rank takes half); a bounded probe
#: (2 domains of 4 sequences per update, in turns) so that its schedule is the same on both
GLOBAL_BATCH = ["data.batch_size=8", "mixture.val_batch_size=8", "mixture.probe_seqs_per_domain=4",
                "mixture.probe_budget=8"]


def _two_ranks_then_one(recipe: str, config: str, common: list[str], tmp_path, eval_file: str):
    """Run the same config on 2 ranks and in 1 process. Asserts: α bit-identical on both ranks, the two
    α trajectories equal to 1e-5, the per-domain losses of ``eval_file`` to 1e-4. Returns the dirs."""
    two, one = tmp_path / "two_ranks", tmp_path / "one_rank"
    proc = tune_run(recipe, config, *common, *GLOBAL_BATCH, f"output_dir={two}", launcher=["--nproc_per_node", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = re.findall(r"rank (\d) of 2: final α sha256 ([0-9a-f]+)", proc.stderr + proc.stdout)
    assert sorted(r for r, _ in digests) == ["0", "1"], proc.stderr[-2000:]
    assert digests[0][1] == digests[1][1]  # α bit-identical on both ranks

    proc = tune_run(recipe, config, *common, *GLOBAL_BATCH, f"output_dir={one}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows_two, rows_one = _alpha_rows(two), _alpha_rows(one)
    assert len(rows_two) == len(rows_one) == 3
    for a2, a1 in zip(rows_two, rows_one):
        assert a2.keys() == a1.keys()
        assert all(abs(a2[d] - a1[d]) < 1e-5 for d in a1), (a2, a1)
    assert rows_two[-1] != rows_two[0]  # α moved: the comparison is not of two starting points
    eval_two = json.loads((two / eval_file).read_text())["domains"]
    eval_one = json.loads((one / eval_file).read_text())["domains"]
    for d in eval_one:
        assert eval_two[d]["loss"] == pytest.approx(eval_one[d]["loss"], rel=1e-4)
    return two, one


def test_two_rank_fsdp_matches_one_process_and_ranks_agree(embedded_shards, tmp_path):
    _two_ranks_then_one("pretrain", STAGE1, [*COMMON, f"data.shards={embedded_shards}"], tmp_path, "eval.json")


def test_sft_on_two_ranks_learns_the_alpha_of_one_rank(fixture_tokenizer_path, tmp_path):
    """SFT stage 1 (TANDEM over categories) under FSDP2 on 2 ranks vs 1 process with the same global batch.

    SFT rows differ in length, so each rank's share of the global batch has its own token count: the
    steps differentiate the token mean over the global batch (``DomainLosses.global_mean``), not the mean
    of rank means (without it α differs by ~1e-4 after 3 updates), and greedy decoding of the test
    prompts finishes on both ranks."""
    common = [*sft_tiny(fixture_tokenizer_path), "max_steps=12", "mixture.episode_len=4", "mixture.probe_steps=2",
              "mixture.lr=2.0", "mixture.delta_scale=none", "eval.generate_per_category=1"]
    two, _ = _two_ranks_then_one("sft", SFT_STAGE1, common, tmp_path, "eval_test.json")
    generations = [json.loads(line) for line in (two / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 5  # one decoded test prompt per category, written by rank 0


#: a fixed-mixture run (no Δ) whose model's logits turn NaN, or raise, on ONE rank from its 13th forward
ONE_RANK_FAILS = [*TINY, "max_steps=40", "checkpoint.every_n_steps=5", "mixture.weights=uniform",
                  "mixture.weights_from=null", "model._component_=tests.helpers.diverging_decoder",
                  "model.nan_after=12", "model.nan_rank=1"]


def test_nan_on_one_rank_stops_both_with_one_line(embedded_shards, tmp_path):
    """The NaN guard reads the all-reduced loss of the global batch: rank 0, whose own loss is finite,
    stops at the same step as rank 1 and says it once (``--tee 3`` prefixes each line with its rank);
    the last good checkpoint is named."""
    out = tmp_path / "nan"
    start = time.monotonic()
    proc = tune_run("pretrain", STAGE2, *ONE_RANK_FAILS, f"data.shards={embedded_shards}", f"output_dir={out}",
                    launcher=["--nproc_per_node", "2", "--tee", "3"], timeout=180)
    assert time.monotonic() - start < 120  # both ranks exited (a hang would wait for the 30-min timeout)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "tandem: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("[default0]:tandem: error:"), errors
    assert "(not finite) after 12 steps" in errors[0] and "step_00000010" in errors[0], errors
    assert proc.returncode != 0
    assert not (out / "eval.json").exists()


def test_a_crash_on_one_rank_stops_both(embedded_shards, tmp_path):
    """Any exception on one rank (here a RuntimeError in rank 1's forward) ends the run on both within
    seconds: the failing rank exits (its process group torn down), torchrun stops the other."""
    start = time.monotonic()
    proc = tune_run("pretrain", STAGE2, *ONE_RANK_FAILS, "model.crash=true", f"data.shards={embedded_shards}",
                    f"output_dir={tmp_path / 'crash'}", launcher=["--nproc_per_node", "2"], timeout=180)
    assert proc.returncode != 0
    assert time.monotonic() - start < 120
    assert "injected failure on this rank at forward 13" in proc.stderr
