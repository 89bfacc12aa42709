"""RESULTS 11i: is man_pages worth more to the perl_docs target than TANDEM gives it? From each seed's TANDEM export
of the second corpus's quality table, write it ("base") and a variant with man_pages raised to 0.08 (the swarm's
weight for it), taken from the four graded copies in proportion ("manup"); each is retrained at stage-2 size and
scored on perl_docs' whole val split (RESULTS 11i).

    python benchmarks/results/quality_second_man_pages/make_variants.py [outputs/compare_quality_second]
"""
import copy
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/compare_quality_second")
RAISED = 0.08

for seed in range(3):
    doc = yaml.safe_load((RUNS / "stage1" / "tandem" / f"seed{seed}" / "mixture.yaml").read_text())
    w = doc["weights"]["average"]
    copies = [k for k in w if "_q" in k]
    for name in ["base", "manup"]:
        v = dict(w)
        if name == "manup":
            added, total = RAISED - v["man_pages"], sum(w[k] for k in copies)
            v["man_pages"] = RAISED
            for k in copies:
                v[k] -= added * w[k] / total
        out = copy.deepcopy(doc)
        out["weights"] = {"average": v, "last": v}
        (HERE / f"{name}_seed{seed}.mixture.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
