"""The leave-one-out target table: one harness comparison per target (``compare_targets.py``), read into one report.

For each target the harness wrote ``<out>/<target>/results.json`` with ``score: target``. This module ranks:

- every method's target perplexity per target (mean ± SE over seeds) and its mean over the targets;
- each learned method against **the best count heuristic** of that target (uniform, natural, temperature:τ,
  unimax:C: the lowest mean, picked with hindsight, so the strictest) and against **the similarity baseline**
  (``similarity:τ``), paired by seed: the difference ± SE and whether it is beyond two standard errors;
- over the targets: per seed, the mean over targets of the ratio method / baseline, then mean ± SE over seeds
  (the issue's "averaged over the leave-one-out targets" figure);
- the spread of the fixed mixtures tried (their best vs uniform), the learners' stage-1 wall time against one
  stage-2 run (the price of asking the target), and the learned mixtures beside the similarity weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from compare_mixtures import UNIFORM, mean_std, paired_difference, standard_error

from tandem_components.atomic import atomic_write_text

SIMILARITY = "similarity"


def is_count_heuristic(name: str) -> bool:
    """A fixed mixture computed from the sources' sizes alone (not the target-aware similarity)."""
    return name == UNIFORM or name == "natural" or name.split(":")[0] in ("temperature", "unimax")


def per_seed(method: Mapping[str, Any]) -> dict[int, float]:
    return dict(zip(method["seeds"], method["average_target"]))


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, float, int]:
    """Mean and SE of a - b over the seeds both have, and that number of seeds."""
    seeds = sorted(set(a) & set(b))
    diff, se = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return diff, se, len(seeds)


def summarise(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``results``: target -> that target's harness results.json. Returns the table's numbers."""
    targets: dict[str, Any] = {}
    for target, res in results.items():
        methods = {n: m for n, m in res["methods"].items() if m.get("average_target")}
        means = {n: mean_std(m["average_target"])[0] for n, m in methods.items()}
        count = [n for n, m in methods.items() if m["kind"] == "fixed" and is_count_heuristic(n)]
        similarity = [n for n in methods if n.split(":")[0] == SIMILARITY]
        best_count = min(count, key=means.get) if count else None
        best_fixed = min((n for n, m in methods.items() if m["kind"] == "fixed"), key=means.get, default=None)
        stage2 = [r["summary"]["wall_time_s"] for r in res["runs"] if r["stage"] == 2 and r["method"] in count]
        row: dict[str, Any] = {
            "methods": {n: {"mean": means[n], "se": standard_error(m["average_target"]), "kind": m["kind"],
                            "seeds": per_seed(m), "mixture": {d: mean_std(v)[0] for d, v in m["mixture"].items()},
                            "stage1_wall_time_s": mean_std(m["stage1_wall_time_s"])[0] if m["stage1_wall_time_s"] else None}
                        for n, m in methods.items()},
            "best_count": best_count, "similarity": similarity[0] if similarity else None, "best_fixed": best_fixed,
            "stage2_wall_time_s": mean_std(stage2)[0] if stage2 else None,
            "fixed_spread": (means[best_fixed] / means[UNIFORM]) if best_fixed and UNIFORM in means else None,
            "domains": [d for d in res["domains"]],
        }
        row["comparisons"] = {}
        for name, m in row["methods"].items():
            if m["kind"] != "learned":
                continue
            row["comparisons"][name] = {
                ref: dict(zip(("diff", "se", "n"), paired(m["seeds"], row["methods"][row[ref]]["seeds"])),
                          ratio=m["mean"] / row["methods"][row[ref]]["mean"])
                for ref in ("best_count", "similarity") if row[ref]
            }
        targets[target] = row
    return {"targets": targets, "averaged": averaged_ratios(targets)}


def averaged_ratios(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per learned method and reference: per seed the mean over targets of method / reference, mean ± SE."""
    out: dict[str, Any] = {}
    learned = sorted({n for row in targets.values() for n, m in row["methods"].items() if m["kind"] == "learned"})
    for name in learned:
        for ref in ("best_count", "similarity"):
            ratios: dict[int, list[float]] = {}
            for row in targets.values():
                if name not in row["methods"] or not row[ref]:
                    continue
                mine, theirs = row["methods"][name]["seeds"], row["methods"][row[ref]]["seeds"]
                for s in set(mine) & set(theirs):
                    ratios.setdefault(s, []).append(mine[s] / theirs[s])
            full = [sum(v) / len(v) for v in ratios.values() if len(v) == len(targets)]
            if full:
                mean, se = mean_std(full)[0], standard_error(full)
                out.setdefault(name, {})[ref] = {"ratio": mean, "se": se, "seeds": len(full),
                                                 "beyond_2se": len(full) > 1 and abs(mean - 1) > 2 * se}
    return out


def _verdict(diff: float, se: float, n: int) -> str:
    if n < 2:
        return "one seed: no ranking"
    if abs(diff) <= 2 * se:
        return "tie (within 2 SE)"
    return "**better**" if diff < 0 else "**worse**"


def format_md(summary: Mapping[str, Any], title: str) -> str:
    targets = summary["targets"]
    names = list(dict.fromkeys(n for row in targets.values() for n in row["methods"]))
    lines = [f"# {title}", "", f"Target {summary['split']} perplexity (the target-weighted mean {summary['split']} loss, "
             "exponentiated), mean ± SE over seeds; lower is better. The target is never trained on.", "",
             "| method | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    for name in names:
        cells = []
        for row in targets.values():
            m = row["methods"].get(name)
            cells.append(f"{m['mean']:.2f} ± {m['se']:.2f}" if m else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| per target | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets),
              "| best count heuristic | " + " | ".join(str(r["best_count"]) for r in targets.values()) + " |",
              "| best fixed / uniform (room the fixed mixtures show) | "
              + " | ".join(f"{r['fixed_spread']:.3f}" if r["fixed_spread"] else "—" for r in targets.values()) + " |",
              "| one stage-2 run (s) | " + " | ".join(f"{r['stage2_wall_time_s']:.0f}" if r["stage2_wall_time_s"] else "—"
                                                       for r in targets.values()) + " |"]
    lines += ["", "## Learned mixtures against the baselines (paired by seed, ± 1 SE)", "",
              "| target | method | vs best count heuristic | ratio | verdict | vs similarity | ratio | verdict | stage 1 / one stage 2 |",
              "|---|---|---:|---:|---|---:|---:|---|---:|"]
    for target, row in targets.items():
        for name, comp in row["comparisons"].items():
            cells = []
            for ref in ("best_count", "similarity"):
                c = comp.get(ref)
                cells += ([f"{c['diff']:+.2f} ± {c['se']:.2f}", f"{c['ratio']:.3f}", _verdict(c["diff"], c["se"], c["n"])]
                          if c else ["—", "—", "—"])
            stage1, stage2 = row["methods"][name]["stage1_wall_time_s"], row["stage2_wall_time_s"]
            cost = f"{stage1 / stage2:.2f}x" if stage1 and stage2 else "—"
            lines.append(f"| {target} | {name} | " + " | ".join(cells) + f" | {cost} |")
    lines += ["", "## Averaged over the targets", "",
              "Per seed, the mean over targets of the method's target perplexity / the baseline's (each target's own "
              "best count heuristic); mean ± SE over seeds.", "",
              "| method | vs best count heuristic | beyond 2 SE? | vs similarity | beyond 2 SE? |", "|---|---:|---|---:|---|"]
    for name, refs in summary["averaged"].items():
        cells = []
        for ref in ("best_count", "similarity"):
            r = refs.get(ref)
            cells += [f"{r['ratio']:.3f} ± {r['se']:.3f}", "yes" if r["beyond_2se"] else "no"] if r else ["—", "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## The learned mixtures beside the similarity weights (mean over seeds)"]
    for target, row in targets.items():
        shown = [n for n, m in row["methods"].items() if m["kind"] == "learned"] + [n for n in (row["similarity"],
                                                                                          row["best_count"]) if n]
        lines += ["", f"Target **{target}**:", "", "| source | " + " | ".join(shown) + " |",
                  "|---|" + "---:|" * len(shown)]
        for d in row["methods"][shown[0]]["mixture"]:
            lines.append(f"| {d} | " + " | ".join(f"{row['methods'][n]['mixture'].get(d, math.nan):.3f}"
                                                  for n in shown) + " |")
    return "\n".join(lines) + "\n"


def write_target_table(out: Path, targets: Sequence[str]) -> dict[str, Path]:
    """Read ``<out>/<target>/results.json`` for each target; write ``<out>/results.{json,md}`` atomically."""
    results = {t: json.loads((out / t / "results.json").read_text(encoding="utf-8")) for t in targets}
    summary = summarise(results)
    first = next(iter(results.values()))["config"]
    summary["split"] = first.get("split", "test")
    title = (f"Mixing for a target, leave-one-out ({first.get('split', 'test')} split, seeds {first.get('seeds')}, "
             f"`{first.get('recipe')}`)")
    paths = {"json": out / "results.json", "md": out / "results.md"}
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(paths["md"], format_md(summary, title))
    return paths
