"""Tokens/s of tandem's fixed-mixture training loop vs torchtune's own ``full_finetune_single_device``.

    python benchmarks/bench_hot_loop.py [--steps 40] [--repeats 3] [--out outputs/bench_hot_loop]

Both sides are the real recipes through the real CLI (``tune run`` subprocesses, interleaved, the order
alternating between repeats), on the SAME model, data, batch, sequence length and flags:
  * model: the tiny config's decoder (torchtune's ``llama3`` builder: vocab 8192, 2 layers, 4 heads,
    2 kv heads, width 128), identical initial weights: torchtune's recipe loads them from a
    torchtune-format ``.pt`` written here (``FullModelTorchTuneCheckpointer``), built exactly as our
    recipe builds its model (``torch.manual_seed(seed)`` then the builder);
  * data: windows of T tokens of the prepared shards (``data/shards/embedded``, our tokenizer), drawn by
    ``WeightedDomainLoader`` with uniform weights and the same seed; torchtune reads them as a map-style
    dataset (``ShardWindows`` below; no padding, no packing, so no attention mask on either side:
    ``packed=True`` would add a block-causal mask to torchtune's forward only);
  * B=16, T=128, fp32, no compile, no activation checkpointing, AdamW (same lr, betas, weight decay),
    cosine schedule with the same warmup, grad-norm clipping at 1.0, full logits with plain
    cross-entropy (torchtune: ``torch.nn.CrossEntropyLoss``; ours: ``loss_chunks: 0``), log every step.
Tokens/s per step: torchtune logs ``tokens_per_second_per_gpu`` (label tokens of the step / the step's
wall time, its data loading included); ours logs a cumulative ``tokens_per_second``, from which each
step's rate is recovered (elapsed(s) = B·T·s / tps(s)). The first ``--skip`` steps (warm-up) are dropped;
per run the median step rate is taken; the ratio ours / torchtune is formed per repeat.
Note: torchtune shifts labels inside its loss step, so a window of T tokens yields T - 1 loss targets
(it still counts T tokens); ours takes T inputs and T targets from T + 1 tokens: equal compute.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x (e.g. by torchtune's config.instantiate)
    from benchmarks import bench_common as bc
import torch
from torch.utils.data import Dataset

TINY = "configs/pretrain/tiny_stage1.yaml"


class ShardWindows(Dataset):
    """``num_samples`` windows of ``seq_len`` tokens from the prepared shards, as torchtune samples.

    Drawn by ``WeightedDomainLoader`` (uniform α, ``seed``): the same kind of windows our recipe trains on.
    ``tokens`` and ``labels`` are the same list (torchtune's convention: its recipe shifts the labels).
    """

    def __init__(self, tokenizer, shards: str, seq_len: int, num_samples: int, seed: int = 0):
        from tandem_components.data.loader import WeightedDomainLoader
        from tandem_components.data.shards import ShardedCorpus

        corpus = ShardedCorpus.open(shards)
        arrays = [corpus.tokens(d, "train") for d in corpus.domains]
        m = len(arrays)
        loader = WeightedDomainLoader(arrays, [1.0 / m] * m, num_samples, seq_len, seed=seed)
        self.tokens = next(loader).tokens.tolist()

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "labels": self.tokens[i]}


def write_torchtune_setup(out: Path, steps: int, config: str = TINY, overrides: tuple[str, ...] = (),
                          device: str = "cpu", dtype: str = "fp32", compile: bool = False) -> Path:
    """Initial weights (torchtune format) and the ``full_finetune_single_device`` config for the model, data,
    batch and optimizer of our ``config`` (+ ``overrides``) with the given flags; returns the config."""
    cfg = bc.load_config(config, *overrides)
    dims = {k: v for k, v in cfg.model.items() if k != "_component_"}
    from tandem_components.torchtune_api import llama3

    torch.manual_seed(int(cfg.seed))  # as PretrainRecipe._build_model: same initial weights
    model = llama3(**dims)
    ckpt = out / "init"
    ckpt.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), ckpt / "model.pt")
    b, t = int(cfg.data.batch_size), int(cfg.data.seq_len)
    dims_yaml = "\n".join(f"  {k}: {v}" for k, v in dims.items())
    text = f"""# written by benchmarks/bench_hot_loop.py: torchtune's full_finetune_single_device on our model
output_dir: {out}/torchtune_run
model:
  _component_: torchtune.models.llama3.llama3
{dims_yaml}
tokenizer:
  _component_: tandem_components.data.tandem_tokenizer
  path: {cfg.data.shards}/tokenizer.json
dataset:
  _component_: benchmarks.bench_hot_loop.ShardWindows
  shards: {cfg.data.shards}
  seq_len: {t}
  num_samples: {b * steps}
  seed: {int(cfg.seed)}
seed: {int(cfg.seed)}
shuffle: True
checkpointer:
  _component_: torchtune.training.FullModelTorchTuneCheckpointer
  checkpoint_dir: {ckpt}
  checkpoint_files: [model.pt]
  recipe_checkpoint: null
  output_dir: ${{output_dir}}
  model_type: LLAMA3
resume_from_checkpoint: False
batch_size: {b}
epochs: 1
max_steps_per_epoch: {steps}
gradient_accumulation_steps: 1
optimizer:
  _component_: torch.optim.AdamW
  lr: {cfg.optimizer.lr}
  betas: [{cfg.optimizer.betas[0]}, {cfg.optimizer.betas[1]}]
  weight_decay: {cfg.optimizer.weight_decay}
lr_scheduler:
  _component_: torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup
  num_warmup_steps: {int(cfg.lr_scheduler.warmup_steps)}
loss:
  _component_: torch.nn.CrossEntropyLoss
optimizer_in_bwd: False
clip_grad_norm: {cfg.clip_grad_norm}
compile: {compile}
device: {device}
dtype: {dtype}
enable_activation_checkpointing: False
enable_activation_offloading: False
metric_logger:
  _component_: torchtune.training.metric_logging.DiskLogger
  log_dir: ${{output_dir}}/logs
log_every_n_steps: 1
log_peak_memory_stats: False
"""
    path = out / "bench_torchtune_tiny.yaml"
    path.write_text(text)
    return path


def torchtune_rates(log_dir: Path, skip: int) -> list[float]:
    rows = bc.read_disk_log(bc.newest_log(log_dir))
    return [r["tokens_per_second_per_gpu"] for s, r in sorted(rows.items()) if s > skip and "tokens_per_second_per_gpu" in r]


def ours_rates(log_dir: Path, skip: int, tokens_per_step: int) -> list[float]:
    return rates_between_logged_steps(bc.recipe_elapsed(log_dir, tokens_per_step), skip, tokens_per_step)


def rates_between_logged_steps(elapsed: dict[int, float], skip: int, tokens_per_step: int) -> list[float]:
    """tokens/s between consecutive logged steps from ``skip`` on (``elapsed``: bench_common.recipe_elapsed)."""
    steps = sorted(elapsed)
    return [tokens_per_step * (b - a) / (elapsed[b] - elapsed[a]) for a, b in itertools.pairwise(steps) if a >= skip]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the rates")
    p.add_argument("--out", default="outputs/bench_hot_loop")
    args = p.parse_args()
    out = (bc.REPO_ROOT / args.out).resolve()
    cfg = bc.load_config(TINY)
    tokens_per_step = int(cfg.data.batch_size) * int(cfg.data.seq_len)
    tt_config = write_torchtune_setup(out, args.steps)
    ours_overrides = [
        "mixture.learner=fixed", "mixture.weights=uniform", f"max_steps={args.steps}", "log_every_n_steps=1",
        "eval.every_n_steps=0", "eval.windows_per_domain=4", "loss_chunks=0", "compile=false", "dtype=fp32",
    ]
    rows = []
    for rep in range(args.repeats):
        row = {"repeat": rep}
        for name in (["ours", "torchtune"] if rep % 2 == 0 else ["torchtune", "ours"]):
            run_dir = out / f"{name}/rep{rep}"
            if name == "ours":
                wall = bc.run_tune("recipes/pretrain.py", TINY, *ours_overrides, f"output_dir={run_dir}")
                rates = ours_rates(run_dir / "logs", args.skip, tokens_per_step)
            else:
                wall = bc.run_tune("full_finetune_single_device", tt_config, f"output_dir={run_dir}")
                rates = torchtune_rates(run_dir / "logs", args.skip)
            row[name] = {"median_tokens_per_s": statistics.median(rates), "process_wall_s": wall,
                         "step_rates": rates}
            print(f"repeat {rep}: {name:<9} {row[name]['median_tokens_per_s']:.0f} tokens/s "
                  f"(median of {len(rates)} steps; process {wall:.1f} s)", flush=True)
        row["ratio"] = row["ours"]["median_tokens_per_s"] / row["torchtune"]["median_tokens_per_s"]
        rows.append(row)
    figures = {
        "ours_over_torchtune": bc.spread([r["ratio"] for r in rows]),
        "ours_tokens_per_s": bc.spread([r["ours"]["median_tokens_per_s"] for r in rows]),
        "torchtune_tokens_per_s": bc.spread([r["torchtune"]["median_tokens_per_s"] for r in rows]),
    }
    bc.write_json(out / "results.json", {"machine": bc.machine(), "args": vars(args), "torchtune_config": str(tt_config),
                                         "ours_overrides": ours_overrides, "figures": figures, "repeats": rows})
    print("\n| figure | median [min-max] (repeats) |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {bc.fmt(value)} |")
    print(f"\nwritten: {args.out}/results.json")


if __name__ == "__main__":
    main()
