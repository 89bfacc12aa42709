"""RESULTS 11f: where the 75% copy belongs. From each seed's TANDEM export of 11b (the quality regime, fitted Δ),
write that mixture and three variants that move only books_q75: to its epoch cap 0.195 (taken from junk), and to
0.10, below 1/M = 0.125 (the freed weight to junk, the swarm's direction, or to the four non-copy sources in
proportion). Each is then retrained at stage-2 size and scored on books' whole val split (commands in RESULTS 11f).

    python benchmarks/results/q75_placement/make_variants.py [outputs/fitted_quality]
"""
import copy
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/fitted_quality")
LOW, CAP = 0.10, 0.195
OTHERS = ["dialogue", "legal", "math", "junk"]


def variant(w: dict, name: str) -> dict:
    v = dict(w)
    if name == "up":
        v["junk"] -= CAP - v["books_q75"]
        v["books_q75"] = CAP
    elif name in ("tojunk", "toothers"):
        freed, v["books_q75"] = v["books_q75"] - LOW, LOW
        share = {"junk": 1.0} if name == "tojunk" else {k: v[k] / sum(v[o] for o in OTHERS) for k in OTHERS}
        for k, f in share.items():
            v[k] += freed * f
    return v


for seed in range(3):
    doc = yaml.safe_load((RUNS / "stage1" / "tandem_fitted" / f"seed{seed}" / "mixture.yaml").read_text())
    for name in ["base", "tojunk", "toothers", "up"]:
        out = copy.deepcopy(doc)
        weights = variant(doc["weights"]["average"], name)
        out["weights"], out["method"] = {"average": weights, "last": weights}, f"tandem_{name}"
        (HERE / f"{name}_seed{seed}.mixture.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
