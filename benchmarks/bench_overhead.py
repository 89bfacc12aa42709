"""TANDEM stage-1 wall time vs a fixed-mixture run, vs the cost model, vs DoReMi and DoGE.

    python benchmarks/bench_overhead.py [--config configs/pretrain/tiny_stage1.yaml] [--steps 40]
        [--repeats 3] [--out outputs/bench_overhead] [key=value ...]

Each repeat, in one process (interleaved; the order of the runs rotates between repeats):
  1. unit costs, micro-benchmarked on the same model and batches as the runs (a ``PretrainRecipe`` built
     from the TANDEM config): t_train (draw a train batch + one proxy step), t_reference (draw a
     validation batch + one reference step on train + validation batch), t_probe (one no-grad forward of
     one twin on the probe batch), t_sync (``twins.sync()``); medians of ``--unit-samples`` timings;
  2. the real recipe (``recipes/pretrain.py``'s ``recipe_main``, in-process) with ``mixture.learner`` =
     tandem, fixed, doremi (its reference training of ``max_steps`` steps included: the full pipeline)
     and doge, same proxy, steps and batch; the time is the recipe's ``summary.json`` ``wall_time_s``
     (the training loop; evaluation is off: ``eval.every_n_steps=0``).
Reported per repeat, then median [min-max]: TANDEM measured / predicted (target <= 1.05), TANDEM / fixed,
TANDEM / DoReMi (issue 4: <= 1), TANDEM / DoGE, and the cost model's predicted TANDEM / fixed.
"""

from __future__ import annotations

import argparse
import statistics
import time

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x (e.g. by torchtune's config.instantiate)
    from benchmarks import bench_common as bc
import torch

from tandem_components.torchtune_api import set_seed
from tandem_components.training.cost_model import (
    UnitCosts,
    episode_counts,
    predict_fixed_time,
    predict_stage1_time,
)

LEARNERS = {
    "tandem": [],
    "fixed": ["mixture.weights=uniform"],
    # DoReMi / DoGE settings as in benchmarks/configs/compare_tiny.yaml
    "doremi": ["mixture.update=exponentiated_gradient", "mixture.lr=1.0", "mixture.smoothing=0.001"],
    "doge": ["mixture.update=exponentiated_gradient", "mixture.lr=0.1"],
}


def _sync_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, samples: int) -> float:
    times = []
    for _ in range(samples):
        _sync_device()
        start = time.perf_counter()
        fn()
        _sync_device()  # GPU: time the work, not its launch
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_units(config: str, overrides: list[str], samples: int, warmup: int = 2) -> UnitCosts:
    """Micro-benchmark each unit of the cost model on the recipe's own model, loaders and step code."""
    from recipes.pretrain import PretrainRecipe

    cfg = bc.load_config(config, *overrides, "mixture.learner=tandem")
    recipe = PretrainRecipe(cfg)
    set_seed(recipe.seed)  # what PretrainRecipe.setup does first
    recipe._setup_data()
    recipe._setup_mixture()
    recipe._setup_models()
    recipe._setup_loaders()
    train_iter, val_iter = iter(recipe.train_loader), iter(recipe.val_loader)
    est, twins, m = recipe.estimator, recipe.twins, len(recipe.domains)
    batch = next(train_iter).to(recipe.device)

    def train():
        recipe._proxy_step(next(train_iter).to(recipe.device))

    def reference():
        est.probe_step(batch, next(val_iter).to(recipe.device))

    probe = recipe.probe_sampler.sample().to(recipe.device)

    def probe_forward():
        with torch.no_grad():
            recipe.forward(twins.proxy, probe, m)

    for fn in (train, reference, probe_forward, twins.sync):
        _timed(fn, warmup)
    units = UnitCosts(
        train_step_s=_timed(train, samples), reference_step_s=_timed(reference, samples),
        probe_forward_s=_timed(probe_forward, samples), sync_s=_timed(twins.sync, samples),
    )
    return units  # the recipe (two twins) is freed before the runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pretrain/tiny_stage1.yaml")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--unit-samples", type=int, default=8)
    p.add_argument("--learners", default="tandem,fixed,doremi,doge")
    p.add_argument("--out", default="outputs/bench_overhead")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe config (all runs)")
    args = p.parse_args()

    common = [f"max_steps={args.steps}", "eval.every_n_steps=0", "eval.windows_per_domain=4", *args.overrides]
    cfg = bc.load_config(args.config, *common)
    e, k = int(cfg.mixture.episode_len), int(cfg.mixture.probe_steps)
    learners = args.learners.split(",")
    rows = []
    for rep in range(args.repeats):
        units = measure_units(args.config, common, args.unit_samples)
        row = {"repeat": rep, "units": units.__dict__, "wall_s": {}}
        order = learners[rep % len(learners):] + learners[: rep % len(learners)]
        for name in order:
            out = f"{args.out}/runs/{name}/rep{rep}"
            summary = bc.run_recipe_in_process(
                args.config, *common, f"mixture.learner={name}", *LEARNERS[name], f"output_dir={out}"
            )
            row["wall_s"][name] = summary["wall_time_s"]
            print(f"repeat {rep}: {name:<7} {summary['wall_time_s']:.1f} s", flush=True)
        row["predicted_tandem_s"] = predict_stage1_time(units, args.steps, e, k)
        row["predicted_fixed_s"] = predict_fixed_time(units, args.steps)
        print(f"repeat {rep}: units {units}; predicted TANDEM {row['predicted_tandem_s']:.1f} s", flush=True)
        rows.append(row)

    def ratio(a, b):
        return bc.spread([r["wall_s"][a] / r["wall_s"][b] for r in rows])

    figures = {
        "tandem_measured_over_predicted": bc.spread([r["wall_s"]["tandem"] / r["predicted_tandem_s"] for r in rows]),
        "predicted_tandem_over_fixed": bc.spread([r["predicted_tandem_s"] / r["predicted_fixed_s"] for r in rows]),
    }
    for other in learners:
        if other != "tandem" and "tandem" in learners:
            figures[f"tandem_over_{other}"] = ratio("tandem", other)
    if "fixed" in learners:
        figures["fixed_measured_over_predicted"] = bc.spread([r["wall_s"]["fixed"] / r["predicted_fixed_s"] for r in rows])
    figures["wall_s"] = {name: bc.spread([r["wall_s"][name] for r in rows]) for name in learners}
    figures["units_s"] = {key: bc.spread([r["units"][key] for r in rows]) for key in rows[0]["units"]}
    counts = episode_counts(args.steps, e, k)
    result = {"machine": bc.machine(), "args": vars(args), "episode_len": e, "probe_steps": k,
              "counts": counts.__dict__, "figures": figures, "repeats": rows}
    bc.write_json(bc.REPO_ROOT / args.out / "results.json", result)
    print("\n| figure | median [min-max] (repeats) |\n|---|---|")
    for key, value in figures.items():
        if "median" in value:
            print(f"| {key} | {bc.fmt(value)} |")
    for group in ("wall_s", "units_s"):
        for key, value in figures[group].items():
            print(f"| {group}.{key} | {bc.fmt(value, 4)} |")
    print(f"\nwritten: {args.out}/results.json")


if __name__ == "__main__":
    main()
