"""benchmarks/compare_mixtures.py: table formatting on hand-made numbers, config handling, and one real
end-to-end comparison (tandem + uniform, 2 seeds, tiny models) that is then resumed."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tandem_components.mixture.export import read_mixture_export
from tests.recipe_runner import REPO_ROOT, TINY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = REPO_ROOT / "benchmarks" / "compare_mixtures.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("compare_mixtures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cm = _load_harness()


# ------------------------------------------------------------------------------------------ formatting
def test_mean_std_and_ratio_on_hand_made_numbers():
    assert cm.mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))  # sample std (n - 1)
    assert cm.mean_std([5.0]) == (5.0, 0.0)
    assert cm.format_mean_std([10.0, 12.0, 14.0]) == "12.00 ± 1.15"  # ± standard error: 2 / sqrt(3)
    assert cm.format_mean_std([1.0, 2.0], digits=1) == "1.5 ± 0.5"
    assert cm.format_mean_std([7.0]) == "7.00"  # one seed: no ± 0
    assert cm.format_mean_std([]) == "—"
    assert cm.ratio_to([27.0, 29.0], [30.0, 34.0]) == pytest.approx(28.0 / 32.0)
    assert cm.ratio_to([1.0], None) is None


def _hand_made_results():
    def method(kind, a, b, avg, wall, mix):
        return {
            "kind": kind, "seeds": [0, 1], "perplexity": {"a": a, "b": b}, "average_perplexity": avg,
            "average_loss": [0.0, 0.0], "stage1_wall_time_s": wall, "stage1_num_updates": [3, 3] if wall else [],
            "mixture": mix,
        }

    methods = {
        "tandem": method("learned", [20.0, 22.0], [30.0, 30.0], [25.0, 26.0], [60.0, 62.0],
                         {"a": [0.7, 0.5], "b": [0.3, 0.5]}),
        "uniform": method("fixed", [24.0, 26.0], [32.0, 34.0], [28.0, 30.0], [], {"a": [0.5, 0.5], "b": [0.5, 0.5]}),
    }
    uniform = methods["uniform"]["average_perplexity"]
    for m in methods.values():
        m["ratio_to_uniform"] = cm.ratio_to(m["average_perplexity"], uniform)
    config = {"recipe": "pretrain", "stage1_config": "s1.yaml", "stage2_config": "s2.yaml", "use": "average"}
    return {"config": config, "domains": ["a", "b"], "methods": methods, "runs": [], "warnings": []}


def test_results_table_rows_columns_ratio_and_mixtures():
    md = cm.format_results_md(_hand_made_results())
    lines = md.splitlines()
    header = "| method | a | b | average | ratio | stage-1 time (s) |"
    assert header in lines
    # ± standard error (std / sqrt 2); ratio = 25.5 / 29 = 0.879; the best average is bold; fixed
    # baselines have no stage-1 time
    assert "| tandem | 21.00 ± 1.00 | 30.00 ± 0.00 | **25.50 ± 0.50** | 0.879 | 61.0 ± 1.0 |" in lines
    assert "| uniform | 25.00 ± 1.00 | 33.00 ± 1.00 | 29.00 ± 1.00 | 1.000 | — |" in lines
    mixtures = lines[lines.index("## Mixtures"):]
    assert "| tandem | 0.600 | 0.400 |" in mixtures and "| uniform | 0.500 | 0.500 |" in mixtures
    assert "## Warnings" not in md


def test_mixture_plot_is_a_png(tmp_path):
    path = cm.plot_mixtures(_hand_made_results(), tmp_path / "mixtures.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------------------------------------- config
def _harness_yaml(tmp_path, **extra) -> str:
    doc = {
        "recipe": "pretrain", "stage1_config": "configs/pretrain/tiny_stage1.yaml",
        "stage2_config": "configs/pretrain/tiny_stage2.yaml", "seeds": [0, 1],
        "learners": {"tandem": [], "doremi": ["mixture.lr=1.0"]}, "fixed_baselines": ["uniform", "natural"],
        **extra,
    }
    path = tmp_path / "harness.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


def test_config_overrides_deletions_and_run_plan(tmp_path):
    cfg = cm.load_config(_harness_yaml(tmp_path), ["seeds=[3]", "~learners.doremi", "stage1_overrides=[max_steps=7]"])
    assert cfg["seeds"] == [3] and list(cfg["learners"]) == ["tandem"]
    runs = cm.plan_runs(cfg, tmp_path / "out")
    assert [(r["stage"], r["method"], r["seed"]) for r in runs] == [
        (1, "tandem", 3), (2, "tandem", 3), (2, "uniform", 3), (2, "natural", 3)
    ]
    s1, s2_learned, s2_uniform, _ = runs
    assert s1["overrides"] == ["max_steps=7", "mixture.learner=tandem", "seed=3", f"output_dir={s1['dir']}"]
    assert f"mixture.weights_from={s1['dir'] / 'mixture.yaml'}" in s2_learned["overrides"]
    assert "mixture.use=average" in s2_learned["overrides"] and "mixture.learner=fixed" in s2_learned["overrides"]
    assert {"mixture.weights=uniform", "mixture.weights_from=null"} <= set(s2_uniform["overrides"])
    assert all(cm.VAL_EVAL_ALL not in r["overrides"] for r in runs)  # split=test: the recipes' own eval

    variant = cm.load_config(_harness_yaml(tmp_path, learners={"tandem_joint": ["mixture.learner=tandem", "k=v"]}))
    s1 = cm.plan_runs(variant, tmp_path / "out")[0]  # a variant names its learner itself
    assert [o for o in s1["overrides"] if o.startswith("mixture.learner=")] == ["mixture.learner=tandem"]


def test_the_val_table_evaluates_the_whole_val_split_in_stage_2_only(tmp_path):
    """split=val is the table for choosing settings: stage 2 evaluates every val window and the report
    reads eval.json; stage 1 (the learner) is the same run as for the test table."""
    cfg = cm.load_config(_harness_yaml(tmp_path), ["split=val", "~learners.doremi"])
    runs = cm.plan_runs(cfg, tmp_path / "out")
    stage1, stage2 = [r for r in runs if r["stage"] == 1], [r for r in runs if r["stage"] == 2]
    as_for_test = cm.plan_runs(cm.load_config(_harness_yaml(tmp_path), ["~learners.doremi"]), tmp_path / "out")
    assert [r["overrides"] for r in stage1] == [r["overrides"] for r in as_for_test if r["stage"] == 1]
    assert len(stage2) == 6 and all(cm.VAL_EVAL_ALL in r["overrides"] for r in stage2)
    assert cm.SPLIT_FILES["val"] == "eval.json"


def test_the_val_override_is_a_config_the_recipe_accepts(embedded_shards):
    """VAL_EVAL_ALL goes through the recipe's config check (a null here once failed every stage-2 run)."""
    from omegaconf import OmegaConf

    from tandem_components.config_validation import validate_pretrain_config

    cfg = OmegaConf.merge(OmegaConf.load(REPO_ROOT / "configs/pretrain/tiny_stage2.yaml"),
                          OmegaConf.from_dotlist([*TINY, f"data.shards={embedded_shards}", "mixture.weights_from=null",
                                                  "mixture.weights=uniform", cm.VAL_EVAL_ALL]))
    validate_pretrain_config(cfg)


@pytest.mark.parametrize(
    "extra, overrides, match",
    [
        ({"sedes": [0]}, [], "unknown key"),
        ({}, ["seeds=[]"], "seeds"),
        ({"recipe": "nope"}, [], "recipes/nope.py"),
        ({"learners": {"fixed": []}}, [], "fixed_baselines"),
        ({"use": "best"}, [], "use"),
        ({"split": "train"}, [], "split"),
        ({}, ["~learners.nope"], "no such key"),
    ],
)
def test_bad_harness_configs_fail_with_one_message(tmp_path, extra, overrides, match):
    with pytest.raises(cm.HarnessError, match=match):
        cm.load_config(_harness_yaml(tmp_path, **extra), overrides)


def test_a_failed_run_stops_with_its_stderr_tail(tmp_path):
    run = {"stage": 1, "method": "tandem", "seed": 0, "dir": tmp_path / "run"}
    (tmp_path / "run").mkdir()
    command = [sys.executable, "-c", "import sys; print('out'); sys.stderr.write('boom: bad key'); sys.exit(3)"]
    with pytest.raises(cm.HarnessError, match="boom: bad key") as e:
        cm.execute(run, command, tmp_path / "logs")
    assert e.value.exit_code == 1 and "exit 3" in str(e.value)
    assert (tmp_path / "logs" / "stage1-tandem-seed0.stdout.log").read_text() == "out\n"


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat (Linux)")
def test_other_work_on_the_cores_is_measured_apart_from_the_run(tmp_path):
    """The machine's busy CPU time counts the run's own (the child's ~0.6 s of spinning) in the same unit
    (seconds, not clock ticks), so what is left over is other processes' share, recorded per run."""
    (tmp_path / "run").mkdir()
    run = {"stage": 1, "method": "tandem", "seed": 0, "dir": tmp_path / "run"}
    spin = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.6: pass')"
    busy, own = cm.machine_busy_cpu_seconds(), cm.children_cpu_seconds()
    with pytest.raises(cm.HarnessError, match="wrote no"):  # a spinner leaves no run outputs
        cm.execute(run, [sys.executable, "-c", spin], tmp_path / "logs")
    own_delta = cm.children_cpu_seconds() - own
    assert own_delta >= 0.6
    assert cm.machine_busy_cpu_seconds() - busy >= 0.9 * own_delta
    assert 0.0 <= run["other_cpu_fraction"] <= 1.0


def test_a_fixed_baseline_the_recipe_rejects_is_infeasible_not_a_crash(tmp_path):
    """Exit 2 with a ``tandem: error:`` line (the recipe's config check) on a fixed baseline's stage-2 run
    means the baseline cannot run in this regime (a UniMax cap below the run's epochs); the same exit on a
    stage-1 run, or a crash of a baseline, still stops the harness."""
    (tmp_path / "run").mkdir()
    reason = "mixture.max_epochs: 4 epochs of the 10 training tokens place at most 40 tokens"
    command = [sys.executable, "-c", f"import sys; sys.stderr.write('noise\\ntandem: error: {reason}\\n'); sys.exit(2)"]
    baseline = {"stage": 2, "method": "unimax:4", "seed": 0, "dir": tmp_path / "run", "weights_from": None}
    with pytest.raises(cm.BaselineRejected) as e:
        cm.execute(baseline, command, tmp_path / "logs")
    assert str(e.value) == reason
    for run, cmd in (({**baseline, "stage": 1}, command), (baseline, [*command[:2], "import sys; sys.exit(1)"])):
        with pytest.raises(cm.HarnessError) as e:
            cm.execute(run, cmd, tmp_path / "logs")
        assert not isinstance(e.value, cm.BaselineRejected) and e.value.exit_code == 1


# ---------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_comparison_then_resume(embedded_shards, tmp_path, capsys):
    """6 tiny recipe runs (tandem stage 1, stage 2 on tandem and uniform, seeds 0 and 1), then a second
    invocation that skips them all. Each run costs ~5 s of imports, so `natural` (the same code path as
    `uniform`, covered by the run-plan test) is left out to keep this near a minute on 2 cores."""
    tiny = [o for o in TINY if not o.startswith("lr_scheduler")] + ["lr_scheduler.warmup_steps=1"]
    common = [*tiny, f"data.shards={embedded_shards}"]
    stage1 = [*common, "max_steps=4", "mixture.episode_len=2", "mixture.probe_steps=1",
              "mixture.probe_seqs_per_domain=2", "mixture.val_batch_size=4"]
    stage2 = [*common, "max_steps=3"]
    config = _harness_yaml(
        tmp_path, learners={"tandem": []}, fixed_baselines=["uniform", "temperature:0.5", "unimax:1e-9"],
        stage1_overrides=stage1,
        stage2_overrides=stage2, use="average",
        notes={"tandem": "a sentence from the harness config.", "doge": "dropped: doge is not compared here."},
    )
    out = tmp_path / "compare"
    assert cm.main(["--config", config, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": done in ") == 8 and "results.md" in printed

    methods, seeds = ["tandem", "uniform", "temperature:0.5"], [0, 1]
    md = (out / "results.md").read_text()
    for name in methods:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 1 + 7 + 3  # method, 7 domains, average, ratio, stage-1 time
        assert all(re.fullmatch(r"\**\d+\.\d+ ± \d+\.\d+\**", c) for c in cells[1:9]), row
        assert re.fullmatch(r"\d+\.\d{3}", cells[9])  # ratio to uniform
        assert (" ± " in cells[10]) if name == "tandem" else cells[10] == "—"  # stage-1 wall time
    assert "## Warnings" not in md  # tandem made mixture updates (2 per run)
    assert "**test** perplexity" in md and "Gap between uniform and the best fixed mixture" in md
    assert "## Rankings" in md and "tandem vs " in md and "two standard errors" in md
    assert "Note on tandem: a sentence from the harness config." in md and "Note on doge" not in md
    # a cap of 1e-9 epochs cannot place the run's tokens: tried once (seed 0), reported, not a crash
    assert printed.count("rejected by the recipe, reported as not run") == 1
    assert "| unimax:1e-9 |" in md and "unimax:1e-9 was not run: the recipe rejected it" in md
    assert "mixture.max_epochs" in md

    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == methods
    for name in methods:
        m = results["methods"][name]
        for i, seed in enumerate(seeds):
            evaluation = json.loads((out / "stage2" / name / f"seed{seed}" / "eval_test.json").read_text())
            assert evaluation["split"] == "test"
            assert m["average_perplexity"][i] == evaluation["mean_perplexity"]
            for d, numbers in evaluation["domains"].items():
                assert m["perplexity"][d][i] == numbers["perplexity"]
    assert results["methods"]["uniform"]["ratio_to_uniform"] == 1.0
    learned, _ = read_mixture_export(out / "stage1" / "tandem" / "seed1" / "mixture.yaml", use="average")
    assert {d: v[1] for d, v in results["methods"]["tandem"]["mixture"].items()} == learned
    walls = [json.loads((out / "stage1" / "tandem" / f"seed{s}" / "summary.json").read_text())["wall_time_s"]
             for s in seeds]
    assert results["methods"]["tandem"]["stage1_wall_time_s"] == walls
    assert (out / "mixtures.png").read_bytes()[:8] == PNG_MAGIC

    # resume: the real CLI, nothing re-run, same numbers
    markers = {p: p.stat().st_mtime_ns for p in out.glob("stage*/*/seed*/compare_run.json")}
    assert len(markers) == 8
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", config, "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("skipped (outputs exist") == 8 and "0 run(s) executed, 8 skipped, 2 rejected" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in markers} == markers
    again = json.loads((out / "results.json").read_text())
    assert again["methods"]["tandem"]["perplexity"] == results["methods"]["tandem"]["perplexity"]


def test_a_run_is_finished_only_with_its_outputs_and_the_same_inputs(tmp_path):
    """Resume check: outputs + a marker recording the same resolved config, code and (stage 2) mixture file."""
    stage1 = tmp_path / "s1" / "mixture.yaml"
    stage1.parent.mkdir()
    stage1.write_text("a: 1\n")
    config = tmp_path / "stage2.yaml"
    config.write_text("max_steps: 10\nmodel:\n  embed_dim: 64\n")
    run = {"stage": 2, "method": "tandem", "seed": 0, "dir": tmp_path / "s2", "weights_from": stage1,
           "config": str(config), "overrides": ["seed=0"]}
    command = ["python", "-m", "torchtune._cli.tune", "run", "recipes/pretrain.py", "--config", str(config), "seed=0"]
    code = cm.code_version_sha256()
    fingerprint = cm._fingerprint(run, command, code)
    assert not cm.is_finished(run, fingerprint)  # nothing there yet
    run["dir"].mkdir()
    for name in cm.RUN_OUTPUTS:
        (run["dir"] / name).write_text("{}")
    assert not cm.is_finished(run, fingerprint)  # outputs without a marker: an interrupted run
    (run["dir"] / cm.MARKER).write_text(json.dumps({"inputs": fingerprint}))
    assert cm.is_finished(run, fingerprint)
    assert cm.is_finished(run, cm._fingerprint(run, ["/other/python", *command[1:]], code))  # interpreter aside
    assert not cm.is_finished(run, cm._fingerprint({**run, "overrides": ["seed=0", "max_steps=9"]}, command, code))
    assert not cm.is_finished(run, cm._fingerprint(run, command, "another code version"))
    config.write_text("max_steps: 10\nmodel:\n  embed_dim: 96\n")  # the stage config was edited
    assert not cm.is_finished(run, cm._fingerprint(run, command, code))
    config.write_text("max_steps: 10\nmodel:\n  embed_dim: 64\n")
    assert cm.is_finished(run, cm._fingerprint(run, command, code))
    stage1.write_text("a: 2\n")  # stage 1 was redone: its stage 2 must be redone too
    assert not cm.is_finished(run, cm._fingerprint(run, command, code))


def test_baseline_names_and_ranking_verdicts():
    assert cm.baseline_overrides("temperature:0.5") == [
        "mixture.weights=temperature", "mixture.temperature=0.5", "mixture.weights_from=null"]
    assert cm.baseline_overrides("unimax:4")[1] == "mixture.max_epochs=4"
    for bad in ("temperature:-1", "unimax:0", "unimax", "uniform:2", "zipf:1"):
        with pytest.raises(cm.HarnessError, match="fixed_baselines"):
            cm.baseline_overrides(bad)
    assert cm.standard_error([1.0, 3.0]) == pytest.approx(1.0)
    assert "beyond two standard errors." in cm.ranking_verdict("a", [10.0, 10.1, 9.9], "b", [12.0, 12.2, 11.9])
    assert "NOT beyond" in cm.ranking_verdict("a", [10.0, 12.0, 9.0], "b", [11.0, 10.5, 10.0])
    assert "one seed" in cm.ranking_verdict("a", [10.0], "b", [11.0])


def test_score_target_ranks_by_the_target_perplexity_with_the_domains_beside_it(tmp_path):
    results = _hand_made_results()
    results["config"]["score"] = "target"
    for m, target in zip(results["methods"].values(), ([40.0, 44.0], [50.0, 52.0])):
        m["target"], m["average_target"] = m["perplexity"], target
    lines = cm.format_results_md(results).splitlines()
    assert any(line.startswith("| tandem | 21.00 ± 1.00 | 30.00 ± 0.00 | **42.00 ± 2.00** |") for line in lines), lines
    assert "target ppl" in cm.ranking_verdict("tandem", [40.0, 44.0], "uniform", [50.0, 52.0], "target")
    cfg = cm.load_config(_harness_yaml(tmp_path), ["score=target", "fixed_baselines=[uniform,similarity:0.5]"])
    assert "no target" in cfg["notes"]["doremi"]  # DoReMi reads no validation data: its row says so
    similarity = [r for r in cm.plan_runs(cfg, tmp_path / "out") if r["method"] == "similarity:0.5"][0]
    assert {"mixture.weights=similarity", "mixture.similarity_temperature=0.5"} <= set(similarity["overrides"])


def test_recipe_overrides_may_delete_keys_as_the_tune_cli_does():
    """``~key`` in a stage's overrides (e.g. a category made an SFT target loses its train split): the run's
    resume hash sees the key deleted, and a key that does not exist is refused."""
    config = "configs/sft/tiny_stage1.yaml"
    plain = cm.resolved_config_sha256(config, ["max_steps=5"])
    deleted = cm.resolved_config_sha256(config, ["max_steps=5", "~data.categories.chat.train"])
    assert deleted != plain
    assert deleted == cm.resolved_config_sha256(config, ["~data.categories.chat.train", "max_steps=5"])
    with pytest.raises(cm.HarnessError, match="~data.categories.poetry: no such key"):
        cm.resolved_config_sha256(config, ["~data.categories.poetry"])
