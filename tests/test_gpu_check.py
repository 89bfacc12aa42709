"""benchmarks/gpu_check.py in its CPU smoke mode, through benchmarks/device/run_gpu_check.sh --smoke, the
script a lent GPU machine runs: every part of the one-command GPU check runs end to end (the real recipe's
fixed / float8 / eager / TANDEM runs, the cost model's units, torchtune's recipe) and writes its JSON and
table, so the check cannot rot between the GPU sessions that run it for real. The script runs as there: its
shards not carried (it prepares them with torchtune's CLI as a module), and every process it starts imports
like the GPU machine (benchmarks/device/device_like: only its packages and the wheels the script carries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.recipe_runner import REPO_ROOT

pytestmark = pytest.mark.slow


def test_device_script_smoke_runs_every_part_and_writes_its_json(fixture_corpus, fixture_tokenizer_path, tmp_path):
    data_config = tmp_path / "data.yaml"  # the fixture corpus with its trained BPE: preparing takes seconds
    data_config.write_text(yaml.safe_dump({
        "output_dir": "unused", "dtype": "uint16", "text_field": "text", "cache_dir": None, "test_fraction": 0.5,
        "tokenizer": {"path": str(fixture_tokenizer_path)},
        "domains": [{"name": d, "train": str(f["train"]), "val": str(f["val"])} for d, f in fixture_corpus.items()],
    }))
    out, shards = tmp_path / "out", tmp_path / "shards"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "SHARDS": str(shards), "DATA_CONFIG": str(data_config), "DEVICE_SITE": str(tmp_path / "site"),
           "PYTHONPATH": str(REPO_ROOT / "benchmarks" / "device" / "device_like")}
    proc = subprocess.run(["bash", "benchmarks/device/run_gpu_check.sh", "--smoke"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]  # the script sends everything to stdout and its log
    assert (shards / "index.json").is_file() and (out / "gpu_check.log").read_text() == proc.stdout
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
