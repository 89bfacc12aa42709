"""benchmarks/target_table.py: the leave-one-out target table, on hand-made harness results."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.recipe_runner import REPO_ROOT


@pytest.fixture(scope="module")
def table():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # target_table imports compare_mixtures beside it
    try:
        spec = importlib.util.spec_from_file_location("target_table", REPO_ROOT / "benchmarks" / "target_table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    return module


def _method(kind, values, mixture, stage1=()):
    return {"kind": kind, "seeds": [0, 1, 2], "average_target": values, "stage1_wall_time_s": list(stage1),
            "mixture": {d: [w] * 3 for d, w in mixture.items()}}


def _results(tandem, natural, uniform, similarity):
    mix = {"a": 0.5, "b": 0.5}
    runs = [{"stage": 2, "method": "natural", "summary": {"wall_time_s": 50.0}},
            {"stage": 2, "method": "similarity:1", "summary": {"wall_time_s": 999.0}}]
    return {"domains": ["a", "b", "t"], "runs": runs, "config": {"split": "test", "seeds": [0, 1, 2], "recipe": "x"},
            "methods": {"tandem": _method("learned", tandem, {"a": 0.8, "b": 0.2}, stage1=[100.0] * 3),
                        "uniform": _method("fixed", uniform, mix), "natural": _method("fixed", natural, mix),
                        "similarity:1": _method("fixed", similarity, {"a": 0.6, "b": 0.4})}}


def test_learners_are_ranked_against_each_targets_best_count_heuristic_and_similarity(table, tmp_path):
    results = {
        # t1: tandem 10% better than natural (the best count heuristic) at every seed, ties similarity
        "t1": _results([90.0, 91.0, 89.0], [100.0, 101.0, 99.0], [120.0, 121.0, 119.0], [90.5, 90.0, 89.5]),
        # t2: tandem worse than uniform (here the best count heuristic) beyond two standard errors
        "t2": _results([110.0, 112.0, 111.0], [130.0, 131.0, 129.0], [100.0, 101.0, 102.0], [105.0, 104.0, 106.0]),
    }
    for target, res in results.items():
        (tmp_path / target).mkdir()
        (tmp_path / target / "results.json").write_text(json.dumps(res))
    paths = table.write_target_table(tmp_path, ["t1", "t2"])
    summary = json.loads(paths["json"].read_text())
    t1, t2 = summary["targets"]["t1"], summary["targets"]["t2"]
    assert t1["best_count"] == "natural" and t2["best_count"] == "uniform" and t1["similarity"] == "similarity:1"
    assert t1["comparisons"]["tandem"]["best_count"]["diff"] == pytest.approx(-10.0)
    assert t2["comparisons"]["tandem"]["best_count"]["diff"] == pytest.approx(10.0)
    assert t1["fixed_spread"] == pytest.approx(90.0 / 120.0)  # similarity is the best fixed mixture on t1
    assert t1["stage2_wall_time_s"] == pytest.approx(50.0)  # count heuristics' runs only
    # averaged: per seed the mean over targets of tandem / each target's best count heuristic
    expected = [(90 / 100 + 110 / 100) / 2, (91 / 101 + 112 / 101) / 2, (89 / 99 + 111 / 102) / 2]
    averaged = summary["averaged"]["tandem"]["best_count"]
    assert averaged["ratio"] == pytest.approx(sum(expected) / 3) and averaged["seeds"] == 3
    md = paths["md"].read_text()
    assert "| t1 | tandem | -10.00 ± 0.00 | 0.900 | **better** |" in md
    assert "| t2 | tandem | +10.00 ± 0.58 | 1.099 | **worse** |" in md
    assert "2.00x" in md  # stage 1 (100 s) against one stage-2 run (50 s)
    assert "| a | 0.800 | 0.600 | 0.500 |" in md  # tandem beside similarity and the best count heuristic


def test_the_driver_refuses_a_target_the_data_config_lacks_in_one_line(tmp_path):
    """``compare_targets.py --targets poetry`` on a corpus without poetry: exit 2, one line, nothing run."""
    import subprocess

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "compare_targets.py"), "--config",
         "benchmarks/configs/compare_target.yaml", "--data-config", "configs/data/embedded.yaml",
         "--targets", "poetry", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and "no domain 'poetry'" in err[0], result.stderr
    assert not (tmp_path / "out").exists()
