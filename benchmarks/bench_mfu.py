"""Steady-state tokens/s and MFU of a finished ``recipes/pretrain.py`` (or ``data_restricted.py``) run.

    python benchmarks/bench_mfu.py --run outputs/gpt160m_fixed --config configs/pretrain/gpt160m_stage1.yaml \
        [--skip 50] [--peak-tflops 989.4] [--gpus 1] [key=value ...]   # the overrides the run used

Reads the run's metric log (``<run>/logs/*.txt``, torchtune DiskLogger: the recipe's cumulative
``tokens_per_second``), recovers the elapsed time at each logged step, and takes the rate between step
``--skip`` (after compile warm-up) and the last logged step. FLOPs per token come from
``tandem_components.training.cost_model`` (``6 N + 12 L d T``); for ``mixture.learner: tandem`` the reference steps
and probe forwards are added (``tandem_flops_per_proxy_token``), so the MFU is that of the whole stage 1
per proxy token. Peak: 989.4 TFLOP/s (H100 SXM, dense bf16) per GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

from tandem_components.data.loader import domains_per_probe, probe_budget
from tandem_components.training.cost_model import (
    decoder_flops_per_token,
    mfu,
    tandem_flops_per_proxy_token,
)


def steady_tokens_per_s(log_dir: Path, tokens_per_step: int, skip: int) -> float:
    """Rate between the first logged step >= ``skip`` and the last one, from the cumulative rate."""
    elapsed = bc.recipe_elapsed(log_dir, tokens_per_step)
    steps = sorted(s for s in elapsed if s >= skip)
    if len(steps) < 2:
        raise SystemExit(f"{log_dir}: need two logged steps >= {skip} (lower --skip or log_every_n_steps)")
    a, b = steps[0], steps[-1]
    return tokens_per_step * (b - a) / (elapsed[b] - elapsed[a])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the run's output_dir")
    p.add_argument("--config", required=True)
    p.add_argument("--skip", type=int, default=50)
    p.add_argument("--gpus", type=int, default=1, help="ranks of the run (for the per-GPU rate and MFU)")
    p.add_argument("--peak-tflops", type=float, default=989.4)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = bc.load_config(args.config, *args.overrides)
    b, t = int(cfg.data.batch_size), int(cfg.data.seq_len)
    tokens_per_step = b * t  # data.batch_size is global (over all ranks), as is the logged tokens/s
    m = cfg.model
    per_token = decoder_flops_per_token(
        vocab_size=m.vocab_size, num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
        embed_dim=m.embed_dim, seq_len=t, intermediate_dim=m.get("intermediate_dim"),
    )
    if cfg.mixture.learner == "tandem":
        import json

        domains = len(json.loads((bc.REPO_ROOT / cfg.data.shards / "index.json").read_text())["domains"])
        per_domain = int(cfg.mixture.get("probe_seqs_per_domain", 8))
        probed = domains_per_probe(domains, per_domain, probe_budget(cfg.mixture, b))  # a bounded probe: D of M
        per_token = tandem_flops_per_proxy_token(
            per_token, int(cfg.mixture.episode_len), int(cfg.mixture.probe_steps),
            val_batch_ratio=int(cfg.mixture.get("val_batch_size", b)) / b,
            probe_batch_ratio=probed * per_domain / b,
        )
    rate = steady_tokens_per_s(bc.REPO_ROOT / args.run / "logs", tokens_per_step, args.skip)
    per_gpu = rate / args.gpus
    print(f"tokens/s (all ranks): {rate:.0f}; per GPU: {per_gpu:.0f}")
    print(f"model FLOPs per proxy token: {per_token / 1e9:.3f} GFLOP ({cfg.mixture.learner})")
    print(f"MFU: {100 * mfu(per_gpu, per_token, args.peak_tflops * 1e12):.1f}% of {args.peak_tflops} TFLOP/s")


if __name__ == "__main__":
    main()
