"""The verdict of the main job: did the learned mixture train a better model than the baseline?

    python -m tandem_components.verdict <learned run dir> <baseline run dir> [--out DIR]

Both run dirs are stage-2 outputs (``eval_test.json``, written by the pretraining recipes). Prints the
per-domain **test** perplexity of both models side by side with their ratio, and the verdict on the mean,
or on the **target** perplexity when the runs score a target (a corpus with target domains:
docs/METHOD.md "Target domains"), and writes ``verdict.{md,png}`` (a bar chart of the two) in ``--out``.

One seed can say only so much: the seed alone moves a mixture's perplexity by several percent
(benchmarks/RESULTS.md). So the verdict gives the ratio and calls the difference "beyond the seed noise"
only when it exceeds what the seed measurably does in that regime: ``--seed-spread s`` is the relative
standard deviation over seeds of one fixed mixture's mean test perplexity, measured in the same regime
(``--spread-source`` says where), and a difference of two one-seed runs counts when
|ratio - 1| > 2 sqrt(2) s (two standard deviations of a difference of two runs, each moved by s). Without
a measured spread the verdict states the ratio and no ranking.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from tandem_components.atomic import atomic_path, atomic_write_text
from tandem_components.errors import TandemError


def read_test_eval(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "eval_test.json"
    if not path.is_file():
        raise TandemError(f"{path}: not found (expected a finished stage-2 run of recipes/pretrain.py)")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("split") != "test":
        raise TandemError(f"{path}: not a test-split evaluation (split {doc.get('split')!r})")
    return doc


def judged_score(doc: dict) -> tuple[float, str]:
    """(value, name) of what the verdict judges: the target perplexity if the run scores one, else the mean."""
    if doc.get("target"):
        return doc["target"]["perplexity"], "target test perplexity"
    return doc["mean_perplexity"], "mean test perplexity"


def verdict_table(learned: dict, baseline: dict, names: Sequence[str]) -> tuple[str, float]:
    """Markdown table of per-domain test perplexity (learned, baseline, ratio) and the ratio of the judged
    scores (the target's when the runs score one, first in the table; else the means)."""
    domains = list(learned["domains"])
    if domains != list(baseline["domains"]):
        raise TandemError(f"the two runs have different domains: {domains} vs {list(baseline['domains'])}")
    targets = [(doc.get("target") or {}).get("weights") for doc in (learned, baseline)]
    if targets[0] != targets[1]:
        raise TandemError(f"the two runs score different targets: {targets[0]} vs {targets[1]}")
    lines = [f"| domain | {names[0]} | {names[1]} | ratio |", "|---|---:|---:|---:|"]
    if targets[0]:
        a, b = learned["target"]["perplexity"], baseline["target"]["perplexity"]
        lines.append(f"| **target** ({', '.join(targets[0])}) | **{a:.2f}** | **{b:.2f}** | **{a / b:.3f}** |")
    for d in domains:
        a, b = learned["domains"][d]["perplexity"], baseline["domains"][d]["perplexity"]
        lines.append(f"| {d} | {a:.2f} | {b:.2f} | {a / b:.3f} |")
    mean = (learned["mean_perplexity"], baseline["mean_perplexity"])
    cells = ["mean", f"{mean[0]:.2f}", f"{mean[1]:.2f}", f"{mean[0] / mean[1]:.3f}"]
    lines.append("| " + " | ".join(cells if targets[0] else [f"**{c}**" for c in cells]) + " |")  # bold: judged
    return "\n".join(lines), judged_score(learned)[0] / judged_score(baseline)[0]


def verdict_sentence(learned: float, baseline: float, names: Sequence[str], seed_spread: float | None,
                     source: str = "", score: str = "mean test perplexity") -> str:
    """What one seed can say: the ratio, and whether it is beyond the measured seed noise (module doc)."""
    ratio = learned / baseline
    direction = "lower" if ratio < 1 else "higher"
    head = (f"The {names[0]} mixture: {score} {learned:.2f} vs {baseline:.2f} for {names[1]} "
            f"(ratio {ratio:.3f}, {abs(100 * (1 - ratio)):.1f}% {direction}), one seed.")
    if seed_spread is None:
        return head + " No seed spread was given: this is a ratio, not a ranking (benchmarks/compare_mixtures.py runs seeds)."
    bound = 2 * 2**0.5 * seed_spread
    spread = f"the seed alone moves a mixture by {100 * seed_spread:.1f}% here{f' ({source})' if source else ''}"
    if abs(ratio - 1) <= bound:
        return f"{head} Within seed noise: {spread}, so a difference under {100 * bound:.1f}% ranks nothing."
    word = "better" if ratio < 1 else "worse"
    return f"{head} {word.upper()} beyond seed noise: {spread}, and the difference exceeds {100 * bound:.1f}%."


def plot_verdict(learned: dict, baseline: dict, names: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = [*learned["domains"], "mean"]
    values = [[doc["domains"][d]["perplexity"] for d in learned["domains"]] + [doc["mean_perplexity"]]
              for doc in (learned, baseline)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(domains) + 2), 4.5), dpi=110)
    for j, (name, ys) in enumerate(zip(names, values)):
        ax.bar([i - 0.2 + 0.4 * j for i in range(len(domains))], ys, 0.4, label=name)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels(domains, rotation=20)
    ax.set_ylabel("test perplexity (lower is better)")
    ax.set_title("Target model per domain: learned mixture vs baseline (test split)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("learned", help="stage-2 run dir trained on the learned mixture")
    parser.add_argument("baseline", help="stage-2 run dir trained on the baseline mixture")
    parser.add_argument("--names", nargs=2, default=["learned", "baseline"], help="column names")
    parser.add_argument("--out", default=None, help="where verdict.md / verdict.png go (default: learned dir)")
    parser.add_argument("--seed-spread", type=float, default=None,
                        help="relative std over seeds of one mixture's mean test perplexity in this regime")
    parser.add_argument("--spread-source", default="", help="where --seed-spread was measured (printed with it)")
    args = parser.parse_args(argv)
    try:
        learned, baseline = read_test_eval(args.learned), read_test_eval(args.baseline)
        table, ratio = verdict_table(learned, baseline, args.names)
    except TandemError as e:
        print(f"verdict: error: {e}", file=sys.stderr)
        return 2
    if args.seed_spread is not None and not args.seed_spread > 0:
        print(f"verdict: error: --seed-spread: expected a fraction > 0, got {args.seed_spread}", file=sys.stderr)
        return 2
    (ours, score), (theirs, _) = judged_score(learned), judged_score(baseline)
    verdict = verdict_sentence(ours, theirs, args.names, args.seed_spread, args.spread_source, score)
    out = Path(args.out or args.learned)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "verdict.md", f"# Verdict\n\n{table}\n\n{verdict}\n")
    plot = plot_verdict(learned, baseline, args.names, out / "verdict.png")
    print(f"\nPer-domain TEST perplexity of the target model\n\n{table}\n\n{verdict}\n\n"
          f"  table  {out / 'verdict.md'}\n  chart  {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
