"""One command on one GPU: is tandem fast there? Writes one JSON and one Markdown table.

    python benchmarks/gpu_check.py                 # one H100/H200: a ~100M proxy, bf16; sized for <= 8 minutes
    python benchmarks/gpu_check.py --smoke         # CPU, tiny model, a few steps: every part runs (the tests)
    bash benchmarks/device/run_gpu_check.sh        # on a lent GPU machine without network or torchtune
                                                   # (benchmarks/README.md, "On a lent GPU machine")

Needs prepared shards (``make prepare``: ``data/shards/embedded``; ``--shards`` for others). Every figure
comes from the real recipe (``recipes/pretrain.py`` in this process, one run after the other) or the real
torchtune recipe (``tune run full_finetune_single_device``), on the same model, data and flags:

  fixed_bf16_compile   fixed mixture, bf16 + torch.compile: steady tokens/s, MFU (of the bf16 dense peak)
  fixed_bf16_eager     the same without compile: what compile buys
  fixed_float8_compile the same with torchao float8 Linear layers: float8 / bf16 tokens/s
  tandem_bf16_compile  TANDEM stage 1 (E = 20, K = 5, bounded probe of 32 sequences): wall time / the fixed
                       run's and / the cost model's prediction (unit costs measured on the same model and
                       batches); wall times from the recipe's log, after the first two episodes (compile)
  peak memory          ``torch.cuda.max_memory_allocated`` of the TANDEM run (two twins) / the fixed run
  torchtune            ``full_finetune_single_device``, bf16 + compile, same model, windows, B, T, AdamW,
                       schedule, clipping, full-logit cross-entropy: ours / torchtune tokens/s

Model (GPU): the 160M config's decoder (12 layers x 768, vocab 8192: 97M parameters, 91M in matmuls),
B = 32 x T = 512, ``loss_chunks=0`` (full logits, as torchtune's loss). Targets (issue 14): MFU >= 40%,
float8 >= 1.1x bf16, twins' peak memory <= 2.0x one model, ours >= 1.0x torchtune. ``--smoke``: the tiny
config on CPU, fp32, 8 steps, ``TORCH_COMPILE_BACKEND=eager`` (compile's tracing without inductor's
minutes), float8 emulated; speeds there mean nothing, the point is that nothing in the check has rotted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

import torch

from benchmarks.bench_hot_loop import rates_between_logged_steps, torchtune_rates, write_torchtune_setup
from benchmarks.bench_overhead import measure_units
from tandem_components.training.cost_model import (
    H100_BF16_PEAK_FLOPS,
    decoder_flops_per_token,
    mfu,
    predict_fixed_time,
    predict_stage1_time,
)

# ``skip``: the first episode (compile, warm-up) is left out of every rate and wall time; a multiple of E = 20
GPU = {"config": "configs/pretrain/gpt160m_stage1.yaml", "steps": 200, "skip": 40,
       "overrides": ["device=cuda", "dtype=bf16", "data.batch_size=32", "mixture.val_batch_size=32", "data.seq_len=512"]}
SMOKE = {"config": "configs/pretrain/tiny_stage1.yaml", "steps": 8, "skip": 4,
         "overrides": ["device=cpu", "dtype=fp32", "data.batch_size=4", "mixture.val_batch_size=4", "data.seq_len=32",
                      "model.max_seq_len=64"]}
COMMON = ["loss_chunks=0", "log_every_n_steps=1", "eval.every_n_steps=0", "eval.windows_per_domain=1",
          "eval.test_windows_per_domain=1", "mixture.weights=uniform", "mixture.episode_len=20",
          "mixture.probe_steps=5", "mixture.probe_seqs_per_domain=16", "mixture.probe_budget=32",
          "lr_scheduler.warmup_steps=5"]
RUNS = {
    "fixed_bf16_compile": ["mixture.learner=fixed", "compile=true"],
    "fixed_bf16_eager": ["mixture.learner=fixed", "compile=false"],
    "fixed_float8_compile": ["mixture.learner=fixed", "compile=true", "float8=true"],
    "tandem_bf16_compile": ["mixture.learner=tandem", "compile=true"],
}


def _run(name: str, setup: dict, base: list[str], tokens_per_step: int, out: Path) -> dict:
    """One real recipe run in this process: tokens/s and seconds after ``skip`` steps (from its log), peak
    GPU memory."""
    cuda = torch.cuda.is_available() and "device=cuda" in base
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run_dir = out / name
    summary = bc.run_recipe_in_process(setup["config"], *base, *RUNS[name], f"max_steps={setup['steps']}",
                                       f"output_dir={os.path.relpath(run_dir, bc.REPO_ROOT)}")
    elapsed = bc.recipe_elapsed(run_dir / "logs", tokens_per_step)
    rates = rates_between_logged_steps(elapsed, setup["skip"], tokens_per_step)
    return {"tokens_per_s": statistics.median(rates),
            "steady_s": elapsed[setup["steps"]] - elapsed[setup["skip"]], "wall_time_s": summary["wall_time_s"],
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def _torchtune(setup: dict, base: list[str], cfg, out: Path, smoke: bool) -> float:
    tt_config = write_torchtune_setup(out / "torchtune", setup["steps"], setup["config"], tuple(base),
                                      device=str(cfg.device), dtype=str(cfg.dtype), compile=True)
    env = {**bc.tune_env(), **({"TORCH_COMPILE_BACKEND": "eager"} if smoke else {})}
    proc = subprocess.run([sys.executable, "-m", "torchtune._cli.tune", "run", "full_finetune_single_device",
                           "--config", str(tt_config)], cwd=bc.REPO_ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"torchtune's recipe failed:\n{proc.stderr[-3000:]}")
    return statistics.median(torchtune_rates(out / "torchtune" / "torchtune_run" / "logs", setup["skip"]))


def check(out: Path, smoke: bool, shards: str | None) -> dict:
    setup = SMOKE if smoke else GPU
    if smoke:
        os.environ["TORCH_COMPILE_BACKEND"] = "eager"  # compile's tracing, not inductor's minutes of codegen
    base = [*setup["overrides"], *COMMON, *([f"data.shards={shards}"] if shards else ["data.shards=data/shards/embedded"])]
    if smoke:
        vocab = json.loads((bc.REPO_ROOT / base[-1].split("=", 1)[1] / "index.json").read_text())["vocab_size"]
        base.append(f"model.vocab_size={vocab}")
    cfg = bc.load_config(setup["config"], *base)
    m, t = cfg.model, int(cfg.data.seq_len)
    per_token = decoder_flops_per_token(m.vocab_size, m.num_layers, m.num_heads, m.num_kv_heads, m.embed_dim, t,
                                        m.get("intermediate_dim"))
    start = time.perf_counter()
    runs = {name: _run(name, setup, base, int(cfg.data.batch_size) * t, out) for name in RUNS}
    units = measure_units(setup["config"], [*base, "compile=true"], samples=3)
    steady_steps = setup["steps"] - setup["skip"]
    predicted = predict_stage1_time(units, steady_steps, 20, 5)
    torchtune_tps = _torchtune(setup, base, cfg, out, smoke)
    fixed, tandem = runs["fixed_bf16_compile"], runs["tandem_bf16_compile"]
    figures = {
        "proxy_tokens_per_s_bf16_compile": fixed["tokens_per_s"],
        "proxy_mfu_bf16_compile": None if smoke else mfu(fixed["tokens_per_s"], per_token, H100_BF16_PEAK_FLOPS),
        "float8_over_bf16_tokens_per_s": runs["fixed_float8_compile"]["tokens_per_s"] / fixed["tokens_per_s"],
        "compile_over_eager_tokens_per_s": fixed["tokens_per_s"] / runs["fixed_bf16_eager"]["tokens_per_s"],
        "tandem_over_fixed_wall_time": tandem["steady_s"] / fixed["steady_s"],
        "tandem_measured_over_cost_model": tandem["steady_s"] / predicted,
        "cost_model_tandem_over_fixed": predicted / predict_fixed_time(units, steady_steps),
        "twins_over_one_model_peak_memory": (tandem["peak_memory_bytes"] / fixed["peak_memory_bytes"]
                                             if fixed["peak_memory_bytes"] else None),
        "ours_over_torchtune_tokens_per_s": fixed["tokens_per_s"] / torchtune_tps,
    }
    return {"mode": "smoke (CPU)" if smoke else "gpu", "machine": bc.machine(), "config": setup["config"],
            "overrides": base, "steps": setup["steps"], "skip": setup["skip"], "flops_per_token": per_token,
            "runs": runs, "units": units.__dict__, "torchtune_tokens_per_s": torchtune_tps, "figures": figures,
            "check_seconds": time.perf_counter() - start}


TARGETS = {"proxy_mfu_bf16_compile": ">= 0.40", "float8_over_bf16_tokens_per_s": ">= 1.1",
           "twins_over_one_model_peak_memory": "<= 2.0", "ours_over_torchtune_tokens_per_s": ">= 1.0"}


def table(result: dict) -> str:
    lines = [f"gpu_check ({result['mode']}; {result['machine'].get('gpu') or result['machine'].get('cpu')}; "
             f"{result['check_seconds']:.0f} s)", "", "| figure | value | target |", "|---|---|---|"]
    for key, value in result["figures"].items():
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {key} | {shown} | {TARGETS.get(key, '')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, a few steps (what the tests run)")
    parser.add_argument("--shards", default=None, help="prepared shards (default data/shards/embedded)")
    parser.add_argument("--out", default="outputs/gpu_check")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    out = (bc.REPO_ROOT / args.out).resolve()
    result = check(out, args.smoke, args.shards)
    text = table(result)
    bc.write_json(out / "gpu_check.json", result)
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
