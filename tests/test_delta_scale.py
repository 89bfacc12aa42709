"""``mixture.delta_scale: lr``: Δ divided by the mean lr multiplier of the K probing steps it was measured
over, so that α keeps learning while the schedule decays (METHOD.md, "Δ and the learning rate")."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tandem_components.config_validation import validate_pretrain_config
from tandem_components.errors import TandemError
from tests.recipe_runner import REPO_ROOT, TINY, run_in_process

STAGE1 = "configs/pretrain/tiny_stage1.yaml"


def test_other_learners_ignore_it(embedded_shards, tmp_path, monkeypatch):
    """DoGE on the same stage-1 config (delta_scale: lr): its Δ is a gradient alignment, not scaled."""
    rows = _trajectory(embedded_shards, tmp_path / "doge", monkeypatch, "mixture.learner=doge")
    assert rows and all(row["delta_scale"] == 1.0 for row in rows)


def _trajectory(shards, out, monkeypatch, *extra):
    assert 0 == run_in_process(
        "pretrain", STAGE1, *TINY, f"data.shards={shards}", f"output_dir={out}", "max_steps=24",
        "lr_scheduler.warmup_steps=4", "mixture.episode_len=4", "mixture.probe_steps=2", *extra,
        monkeypatch=monkeypatch,
    )
    return [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]


def test_delta_is_divided_by_the_lr_of_its_probing_steps(embedded_shards, tmp_path, monkeypatch):
    plain = _trajectory(embedded_shards, tmp_path / "plain", monkeypatch, "mixture.delta_scale=none")
    scaled = _trajectory(embedded_shards, tmp_path / "scaled", monkeypatch, "mixture.delta_scale=lr")
    assert all(row["delta_scale"] == 1.0 for row in plain)
    scales = [row["delta_scale"] for row in scaled]
    # update 1 (steps 1-2, warmup from 0: multipliers 0 and 1/4): 1 / mean = 8; then ~1 at the peak,
    # growing through the cosine decay, capped at 10 when the last steps run at lr ~0
    assert scales[0] == pytest.approx(8.0)
    assert scales[1] == pytest.approx(1.0, abs=0.05)
    assert scales[1:] == sorted(scales[1:]) and 1.0 < scales[-1] <= 10.0
    # the first update is made from identical twins in both runs: only the factor differs
    for d, value in plain[0]["delta"].items():
        assert scaled[0]["delta"][d] == pytest.approx(value * scales[0], rel=1e-9, abs=1e-12)


def _config(shards, *overrides):
    return OmegaConf.merge(OmegaConf.load(REPO_ROOT / STAGE1),
                           OmegaConf.from_dotlist([*TINY, f"data.shards={shards}", *overrides]))


def test_delta_scale_is_checked(embedded_shards):
    validate_pretrain_config(_config(embedded_shards, "mixture.delta_scale=lr"))
    with pytest.raises(TandemError, match="mixture.delta_scale"):
        validate_pretrain_config(_config(embedded_shards, "mixture.delta_scale=yes"))
