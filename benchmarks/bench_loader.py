"""Tokens/s of ``WeightedDomainLoader`` alone vs what the training step consumes.

    python benchmarks/bench_loader.py [--repeats 3] [--seconds 3] [--train-steps 10]

On the real shards (``data/shards/embedded``) with B and T of the tiny config (16 x 128), one process,
interleaved per repeat:
  loader   ``next(loader)`` batches for ``--seconds``, with ``set_weights(α)`` every 10 batches (α drawn
           from a Dirichlet, as a mixture learner moves it); tokens/s = B·T·batches / time;
  train    ``--train-steps`` fixed-mixture training steps of the tiny model (``PretrainRecipe._train_step``,
           the recipe's own step: forward, per-domain loss, backward, clip, AdamW, schedule) on batches
           drawn beforehand; tokens/s = B·T·steps / time.
Ratio loader / train per repeat (target >= 20): how much faster batches come than they are used.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

TINY = "configs/pretrain/tiny_stage1.yaml"


def loader_tokens_per_s(loader, seconds: float, rng: np.random.Generator, m: int) -> float:
    tokens, batches = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if batches % 10 == 0:
            loader.set_weights(rng.dirichlet(np.ones(m)))
        batch = next(loader)
        tokens += batch.tokens.numel()
        batches += 1
    return tokens / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--out", default="outputs/bench_loader")
    args = p.parse_args()

    from recipes.pretrain import PretrainRecipe
    from tandem_components.data.loader import WeightedDomainLoader
    from tandem_components.torchtune_api import set_seed

    cfg = bc.load_config(TINY, "mixture.learner=fixed", "mixture.weights=uniform")
    recipe = PretrainRecipe(cfg)
    set_seed(recipe.seed)
    recipe._setup_data()
    recipe._setup_mixture()
    recipe._setup_models()
    m = len(recipe.domains)
    loader = WeightedDomainLoader(recipe.train_tokens, [1.0 / m] * m, recipe.batch_size, recipe.seq_len, seed=0)
    rng = np.random.default_rng(0)
    batches = [next(loader) for _ in range(args.train_steps)]
    for b in batches[:2]:  # warm-up
        recipe._train_step(recipe.model, recipe.optimizer, recipe.lr_scheduler, b)
    rows = []
    for rep in range(args.repeats):
        row = {}
        for name in (["loader", "train"] if rep % 2 == 0 else ["train", "loader"]):
            if name == "loader":
                row["loader"] = loader_tokens_per_s(loader, args.seconds, rng, m)
            else:
                start = time.perf_counter()
                for b in batches:
                    recipe._train_step(recipe.model, recipe.optimizer, recipe.lr_scheduler, b)
                row["train"] = sum(b.tokens.numel() for b in batches) / (time.perf_counter() - start)
        row["ratio"] = row["loader"] / row["train"]
        print(f"repeat {rep}: loader {row['loader']:.0f} tokens/s, train step {row['train']:.0f} tokens/s, "
              f"ratio {row['ratio']:.1f}", flush=True)
        rows.append(row)
    figures = {
        "loader_over_train": bc.spread([r["ratio"] for r in rows]),
        "loader_tokens_per_s": bc.spread([r["loader"] for r in rows]),
        "train_tokens_per_s": bc.spread([r["train"] for r in rows]),
    }
    bc.write_json(bc.REPO_ROOT / args.out / "results.json",
                  {"machine": bc.machine(), "args": vars(args), "batch_size": recipe.batch_size,
                   "seq_len": recipe.seq_len, "figures": figures, "repeats": rows})
    print("\n| figure | median [min-max] (repeats) |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {bc.fmt(value, 1 if 'over' in key else 0)} |")
    print(f"\nwritten: {args.out}/results.json")


if __name__ == "__main__":
    main()
