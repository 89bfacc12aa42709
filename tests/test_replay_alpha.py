"""tools/replay_alpha.py: a finished stage-1 run's Δs replayed through α-step settings. The replay at the run's
own settings must reproduce its export exactly (else every other row of its table is about another step)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from tests.recipe_runner import TINY, run_in_process_for_fixture

REPO = Path(__file__).resolve().parents[1]
REPLAY = runpy.run_path(str(REPO / "tools" / "replay_alpha.py"))
STAGE1 = "configs/data_restricted/tiny_stage1.yaml"


@pytest.fixture(scope="module")
def capped_run(embedded_shards, tmp_path_factory) -> Path:
    """A 40-step data-restricted stage 1 at the shipped α step (momentum, neutral carry, tail), with an epoch
    cap that binds on the small domains, so the replay must rebuild α_0 under the caps and every bound."""
    out = tmp_path_factory.mktemp("replay") / "run"
    status = run_in_process_for_fixture(
        "data_restricted", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}", "max_steps=40",
        "data.total_token_budget=60000", "mixture.epoch_cap=0.5", "mixture.probe_seqs_per_domain=4",
    )
    assert status == 0
    return out


def test_replay_at_the_runs_own_settings_reproduces_its_export(capped_run):
    run = REPLAY["RecordedRun"](capped_run)
    own = run.hyper
    state = run.replay(lr=own["lr_alpha"], momentum=own["momentum"], average_tail=own["average_tail"],
                       epoch_cap=own["epoch_cap"])
    assert state.num_updates == len(run.deltas) >= 3
    torch.testing.assert_close(state.average(end_step=run.max_steps), run.exported, rtol=0, atol=1e-12)
    # a smaller step moves α less far from the same α_0, and stays under the same caps
    half = run.replay(lr=own["lr_alpha"] / 2, momentum=own["momentum"], average_tail=own["average_tail"],
                      epoch_cap=own["epoch_cap"])
    travel = lambda s: float((s.last() - s.history[0]).abs().sum())  # noqa: E731
    assert 0 < travel(half) < travel(state)
    torch.testing.assert_close(half.history[0], state.history[0])
    caps = state.max_weights
    assert caps is not None and bool((caps < 1 / len(run.domains)).any())
    assert all(bool((a <= caps + 1e-9).all()) for a in half.history)


def test_table_and_cli(capped_run, capsys):
    rows = REPLAY["replay_table"]([REPLAY["RecordedRun"](capped_run)] * 2,
                                  [{"lr": 0.5, "momentum": 0.9, "average_tail": 0.75, "epoch_cap": 0.5}])
    assert rows[0]["seed_spread"] == 0.0 and abs(sum(rows[0]["mean_export"]) - 1) < 1e-9
    assert REPLAY["main"]([str(capped_run), "--lr", "0.25", "0.5"]) == 0
    table = capsys.readouterr().out
    assert table.count("\n| 0.") == 2, table
    assert REPLAY["main"]([str(capped_run.parent / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finished stage-1 run" in err[0]
