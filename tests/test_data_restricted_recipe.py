"""recipes/data_restricted.py: token budgets at natural proportions, exact epoch accounting, the
generalisation-gap table, through the real recipe on the embedded corpus."""

from __future__ import annotations

import json

import pytest
import yaml

from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tests.recipe_runner import TINY, run_in_process

STAGE1 = "configs/data_restricted/tiny_stage1.yaml"
STAGE2 = "configs/data_restricted/tiny_stage2.yaml"


def _natural_budgets():
    from recipes.data_restricted import natural_budgets

    return natural_budgets


def test_natural_budgets_split_at_natural_proportions():
    natural_budgets = _natural_budgets()
    assert natural_budgets([600, 300, 100], 100, min_tokens=5) == [60, 30, 10]
    assert natural_budgets([7, 7, 7], 10, min_tokens=3) == [3, 3, 3]  # floor
    with pytest.raises(TandemError, match="data.total_token_budget: 2000 exceeds"):
        natural_budgets([600, 300, 100], 2000, min_tokens=5)
    with pytest.raises(TandemError, match="leaves domain #2 only 1 tokens"):
        natural_budgets([600, 300, 10], 100, min_tokens=5)


def test_epochs_and_gap_are_reported_exactly(embedded_shards, tmp_path, monkeypatch):
    out = tmp_path / "uniform"
    steps, batch, seq = 12, 8, 64
    status = run_in_process(
        "data_restricted", STAGE2, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}",
        f"max_steps={steps}", "data.total_token_budget=60000", "mixture.weights_from=null", "mixture.weights=uniform",
        monkeypatch=monkeypatch,
    )
    assert status == 0
    rows = json.loads((out / "generalization.json").read_text())
    corpus = ShardedCorpus.open(embedded_shards)
    assert [r["domain"] for r in rows] == corpus.domains
    sizes = [corpus.num_tokens(d, "train") for d in corpus.domains]
    assert [r["budget_tokens"] for r in rows] == [60000 * n // sum(sizes) for n in sizes]
    # every token drawn is accounted to exactly one domain's epochs
    drawn = sum(r["epochs"] * r["budget_tokens"] for r in rows)
    assert drawn == pytest.approx(steps * batch * seq, rel=1e-9)
    smallest = min(rows, key=lambda r: r["budget_tokens"])
    largest = max(rows, key=lambda r: r["budget_tokens"])
    assert smallest["epochs"] > largest["epochs"]  # uniform weights repeat the small domains more
    for r in rows:
        assert r["gap"] == pytest.approx(r["val_loss"] - r["train_loss"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generalization"] == rows


def test_budget_too_large_is_a_one_line_error(embedded_shards, tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    status = run_in_process(
        "data_restricted", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={tmp_path / 'out'}",
        "data.total_token_budget=999999999", monkeypatch=monkeypatch,
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tandem: error")]
    assert status == 2 and len(err) == 1 and "data.total_token_budget" in err[0]
    assert not (tmp_path / "out").exists()


def test_stage2_refuses_a_mixture_learned_under_another_budget_or_run_length(embedded_shards, tmp_path, monkeypatch,
                                                                            capsys):
    """The export records the budget and the tokens drawn; stage 2 at another repetition rate is refused
    in one line, before any work (``data.allow_budget_mismatch=true`` overrides)."""
    common = [*TINY, f"data.shards={embedded_shards}", "data.total_token_budget=60000"]
    stage1 = tmp_path / "stage1"
    assert run_in_process("data_restricted", STAGE1, *common, f"output_dir={stage1}", "max_steps=4",
                          "mixture.episode_len=2", "mixture.probe_steps=1", "mixture.probe_seqs_per_domain=2",
                          "mixture.val_batch_size=4", monkeypatch=monkeypatch) == 0
    provenance = yaml.safe_load((stage1 / "mixture.yaml").read_text())["provenance"]
    corpus = ShardedCorpus.open(embedded_shards)
    sizes = [corpus.num_tokens(d, "train") for d in corpus.domains]
    assert provenance["token_budget"] == [60000 * n // sum(sizes) for n in sizes]
    assert provenance["run_tokens"] == 4 * 8 * 64 == sum(provenance["tokens_drawn"])
    capsys.readouterr()
    stage2 = [*common, f"mixture.weights_from={stage1 / 'mixture.yaml'}"]
    for bad, key in ((["max_steps=5"], "run_tokens 2048, this run has 2560"),
                     (["max_steps=4", "data.total_token_budget=50000"], "token_budget")):
        out = tmp_path / f"refused-{key[:5]}"
        assert run_in_process("data_restricted", STAGE2, *stage2, *bad, f"output_dir={out}",
                              monkeypatch=monkeypatch) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "mixture.weights_from" in err[0] and key in err[0], err
        assert not out.exists()
    out = tmp_path / "allowed"
    assert run_in_process("data_restricted", STAGE2, *stage2, "max_steps=5", "data.allow_budget_mismatch=true",
                          f"output_dir={out}", monkeypatch=monkeypatch) == 0
    assert json.loads((out / "eval_test.json").read_text())["split"] == "test"


def test_resume_repeats_the_same_epochs_bit_identically(embedded_shards, tmp_path, monkeypatch):
    """Checkpoint at step 4 of 8; a fresh run resumed from it ends bit-identical: the budgeted loader's
    position (hence the epochs of each domain) and α continue where they were."""
    import shutil

    run = [*TINY, f"data.shards={embedded_shards}", "data.total_token_budget=60000", "max_steps=8",
           "mixture.episode_len=2", "mixture.probe_steps=1", "mixture.probe_seqs_per_domain=2",
           "mixture.val_batch_size=4", "checkpoint.every_n_steps=4"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_in_process("data_restricted", STAGE1, *run, f"output_dir={whole}", monkeypatch=monkeypatch) == 0
    shutil.copytree(whole / "checkpoints", resumed / "checkpoints")
    shutil.copy(whole / "mixture_trajectory.jsonl", resumed)  # rows past step 4 are dropped on resume
    assert run_in_process("data_restricted", STAGE1, *run, f"output_dir={resumed}", "resume=true",
                          monkeypatch=monkeypatch) == 0
    for name in ("mixture_trajectory.jsonl", "generalization.json", "eval_test.json"):
        assert (whole / name).read_text() == (resumed / name).read_text(), name
    assert (whole / "model" / "model.safetensors").read_bytes() == (resumed / "model" / "model.safetensors").read_bytes()


def test_epoch_cap_bounds_every_alpha_of_the_run(embedded_shards, tmp_path, monkeypatch, capsys):
    """mixture.epoch_cap C: no α of the trajectory (and so no exported average) plans more than C epochs of a
    domain's budget, C * budget_m / N; α_0 = uniform is moved under the caps first. A cap that cannot place
    the run's tokens is refused in one line naming the key."""
    steps, batch, seq, budget, cap = 40, 8, 64, 60000, 0.5  # N = 20,480 tokens: 0.34 epochs under natural
    out = tmp_path / "capped"
    status = run_in_process(
        "data_restricted", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}", f"max_steps={steps}",
        f"data.total_token_budget={budget}", f"mixture.epoch_cap={cap}", "mixture.probe_seqs_per_domain=4",
        monkeypatch=monkeypatch,
    )
    assert status == 0
    rows = json.loads((out / "generalization.json").read_text())
    bounds = {r["domain"]: cap * r["budget_tokens"] / (steps * batch * seq) for r in rows}
    assert min(bounds.values()) < 1 / len(rows)  # the cap binds on the small domains: uniform is above it
    trajectory = [json.loads(line)["alpha"] for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]
    assert len(trajectory) >= 3
    for alpha in trajectory + [yaml.safe_load((out / "mixture.yaml").read_text())["weights"]["average"]]:
        assert all(alpha[d] <= bounds[d] + 1e-9 for d in bounds), alpha
    assert yaml.safe_load((out / "mixture.yaml").read_text())["provenance"]["hyperparameters"]["epoch_cap"] == cap
    status = run_in_process(
        "data_restricted", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={tmp_path / 'no'}",
        f"max_steps={steps}", f"data.total_token_budget={budget}", "mixture.epoch_cap=0.2", monkeypatch=monkeypatch,
    )
    err = capsys.readouterr().err
    assert status != 0 and "mixture.epoch_cap: 0.2 epochs" in err and "mixture.epoch_cap >= 0.341" in err
