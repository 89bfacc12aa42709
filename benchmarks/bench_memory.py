"""Peak memory of TANDEM's stage 1 (two twins) vs a single-model fixed-mixture run, same model and batch.

    python benchmarks/bench_memory.py [--repeats 3] [--out outputs/bench_memory] [key=value ...]

CPU: each run is its own process, the real CLI (``tune run recipes/pretrain.py``), and its peak resident
set size is read from ``os.wait4`` (``ru_maxrss`` of that one child, KiB on Linux). A third process,
``baseline``, only imports what the recipe imports and builds the data (corpus, loaders, probe sampler,
evaluation windows): the fixed cost of Python + torch + data. Reported per repeat (runs interleaved,
order rotating), then median [min-max]:
  raw ratio        peak(tandem) / peak(fixed)
  net ratio        (peak(tandem) - peak(baseline)) / (peak(fixed) - peak(baseline))       target <= 2.0
for each ``loss_chunks`` setting in ``--loss-chunks`` (0: full (B, T, V) logits, the tiny config's
default; n > 0: output projection + cross-entropy in n chunks, the GPU configs' setting). The paired
probe batch is M x probe_seqs_per_domain = 7 x 16 = 112 sequences, 7x a train batch: with full logits
its no-grad forward alone materialises 112 x 128 x 8192 fp32 logits (470 MB) plus their log-softmax.
Model: the tiny config widened so that model and optimizer state matter (``WIDE`` below: width 512,
4 layers, 8 heads, 4 kv heads, vocab 8192: 21.0M parameters, 84 MB of fp32 weights, ~336 MB with
gradients and AdamW state per model); B=16, T=128; E=2, K=1 and 4 steps, so that both episodes' sync,
reference steps and probe forwards (16 sequences per domain) run. On a GPU, the same comparison is
``torch.cuda.max_memory_allocated`` (see RESULTS.md, section 3, "GPU").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

TINY = "configs/pretrain/tiny_stage1.yaml"
WIDE = ["model.embed_dim=512", "model.num_layers=4", "model.num_heads=8", "model.num_kv_heads=4"]
SHORT = ["max_steps=4", "mixture.episode_len=2", "mixture.probe_steps=1", "eval.every_n_steps=0",
         "eval.windows_per_domain=4", "log_every_n_steps=1", "lr_scheduler.warmup_steps=1"]

BASELINE = r"""
import sys
from recipes.pretrain import PretrainRecipe, validate_pretrain_config  # everything the recipe imports
from tandem_components.data.loader import PerDomainSampler, WeightedDomainLoader, eval_windows
from tandem_components.torchtune_api import config
sys.argv = ["recipes/pretrain.py", "--config", *sys.argv[1:]]

@config.parse
def main(cfg):
    validate_pretrain_config(cfg, world_size=1)
    r = PretrainRecipe(cfg)
    r._setup_data()
    r._setup_mixture()
    m = len(r.domains)
    train = WeightedDomainLoader(r.train_tokens, r.mixture.weights, r.batch_size, r.seq_len, seed=0)
    val = WeightedDomainLoader(r.val_tokens, [1.0 / m] * m, r.batch_size, r.seq_len, seed=1)
    probe = PerDomainSampler(r.train_tokens, int(cfg.mixture.probe_seqs_per_domain), r.seq_len, seed=2)
    batches = [next(train), next(val), probe.sample()]
    evals = eval_windows(r.val_tokens, r.seq_len, int(cfg.eval.windows_per_domain))

main()
"""


def peak_rss_kib(cmd: list[str]) -> int:
    """Run ``cmd`` from the repository root; its own peak RSS in KiB (``wait4``: this child only)."""
    proc = subprocess.Popen(cmd, cwd=bc.REPO_ROOT, env=bc.tune_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    # read stderr while it runs (a full pipe would block the child), then reap it with wait4
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-3000:]}")
    return int(usage.ru_maxrss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="outputs/bench_memory")
    p.add_argument("--loss-chunks", default="0,8",
                   help="loss_chunks settings to compare (0: full (B, T, V) logits, the tiny config's default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe config (all runs)")
    args = p.parse_args()
    common = [*WIDE, *SHORT, *args.overrides]
    variants = {
        "tandem": bc.tune_command("recipes/pretrain.py", TINY, *common, "mixture.learner=tandem"),
        "fixed": bc.tune_command("recipes/pretrain.py", TINY, *common, "mixture.learner=fixed",
                                 "mixture.weights=uniform"),
        "baseline": [sys.executable, "-c", BASELINE, TINY, *common, "mixture.learner=tandem"],
    }
    chunk_settings = [int(c) for c in args.loss_chunks.split(",")]
    rows = []
    for rep in range(args.repeats):
        row = {}
        runs = [("baseline", None)] + [(n, c) for c in chunk_settings for n in ("tandem", "fixed")]
        shift = rep % len(runs)
        for name, chunks in runs[shift:] + runs[:shift]:
            cmd = list(variants[name])
            key = name if chunks is None else f"{name}.loss_chunks={chunks}"
            if name != "baseline":
                cmd += [f"loss_chunks={chunks}", f"output_dir={args.out}/runs/{name}_chunks{chunks}/rep{rep}"]
            row[key] = peak_rss_kib(cmd) / 1024.0  # MiB
            print(f"repeat {rep}: {key:<24} peak RSS {row[key]:.0f} MiB", flush=True)
        for c in chunk_settings:
            t, f, b = row[f"tandem.loss_chunks={c}"], row[f"fixed.loss_chunks={c}"], row["baseline"]
            row[f"raw_ratio.loss_chunks={c}"] = t / f
            row[f"net_ratio.loss_chunks={c}"] = (t - b) / (f - b)
        rows.append(row)
    figures = {key: bc.spread([r[key] for r in rows]) for key in sorted(rows[0], key=lambda k: ("ratio" not in k, k))}
    from tandem_components.models import decoder

    cfg = bc.load_config(TINY, *common)
    n_params = sum(p.numel() for p in decoder(**{k: v for k, v in cfg.model.items() if k != "_component_"}).parameters())
    bc.write_json(bc.REPO_ROOT / args.out / "results.json",
                  {"machine": bc.machine(), "args": vars(args), "overrides": common, "parameters": n_params,
                   "commands": {k: " ".join(v) for k, v in variants.items()}, "figures": figures, "repeats": rows})
    print(f"\nmodel: {n_params / 1e6:.1f}M parameters ({' '.join(WIDE)})")
    print("| figure | median [min-max] (repeats) |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key if 'ratio' in key else 'peak_rss_mib.' + key} | {bc.fmt(value, 3 if 'ratio' in key else 0)} |")
    print(f"\nwritten: {args.out}/results.json")


if __name__ == "__main__":
    main()
