"""What a mixture costs as the number of domains M grows: TANDEM stage 1 vs a fixed-mixture run, M = 7, 28, 112.

    python benchmarks/bench_probe_cost.py [--repeats 3] [--steps 60] [--budgets 32] [--probe-seqs 16,4]

The embedded corpus (``data/shards/embedded``, ``make prepare``) is split by document into 4 and 16
sub-domains per domain (``tools/split_domains.py``: M = 28 and 112; same tokens, same tokenizer). For
each M, each repeat runs, interleaved (the order rotates between repeats), the real recipe in-process
(``recipes/pretrain.py``, ``summary.json`` ``wall_time_s``: the training loop, evaluation off) with:
  - ``fixed``: a uniform fixed mixture (the cost baseline: S proxy steps);
  - ``tandem_full_p<P>`` for each P of ``--probe-seqs``: TANDEM with the paper's probe, every domain at
    every update (``mixture.probe_budget=null``: M x P sequences, a cost that grows with M);
  - ``tandem_b<B>_p<P>`` for each B of ``--budgets`` and P of ``--probe-seqs``: the bounded probe, B
    sequences per update whatever M, P per probed domain (B // P domains per update, in turns).
Settings: the tiny config at E = 20, K = 5 (the GPU configs' episode), 16 sequences per probed domain
unless P says otherwise, B=16 x T=128, α's floor 0.07 / M per domain (the tiny config's 0.01 at M = 7).
Reported per M, median [min-max] over repeats: wall time ratio to ``fixed``, and Δ's quality: the mean
over the run's updates of ``delta_agreement`` (cos(Δ, Δ̃) of the two halves of the probe, centred: the
paper's Figure 8 measure, logged by the recipe at every update). The full probe's agreement at a given P
is the precision of each measured Δ_m at that P, which the bounded probe keeps (the same P sequences per
probed domain); what the bounded probe adds is staleness, the bound column. Its own logged agreement
(over every domain measured so far, each half centred over its own probe) covers only 2-6 domains in a
60-step run's 3 updates, where a cosine of so few entries runs near ±1: it is in results.json, not in
the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

try:
    import bench_common as bc  # `python benchmarks/bench_x.py`: puts the repository on sys.path
except ImportError:  # imported as benchmarks.bench_x
    from benchmarks import bench_common as bc

sys.path.insert(0, str(bc.REPO_ROOT / "tools"))
import split_domains  # noqa: E402

from tandem_components.data.loader import domains_per_probe  # noqa: E402

CONFIG = "configs/pretrain/tiny_stage1.yaml"
SHARDS = "data/shards/embedded"
PARTS = {7: 1, 28: 4, 112: 16}  # M: sub-domains per domain
COMMON = ["mixture.episode_len=20", "mixture.probe_steps=5", "mixture.probe_seqs_per_domain=16",
          "eval.every_n_steps=0", "eval.windows_per_domain=1", "eval.test_windows_per_domain=1",
          "log_every_n_steps=20", "lr_scheduler.warmup_steps=5"]


def _probes(budgets: list[int], probe_seqs: list[int], full: bool) -> dict[str, tuple[int | None, int]]:
    """TANDEM's variants: name -> (probe budget, None for every domain; sequences per probed domain)."""
    probes = {f"tandem_full_p{p}": (None, p) for p in (probe_seqs if full else [])}
    probes.update({f"tandem_b{b}_p{p}": (b, p) for b in budgets for p in probe_seqs})
    return probes


def _overrides(probe: tuple[int | None, int] | None) -> list[str]:
    """A variant's overrides: the uniform fixed mixture (``probe`` None), or TANDEM with that probe."""
    if probe is None:
        return ["mixture.learner=fixed", "mixture.weights=uniform"]
    budget, per_domain = probe
    return ["mixture.learner=tandem", f"mixture.probe_budget={'null' if budget is None else budget}",
            f"mixture.probe_seqs_per_domain={per_domain}"]


def _probe_size(probe: tuple[int | None, int], m: int) -> tuple[int, int]:
    """(sequences per update, updates within which every domain is re-measured) of a probe at M = m."""
    budget, per_domain = probe
    d = domains_per_probe(m, per_domain, budget)
    return d * per_domain, -(-m // d)


def _agreement(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines() if line]
    values = [r["delta_agreement"] for r in rows if r.get("delta_agreement") is not None]
    return sum(values) / len(values) if values else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--budgets", default="32", help="comma-separated probe budgets (sequences per update)")
    parser.add_argument("--probe-seqs", default="16", help="comma-separated sequences per probed domain")
    parser.add_argument("--no-full", action="store_true", help="skip TANDEM with the unbounded probe")
    parser.add_argument("--out", default="outputs/bench_probe_cost")
    args = parser.parse_args()
    out = bc.REPO_ROOT / args.out
    budgets = [int(b) for b in args.budgets.split(",") if b]
    probe_seqs = [int(p) for p in args.probe_seqs.split(",") if p]
    variants = {"fixed": None, **_probes(budgets, probe_seqs, full=not args.no_full)}
    shards = {}
    for m, parts in PARTS.items():
        shards[m] = bc.REPO_ROOT / SHARDS if parts == 1 else out / f"shards_m{m}"
        if parts > 1 and not (shards[m] / "index.json").is_file():
            split_domains.split_domains(bc.REPO_ROOT / SHARDS, shards[m], parts)
    runs: dict[str, dict[str, list[dict]]] = {str(m): {v: [] for v in variants} for m in PARTS}
    names = list(variants)
    for r in range(args.repeats):
        for m in PARTS:
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                run_dir = out / "runs" / f"m{m}" / name / f"repeat{r}"
                summary = bc.run_recipe_in_process(
                    CONFIG, *COMMON, *_overrides(variants[name]), f"data.shards={shards[m]}", f"max_steps={args.steps}",
                    f"mixture.min_weight={0.07 / m:.6g}",  # the tiny config's floor, 0.07 in all, spread over M
                    f"output_dir={run_dir.relative_to(bc.REPO_ROOT)}")
                row = {"wall_time_s": summary["wall_time_s"]}
                if name != "fixed":
                    row["delta_agreement"] = _agreement(run_dir)
                runs[str(m)][name].append(row)
                print(f"repeat {r} M={m} {name}: {row}", flush=True)
    table = ["| M | variant | probe sequences per update | every domain within (updates) | wall time / fixed "
             "| cos(Δ, Δ̃) (mean over updates) |", "|---:|---|---:|---:|---|---|"]
    ratios = {}
    for m in PARTS:
        fixed = [row["wall_time_s"] for row in runs[str(m)]["fixed"]]
        for name in names[1:]:
            rows = runs[str(m)][name]
            ratio = bc.spread([row["wall_time_s"] / f for row, f in zip(rows, fixed)])
            agreement = bc.spread([row["delta_agreement"] for row in rows])
            ratios[f"m{m}/{name}"] = {"ratio": ratio, "delta_agreement": agreement}
            seqs, bound = _probe_size(variants[name], m)
            shown = bc.fmt(agreement, 2) if bound == 1 else "as full at the same P"
            table.append(f"| {m} | {name} | {seqs} | {bound} | {bc.fmt(ratio)} | {shown} |")
    text = "\n".join(table)
    print(text)
    bc.write_json(out / "results.json", {"args": vars(args), "settings": COMMON, "runs": runs, "ratios": ratios,
                                         "machine": bc.machine()})
    (out / "table.md").write_text(text + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
