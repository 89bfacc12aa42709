"""benchmarks/gpu_check.py in its CPU smoke mode: every part of the one-command GPU check runs end to end
(the real recipe's fixed / float8 / eager / TANDEM runs, the cost model's units, torchtune's recipe) and
writes its JSON and table, so the check cannot rot between the GPU sessions that run it for real."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.recipe_runner import REPO_ROOT, tune_env

pytestmark = pytest.mark.slow


def test_smoke_mode_runs_every_part_and_writes_its_json(embedded_shards, tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--shards", str(embedded_shards), "--out", str(out)],
        cwd=REPO_ROOT, env=tune_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["mode"] == "smoke (CPU)"
    figures = result["figures"]
    assert set(figures) == {
        "proxy_tokens_per_s_bf16_compile", "proxy_mfu_bf16_compile", "float8_over_bf16_tokens_per_s",
        "compile_over_eager_tokens_per_s", "tandem_over_fixed_wall_time", "tandem_measured_over_cost_model",
        "cost_model_tandem_over_fixed", "twins_over_one_model_peak_memory", "ours_over_torchtune_tokens_per_s",
    }
    numbers = [k for k, v in figures.items() if v is not None]
    assert all(figures[k] > 0 for k in numbers)
    assert figures["proxy_mfu_bf16_compile"] is None and figures["twins_over_one_model_peak_memory"] is None  # GPU only
    assert result["torchtune_tokens_per_s"] > 0 and result["units"]["probe_forward_s"] > 0
    table = (out / "gpu_check.md").read_text()
    assert "ours_over_torchtune_tokens_per_s" in table and "| figure | value | target |" in table
