"""Shared helpers of the speed/memory benchmarks (bench_*.py): running the real recipe, statistics, machine.

Machines are shared and noisy, so every benchmark interleaves its variants inside each repeat and
reports ratios per repeat: median and spread (min-max) over repeats.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/bench_x.py` puts benchmarks/ first
    sys.path.insert(0, str(REPO_ROOT))


def tune_env() -> dict[str, str]:
    """The environment of a ``tune run`` child: the repository first on PYTHONPATH (its ``recipes``, not the
    one torchtune's wheel ships), then what was there (on a GPU machine without torchtune: the folder its
    carried wheels are installed in, benchmarks/device/run_gpu_check.sh)."""
    path = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def tune_command(recipe: str, config: str | Path, *overrides: str) -> list[str]:
    """``tune run <recipe> --config <config> <overrides>`` (the real CLI), as an argv list."""
    return [sys.executable, "-m", "torchtune._cli.tune", "run", recipe, "--config", str(config), *overrides]


def run_tune(recipe: str, config: str | Path, *overrides: str, timeout: int = 1800) -> float:
    """Run ``tune run`` from the repository root; raise with the stderr tail on failure; return wall seconds."""
    cmd = tune_command(recipe, config, *overrides)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=tune_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def run_recipe_in_process(config: str | Path, *overrides: str) -> dict:
    """Run ``recipes/pretrain.py``'s ``recipe_main`` in this process, ``sys.argv`` as ``tune run`` sets it.

    Returns the run's ``summary.json`` (``wall_time_s``: the training loop, incl. e.g. DoReMi's
    reference training). ``overrides`` must set ``output_dir``.
    """
    from recipes.pretrain import recipe_main

    argv, cwd = sys.argv, os.getcwd()
    sys.argv = ["recipes/pretrain.py", "--config", str(config), *overrides]
    os.chdir(REPO_ROOT)
    try:
        recipe_main()
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"recipe exited with {e.code}: {sys.argv}") from None
    finally:
        sys.argv = argv
        os.chdir(cwd)
    out = next(o.split("=", 1)[1] for o in overrides if o.startswith("output_dir="))
    return json.loads((REPO_ROOT / out / "summary.json").read_text())


def load_config(config: str | Path, *overrides: str):
    """The recipe's config with CLI-style ``key=value`` overrides, as ``config.parse`` builds it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO_ROOT / config)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))


def spread(values: list[float]) -> dict:
    """median, min, max and the raw values (in the order measured)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def fmt(s: dict, digits: int = 3) -> str:
    """``median [min-max] (n)``."""
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}] (n={s['n']})"


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
        "cores_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def read_disk_log(path: Path) -> dict[int, dict[str, float]]:
    """torchtune DiskLogger file (``Step N | key:value key:value``) -> {step: {key: value}}."""
    rows: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"Step (\d+) \| (.*)", line)
        if not m:
            continue
        row = rows.setdefault(int(m.group(1)), {})
        for item in m.group(2).split():
            key, _, value = item.rpartition(":")
            try:
                row[key] = float(value)
            except ValueError:
                pass
    return rows


def newest_log(log_dir: Path) -> Path:
    """The newest DiskLogger file of a run's ``logs`` folder (a rerun into the same folder adds one)."""
    return sorted(Path(log_dir).glob("*.txt"), key=lambda p: p.stat().st_mtime)[-1]


def recipe_elapsed(log_dir: Path, tokens_per_step: int) -> dict[int, float]:
    """Seconds since our recipe's training loop began, at each logged step: it logs the global tokens/s
    since then (``tokens_per_step`` = global batch x seq_len)."""
    rows = read_disk_log(newest_log(log_dir))
    return {s: tokens_per_step * s / r["tokens_per_second"] for s, r in rows.items() if "tokens_per_second" in r}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
