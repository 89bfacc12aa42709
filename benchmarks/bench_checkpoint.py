"""Training-checkpoint save time and size: the sharded format (DCP) on 2 ranks and on 1, vs the
single-process format v1 (full state dicts, one ``torch.save`` per component) on the same model.

    python benchmarks/bench_checkpoint.py [--repeats 3] [--out outputs/bench_checkpoint]

What is saved is what a TANDEM stage-1 checkpoint holds: both twins (model + AdamW state after one step)
and the small replicated state (here a stand-in of the loaders' and α's few KB). The model is the tiny
config widened (``MODEL`` below: width 256, 4 layers, vocab 8192: 6.3M parameters; ~25 MB of fp32
weights, ~75 MB with AdamW's two moments, twice for the twins). Each repeat runs one process (format v1,
then the sharded format, order alternating) and one 2-rank run (``torchrun --nproc_per_node 2``, gloo,
both twins FSDP2-sharded), one after the other; each save is timed from the first rank entering
``save_training_checkpoint`` to the last leaving it (the state-dict calls, writing, fsync, checksums,
the manifest and the rename included). Reported: median [min-max] seconds and bytes, the ratios
sharded(2 ranks) / v1 and sharded(1 rank) / v1, and each rank's share of the shard bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

MODEL = dict(vocab_size=8192, num_layers=4, num_heads=8, num_kv_heads=4, embed_dim=256, max_seq_len=128)


def _twins():
    import torch

    from tandem_components.distributed.collectives import rank_and_world_size
    from tandem_components.distributed.parallel import make_prepare
    from tandem_components.models import decoder
    from tandem_components.training.twins import build_twins

    world = rank_and_world_size()[1]

    def build():
        torch.manual_seed(0)
        return decoder(**MODEL)

    adamw = lambda params: torch.optim.AdamW(params, lr=1e-3)  # noqa: E731
    twins = build_twins(build, adamw, adamw, prepare=make_prepare(device=torch.device("cpu"), fsdp=world > 1))
    tokens = torch.randint(0, MODEL["vocab_size"], (2, 64))
    for model, optimizer in ((twins.proxy, twins.proxy_optimizer), (twins.reference, twins.reference_optimizer)):
        model(tokens).float().mean().backward()  # one step: AdamW's moments exist, as in any real checkpoint
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return twins


def _replicated():
    import torch

    return {"mixture": {"weights": torch.full((7,), 1 / 7, dtype=torch.float64), "num_updates": 3},
            "train_loader": {"num_batches": 30, "tokens_drawn": torch.zeros(7, dtype=torch.int64)}}


def _save(root: Path, variant: str, twins, step: int) -> tuple[float, Path]:
    from tandem_components.distributed.collectives import barrier
    from tandem_components.training.sharded_state import get_sharded_state
    from tandem_components.training.state import save_training_checkpoint

    barrier()
    start = time.perf_counter()
    if variant == "v1":  # the single-process format: full state dicts as components
        state = {**_replicated(), "model": twins.proxy.state_dict(), "optimizer": twins.proxy_optimizer.state_dict(),
                 "reference_model": twins.reference.state_dict(),
                 "reference_optimizer": twins.reference_optimizer.state_dict()}
        path = save_training_checkpoint(root / variant, step, state, fingerprint="0" * 64)
    else:
        parts = {"model": (twins.proxy, twins.proxy_optimizer),
                 "reference": (twins.reference, twins.reference_optimizer)}
        path = save_training_checkpoint(root / variant, step, _replicated(), fingerprint="0" * 64,
                                        sharded=get_sharded_state(parts))
    return time.perf_counter() - start, path


def _sizes(path: Path) -> dict:
    shards = {p.name: p.stat().st_size for p in (path / "sharded").glob("*.distcp")} if (path / "sharded").is_dir() else {}
    return {"total_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), "shard_bytes": shards}


def worker(out: Path, repeat: int) -> None:
    """One process of one repeat (under torchrun: one rank). Rank 0 writes ``<out>/<world>-<repeat>.json``."""
    from tandem_components.distributed.collectives import is_main_process, rank_and_world_size
    from tandem_components.distributed.parallel import init_distributed_if_launched

    init_distributed_if_launched("cpu")
    world = rank_and_world_size()[1]
    twins = _twins()
    variants = ["sharded"] if world > 1 else (["v1", "sharded"] if repeat % 2 == 0 else ["sharded", "v1"])
    result = {}
    for variant in variants:
        seconds, path = _save(out / f"ckpt-{world}", variant, twins, step=repeat)
        result[variant] = {"seconds": seconds, **_sizes(path)}
    if is_main_process():
        (out / f"{world}-{repeat}.json").write_text(json.dumps(result))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _fmt(values: list[float]) -> str:
    return bc.fmt(bc.spread(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench_checkpoint")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # the repeat, in a child
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.worker is not None:
        worker(out, args.worker)
        return 0
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**bc.tune_env(), "OMP_NUM_THREADS": "1"}  # both runs on 1 thread per process: 2 cores, 2 ranks
    me = [str(Path(__file__).resolve()), "--out", str(out)]
    for r in range(args.repeats):
        for launcher in ([sys.executable], [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]):
            subprocess.run([*launcher, *me, "--worker", str(r)], cwd=bc.REPO_ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(out / "ckpt-1", ignore_errors=True)
            shutil.rmtree(out / "ckpt-2", ignore_errors=True)
    runs = {w: [json.loads((out / f"{w}-{r}.json").read_text()) for r in range(args.repeats)] for w in (1, 2)}
    v1 = [run["v1"] for run in runs[1]]
    one = [run["sharded"] for run in runs[1]]
    two = [run["sharded"] for run in runs[2]]
    share = [max(r["shard_bytes"].values()) / sum(r["shard_bytes"].values()) for r in two]
    rows = [
        ("format v1, 1 process (full state dicts)", v1),
        ("sharded (DCP), 1 process", one),
        ("sharded (DCP), 2 ranks", two),
    ]
    lines = ["| checkpoint | save s | MB on disk |", "|---|---|---|"]
    for name, runs_ in rows:
        lines.append(f"| {name} | {_fmt([r['seconds'] for r in runs_])} | "
                     f"{_fmt([r['total_bytes'] / 1e6 for r in runs_])} |")
    ratios = {
        "save_time_sharded_2_ranks_over_v1": [b["seconds"] / a["seconds"] for a, b in zip(v1, two)],
        "save_time_sharded_1_rank_over_v1": [b["seconds"] / a["seconds"] for a, b in zip(v1, one)],
        "bytes_sharded_2_ranks_over_v1": [b["total_bytes"] / a["total_bytes"] for a, b in zip(v1, two)],
        "largest_rank_share_of_shard_bytes_2_ranks": share,
    }
    ratios = {k: bc.spread(v) for k, v in ratios.items()}
    lines += ["", "| ratio (per repeat, median [min-max]) | value |", "|---|---|"]
    lines += [f"| {k} | {bc.fmt(v)} |" for k, v in ratios.items()]
    table = "\n".join(lines)
    print(table)
    (out / "results.json").write_text(json.dumps({"model": MODEL, "repeats": args.repeats, "runs": runs,
                                                  "ratios": ratios, "machine": bc.machine()}, indent=2))
    (out / "table.md").write_text(table + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
