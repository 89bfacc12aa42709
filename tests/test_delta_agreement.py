"""Δ's noise, logged at every TANDEM update: the centred cosine of the Δ of the probe batch's two halves."""

from __future__ import annotations

import json
import math

import torch
import yaml

from tandem_components.estimators.tandem import delta_agreement
from tests.recipe_runner import TINY, run_in_process

ALL = torch.ones(4, dtype=torch.bool)


def test_agreement_is_the_cosine_of_the_centred_estimates():
    a = torch.tensor([-0.03, -0.01, -0.02, -0.04], dtype=torch.float64)
    assert math.isclose(delta_agreement(a, a, ALL), 1.0)
    assert math.isclose(delta_agreement(a, a - 0.5, ALL), 1.0)  # a shift shared by all domains is ignored
    assert math.isclose(delta_agreement(a, -a, ALL), -1.0)
    b = torch.tensor([-0.01, -0.03, -0.02, -0.04], dtype=torch.float64)
    ca, cb = a - a.mean(), b - b.mean()
    assert math.isclose(delta_agreement(a, b, ALL), float(ca @ cb / (ca.norm() * cb.norm())))
    # raw cosine of these all-negative estimates is 0.87, centred 0.2: centring makes the measure honest
    assert float(a @ b / (a.norm() * b.norm())) > 0.85 and math.isclose(delta_agreement(a, b, ALL), 0.2)


def test_agreement_uses_only_domains_in_both_halves_and_is_nan_when_undefined():
    a = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0, -100.0], dtype=torch.float64)
    assert math.isclose(delta_agreement(a, b, torch.tensor([True, True, True, False])), 1.0)
    assert math.isnan(delta_agreement(a, b, torch.tensor([True, False, False, False])))
    assert math.isnan(delta_agreement(torch.ones(4), a, ALL))  # a constant half: no direction


def test_every_update_logs_the_agreement_in_the_trajectory(embedded_shards, tmp_path, monkeypatch):
    """With a bounded probe (2 of the 7 domains per update, 16 sequences each) the agreement is still defined
    at every update (over every domain measured so far), and the export records the probe and its bound."""
    out = tmp_path / "out"
    assert 0 == run_in_process(
        "pretrain", "configs/pretrain/tiny_stage1.yaml", *TINY, f"data.shards={embedded_shards}",
        f"output_dir={out}", "max_steps=10", "mixture.episode_len=5", "mixture.probe_steps=2",
        "mixture.probe_seqs_per_domain=16", "mixture.probe_budget=32", monkeypatch=monkeypatch,
    )
    rows = [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(-1.0 <= r["delta_agreement"] <= 1.0 for r in rows), rows
    assert abs(rows[1]["delta_agreement"]) < 1.0 - 1e-9  # over 4 domains, not the 2 of one probe (always ±1)
    hyper = yaml.safe_load((out / "mixture.yaml").read_text())["provenance"]["hyperparameters"]
    assert (hyper["probe_budget"], hyper["domains_per_probe"], hyper["probe_bound_updates"]) == (32, 2, 4)
    logged = (out / "logs").rglob("*")
    assert any("delta/delta_agreement" in p.read_text() for p in logged if p.is_file())
