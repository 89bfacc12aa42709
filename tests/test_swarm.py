"""The swarm (RegMix-style search): its draws and regression on hand-made data (tandem_components/mixture/swarm.py),
the driver's one-line errors (tools/swarm.py), the harness's plan for a swarm learner, and one real swarm of
4 tiny proxy runs through the harness, whose export stage 2 trains on, then resumed."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml

from tandem_components.errors import TandemError
from tandem_components.mixture.export import read_mixture_export
from tandem_components.mixture.named import epoch_cap_bounds
from tandem_components.mixture.swarm import (
    MIN_RUNS, check_options, draw_mixtures, fit_swarm, predicted_optimum, swarm_prior,
)
from tests.recipe_runner import REPO_ROOT, TINY


def _load_driver():
    spec = importlib.util.spec_from_file_location("swarm_driver", REPO_ROOT / "tools" / "swarm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


driver = _load_driver()
cm = driver.cm  # the harness (benchmarks/compare_mixtures.py), as the driver imports it

COUNTS = [1000, 3000, 500, 8000, 2000]  # train tokens (budgets) of 5 domains
TARGET = np.array([0.3, 0.25, 0.1, 0.2, 0.15])  # the synthetic loss's optimum, inside the simplex
CURVATURE = np.array([3.0, 2.0, 5.0, 1.0, 2.0])


def _quadratic(x: np.ndarray) -> np.ndarray:
    return 2.0 + ((x - TARGET) ** 2 * CURVATURE).sum(axis=-1)


# ------------------------------------------------------------------------------------------------ draws
def test_draws_lie_on_the_simplex_under_the_cap_and_repeat_per_seed():
    prior = swarm_prior(COUNTS)  # temperature 0.5: p ∝ n^0.5
    assert prior == pytest.approx(np.sqrt(COUNTS) / np.sqrt(COUNTS).sum())
    # 1.5 epochs of 14.5k tokens for a 10k-token run: the two smallest domains' caps bind on the prior itself
    cap = epoch_cap_bounds(COUNTS, 1.5, 10_000, key="swarm.epoch_cap").numpy()
    assert (prior > cap).any()
    draws = draw_mixtures(prior, 200, [0.1, 5.0], seed=7, max_weights=cap)
    assert draws.shape == (200, 5) and (draws >= 0).all()
    assert np.abs(draws.sum(axis=1) - 1).max() < 1e-12
    assert (draws <= cap + 1e-12).all() and np.isclose(draws, cap).any()  # under the cap, some at it
    assert np.array_equal(draw_mixtures(prior, 200, [0.1, 5.0], seed=7, max_weights=cap), draws)
    assert not np.allclose(draw_mixtures(prior, 200, [0.1, 5.0], seed=8, max_weights=cap), draws)
    # prefix-stable: a swarm grown from 50 to 200 runs keeps its first 50 mixtures
    assert np.array_equal(draw_mixtures(prior, 50, [0.1, 5.0], seed=7, max_weights=cap), draws[:50])
    # the candidates (stream 1) are another sequence of the same seed
    assert not np.allclose(draw_mixtures(prior, 50, [0.1, 5.0], seed=7, max_weights=cap, stream=1), draws[:50])
    with pytest.raises(TandemError, match="swarm.epoch_cap: 0.5 epochs"):
        epoch_cap_bounds(COUNTS, 0.5, 10_000, key="swarm.epoch_cap")


def test_the_dirichlet_is_centred_on_the_prior_and_concentration_sets_its_spread():
    """Dirichlet(c * prior): mean the prior; a large c draws near it, a small c near a corner."""
    prior = swarm_prior(COUNTS)
    dense, sparse = draw_mixtures(prior, 4000, 50.0, seed=0), draw_mixtures(prior, 4000, 0.1, seed=0)
    assert dense.mean(axis=0) == pytest.approx(prior, abs=0.01)
    assert sparse.mean(axis=0) == pytest.approx(prior, abs=0.03)
    assert np.abs(dense - prior).sum(axis=1).mean() < 0.3 < 1.0 < np.abs(sparse - prior).sum(axis=1).mean()
    assert np.median(sparse.max(axis=1)) > 0.95  # most sparse draws put nearly everything on one domain


# ------------------------------------------------------------------------------------------- regression
def test_the_regression_recovers_a_known_optimum():
    """A quadratic loss with its minimum inside the simplex, 48 noisy runs: the held-out ranking is near
    perfect, ridge (with its squares) is chosen, and the export lands near the true optimum."""
    prior = swarm_prior(COUNTS)
    mixtures = draw_mixtures(prior, 48, [0.1, 5.0], seed=0)
    scores = _quadratic(mixtures) + np.random.default_rng(1).normal(0.0, 0.002, 48)
    fit = fit_swarm(mixtures, scores, folds=5, seed=0)
    assert set(fit.spearman) == {"ridge", "gbm"} and all(len(fit.held_out[m]) == 48 for m in fit.spearman)
    assert fit.model == "ridge" and fit.spearman["ridge"] > 0.98
    optimum, predicted = predicted_optimum(fit, prior, [0.1, 5.0], seed=0, candidates=20_000, top_k=50)
    assert optimum.sum() == pytest.approx(1.0, abs=1e-12) and (optimum >= 0).all()
    assert np.abs(optimum - TARGET).sum() < 0.1
    assert _quadratic(optimum) < min(scores.min(), _quadratic(prior)) + 0.005
    assert predicted == pytest.approx(_quadratic(optimum), abs=0.01)
    again = predicted_optimum(fit_swarm(mixtures, scores, folds=5, seed=0), prior, [0.1, 5.0], seed=0,
                              candidates=20_000, top_k=50)
    assert np.array_equal(again[0], optimum)  # seeded: the same export


def test_the_model_with_the_better_held_out_ranking_is_chosen():
    """A loss that jumps at one domain's weight: trees rank it, a smooth quadratic cannot."""
    mixtures = draw_mixtures(swarm_prior(COUNTS), 32, [0.5, 5.0], seed=0)
    scores = np.where(mixtures[:, 0] > 0.15, 1.0, 0.0) + 0.01 * mixtures[:, 1]
    fit = fit_swarm(mixtures, scores, folds=5, seed=0)
    assert fit.model == "gbm" and fit.spearman["gbm"] > fit.spearman["ridge"] + 0.1


def test_too_few_runs_and_bad_options_are_one_line_errors():
    mixtures = draw_mixtures(swarm_prior(COUNTS), MIN_RUNS - 1, 1.0, seed=0)
    with pytest.raises(TandemError, match=f"swarm.n: {MIN_RUNS - 1} runs are too few"):
        fit_swarm(mixtures, _quadratic(mixtures))
    assert check_options({})["n"] == 32 and check_options({"concentration": 2})["concentration"] == 2
    for bad, key in [({"n": 3}, "swarm.n"), ({"concentration": [5.0, 0.1]}, "swarm.concentration"),
                     ({"concentration": -1}, "swarm.concentration"), ({"epoch_cap": 0}, "swarm.epoch_cap"),
                     ({"top_k": 10, "candidates": 5}, "swarm.candidates"), ({"folds": 1}, "swarm.folds"),
                     ({"prior_temperature": "hot"}, "swarm.prior_temperature"), ({"nn": 4}, "swarm.nn: unknown")]:
        with pytest.raises(TandemError, match=key):
            check_options(bad)


# --------------------------------------------------------------------------------------------- driver
def test_bad_driver_input_is_one_line_exit_2_and_writes_nothing(embedded_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = "configs/data_restricted/tiny_stage2.yaml"
    common = [*TINY, f"data.shards={embedded_shards}", "data.total_token_budget=60000", "max_steps=2"]
    for extra, key in [(["swarm.concentration=-1"], "swarm.concentration"), (["swarm.n=8"], "swarm.n"),
                       (["data.nope=1"], "data.nope"), (["swarm.epoch_cap=0.001"], "swarm.epoch_cap")]:
        out = tmp_path / "out"
        status = driver.main(["--recipe", "data_restricted", "--config", config, "--n", "4", "--out", str(out),
                              *common, *extra])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("swarm: error: ")]
        assert status == 2 and len(err) == 1 and key in err[0], (extra, err)
        assert not out.exists()
    assert driver.main(["--recipe", "data_restricted", "--config", "nope.yaml", "--out", str(tmp_path / "o")]) == 2
    assert "--config: nope.yaml not found" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- harness
def _harness(tmp_path, learners, **extra) -> str:
    doc = {"recipe": "data_restricted", "stage1_config": "configs/data_restricted/tiny_stage1.yaml",
           "stage2_config": "configs/data_restricted/tiny_stage2.yaml", "seeds": [0], "learners": learners,
           "fixed_baselines": ["uniform"], **extra}
    path = tmp_path / "harness.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


def test_the_harness_plans_a_swarm_learner_as_the_driver(tmp_path):
    learners = {"swarm": ["swarm.n=8", "swarm.max_steps=5", "model.num_layers=1"], "tandem": [],
                "regmix": ["mixture.learner=swarm", "swarm.concentration=2.0"]}
    cfg = cm.load_config(_harness(tmp_path, learners, common_overrides=["data.seq_len=64"],
                                  stage1_overrides=["max_steps=9"], stage2_overrides=["max_steps=10"]))
    runs = {(r["stage"], r["method"]): r for r in cm.plan_runs(cfg, tmp_path / "out")}
    swarm = runs[(1, "swarm")]
    # the proxies train on the stage-2 config, with the common and stage-2 overrides and the learner's own
    assert swarm["config"] == cfg["stage2_config"] and swarm["outputs"] == cm.SWARM_OUTPUTS
    assert swarm["overrides"] == ["data.seq_len=64", "max_steps=10", "model.num_layers=1"]
    command = cm.swarm_command(cfg["recipe"], swarm)
    assert command[1] == cm.SWARM_DRIVER and "mixture.learner=swarm" not in command
    flags = dict(zip(command[2:14:2], command[3:14:2]))
    assert flags == {"--recipe": "data_restricted", "--config": str(REPO_ROOT / cfg["stage2_config"]), "--n": "8",
                     "--seed": "0", "--out": str(swarm["dir"]), "--nproc-per-node": "1"}
    assert command[14:] == ["swarm.max_steps=5", *swarm["overrides"]]
    assert runs[(1, "regmix")]["swarm_n"] == 32 and "swarm" not in runs[(1, "tandem")]  # a variant; a recipe run
    # shorter proxies learn at another repetition rate: stage 2 is told so, and the table says so
    assert "data.allow_budget_mismatch=true" in runs[(2, "swarm")]["overrides"]
    assert "data.allow_budget_mismatch=true" not in runs[(2, "regmix")]["overrides"]
    assert "5 steps long" in cfg["notes"]["swarm"] and "regmix" not in cfg["notes"]
    with pytest.raises(cm.HarnessError, match="learners.swarm: swarm.concentration"):
        cm.load_config(_harness(tmp_path, {"swarm": ["swarm.concentration=[5,1]"]}))
    with pytest.raises(cm.HarnessError, match="the swarm runs recipes"):
        cm.load_config(_harness(tmp_path, {"swarm": []}, recipe="sft", stage1_config="configs/sft/tiny_stage1.yaml",
                                stage2_config="configs/sft/tiny_stage2.yaml"))


def test_a_swarm_that_searches_once_is_retrained_at_every_seed(tmp_path):
    """``swarm.search_seed``: one search (the ceiling's protocol), its one mixture behind every seed's stage 2."""
    learners = {"swarm": ["swarm.n=8", "swarm.search_seed=1"], "regmix": ["mixture.learner=swarm"]}
    cfg = cm.load_config(_harness(tmp_path, learners, seeds=[0, 1, 2]))
    runs = cm.plan_runs(cfg, tmp_path / "out")
    searches = [r for r in runs if r["stage"] == 1 and r["method"] == "swarm"]
    assert [r["seed"] for r in searches] == [1] and searches[0]["swarm"] == ["swarm.n=8"]  # not passed to the driver
    assert "swarm.search_seed" not in " ".join(cm.swarm_command(cfg["recipe"], searches[0]))
    sources = {r["seed"]: r["weights_from"] for r in runs if r["stage"] == 2 and r["method"] == "swarm"}
    assert sources == {s: tmp_path / "out" / "stage1" / "swarm" / "seed1" / "mixture.yaml" for s in (0, 1, 2)}
    assert len([r for r in runs if r["stage"] == 1 and r["method"] == "regmix"]) == 3  # one search per seed
    assert "one search, at seed 1" in cfg["notes"]["swarm"] and "regmix" not in cfg["notes"]
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(cm.HarnessError, match="learners.swarm: swarm.search_seed: expected a seed"):
            cm.load_config(_harness(tmp_path, {"swarm": [f"swarm.search_seed={bad}"]}))


@pytest.mark.slow
def test_a_swarm_through_the_harness_feeds_stage_2_then_resumes(embedded_shards, tmp_path, capsys):
    """4 tiny proxy runs (3 steps each) under an epoch cap that binds, the fit, its export trained on in
    stage 2; then the comparison again (nothing runs), then the swarm's marker removed: the driver reruns,
    finds its 4 proxy runs finished, and writes the same export (stage 2 is not redone)."""
    tiny = [o for o in TINY if not o.startswith("lr_scheduler")] + ["lr_scheduler.warmup_steps=1"]
    common = [*tiny, f"data.shards={embedded_shards}", "data.total_token_budget=60000", "max_steps=3",
              "eval.test_windows_per_domain=4"]
    options = ["swarm.n=4", "swarm.epoch_cap=0.05", "swarm.candidates=500", "swarm.top_k=10"]
    config = _harness(tmp_path, {"swarm": options}, common_overrides=common, fixed_baselines=[])
    out = tmp_path / "compare"
    assert cm.main(["--config", config, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(": done in ") == 2

    swarm_dir = out / "stage1" / "swarm" / "seed0"
    weights, doc = read_mixture_export(swarm_dir / "mixture.yaml")
    provenance, runs = doc["provenance"], json.loads((swarm_dir / "swarm_runs.json").read_text())["runs"]
    assert doc["method"] == "swarm" and provenance["num_runs"] == 4 and len(runs) == 4
    assert provenance["hyperparameters"]["epoch_cap"] == 0.05 and set(provenance["spearman_held_out"]) == {"ridge", "gbm"}
    assert provenance["regression"] in ("ridge", "gbm") and provenance["token_budget"] and provenance["run_tokens"] == 1536
    cap = provenance["hyperparameters"]["max_weights"]
    for run in runs:  # every proxy trained on its drawn mixture and was scored on val
        evaluation = json.loads((swarm_dir / "runs" / f"{run['run']:03d}" / "eval.json").read_text())
        assert run["score"] == evaluation["mean_loss"] and evaluation["split"] == "val"
        # scored on every val window of each domain, not the 24-window progress sample
        assert all(v["tokens"] > 4 * 24 * 16 for v in evaluation["domains"].values()), evaluation["domains"]
        trained, _ = read_mixture_export(swarm_dir / "runs" / f"{run['run']:03d}" / "mixture.yaml", use="last")
        assert trained == pytest.approx(run["weights"], abs=1e-12)
        assert all(w <= cap[d] + 1e-12 for d, w in run["weights"].items())
    assert any(abs(w - cap[d]) < 1e-9 for run in runs for d, w in run["weights"].items())  # the cap bound
    assert all(w <= cap[d] + 1e-12 for d, w in weights.items()) and sum(weights.values()) == pytest.approx(1.0)
    summary = json.loads((swarm_dir / "summary.json").read_text())
    assert summary["wall_time_s"] == pytest.approx(sum(r["wall_time_s"] for r in runs)) == provenance["wall_time_s"]
    # stage 2 trained on the swarm's export
    stage2, _ = read_mixture_export(out / "stage2" / "swarm" / "seed0" / "mixture.yaml", use="last")
    assert stage2 == pytest.approx(weights, abs=1e-12)
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["swarm"]["stage1_wall_time_s"] == [summary["wall_time_s"]]
    assert results["warnings"] == []  # no "made no mixture update" for a swarm
    md = (out / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| swarm |"))
    assert row.rstrip(" |").endswith(f"{summary['wall_time_s']:.1f}") and "Stage-1 time of swarm" in md

    assert cm.main(["--config", config, "--out", str(out)]) == 0  # resumed: nothing reruns
    assert "0 run(s) executed, 2 skipped" in capsys.readouterr().out
    proxies = {p: p.stat().st_mtime_ns for p in swarm_dir.glob("runs/*/compare_run.json")}
    export = (swarm_dir / "mixture.yaml").read_bytes()
    (swarm_dir / cm.MARKER).unlink()
    assert cm.main(["--config", config, "--out", str(out)]) == 0
    assert "1 run(s) executed, 1 skipped" in capsys.readouterr().out  # the driver; stage 2 of the same export skipped
    log = (out / "logs" / "stage1-swarm-seed0.stdout.log").read_text()
    assert log.count("skipped (finished)") == 4
    assert {p: p.stat().st_mtime_ns for p in proxies} == proxies and (swarm_dir / "mixture.yaml").read_bytes() == export
    assert yaml.safe_load(export)["weights"]["average"] == weights
