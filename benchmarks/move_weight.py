"""A controlled variant of a learned mixture: one domain's weight set to a value, the difference taken from (or
given to) named other domains in proportion to their weights, every other weight as learned.

    python benchmarks/move_weight.py --export <stage-1 mixture.yaml> --out <variant.yaml> \\
        [--domain books_q75 --to 0.10 --others junk]

Why: to ask where a learner's weight for one source belongs (is the 75%-damaged copy worth less than 1/M to
the target? is a floored source worth more?), retrain the learner's own mixture with only that weight moved and
compare, paired by seed (RESULTS 11f, 11i). Without ``--domain`` the export's ``average`` is written unchanged:
the variants' paired baseline. The variant's ``last`` and ``average`` are both the moved ``average`` (stage 2
reads ``mixture.use=average``); its provenance is the export's, so stage 2 checks it as it checks the export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the repo's packages, however this file is run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tandem_components.errors import TandemError  # noqa: E402
from tandem_components.mixture.export import read_mixture_export, write_mixture_export  # noqa: E402


def moved(weights: dict[str, float], domain: str, to: float, others: list[str]) -> dict[str, float]:
    """``weights`` with ``domain`` at ``to``; the difference comes out of ``others`` in proportion to their weights."""
    if domain not in weights:
        raise TandemError(f"--domain: {domain!r} is not a domain of the export ({list(weights)})")
    bad = [o for o in others if o not in weights or o == domain]
    if bad or not others or len(set(others)) != len(others):
        raise TandemError(f"--others: expected distinct domains of the export other than {domain!r}, got {others}")
    if not 0.0 <= to <= 1.0:
        raise TandemError(f"--to: expected a weight in [0, 1], got {to}")
    out, change, total = dict(weights), to - weights[domain], sum(weights[o] for o in others)
    out[domain] = to
    for o in others:
        out[o] -= change * weights[o] / total
    if min(out[o] for o in others) < 0:
        raise TandemError(f"--to {to}: the others {others} hold {total:.4f}, too little to give {change:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, help="a stage-1 mixture.yaml")
    parser.add_argument("--out", required=True, help="the variant's mixture.yaml (written atomically)")
    parser.add_argument("--domain", help="the domain whose weight is moved (none: the export unchanged)")
    parser.add_argument("--to", type=float, help="its new weight")
    parser.add_argument("--others", nargs="+", default=[], help="the domains the difference comes from or goes to")
    args = parser.parse_args(argv)
    try:
        weights, doc = read_mixture_export(args.export)
        if args.domain is not None:
            if args.to is None:
                raise TandemError("--to: expected the moved domain's new weight")
            weights = moved(weights, args.domain, args.to, args.others)
        domains = list(doc["domains"])
        values = [weights[d] for d in domains]
        write_mixture_export(args.out, domains, values, values, doc["method"], doc.get("provenance", {}))
    except TandemError as e:
        print(f"move_weight: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{d} {w:.3f}" for d, w in zip(domains, values)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
