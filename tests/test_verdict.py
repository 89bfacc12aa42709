"""The main job's verdict: per-domain test perplexity side by side, the ratio, a chart, one-line errors."""

import json

from tandem_components import verdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(tmp_path, name, ppl, split="test", target=None):
    run = tmp_path / name
    run.mkdir()
    domains = {d: {"loss": 0.0, "perplexity": p, "tokens": 10} for d, p in ppl.items()}
    doc = {"step": 1, "split": split, "mean_loss": 0.0, "mean_perplexity": sum(ppl.values()) / len(ppl), "domains": domains}
    if target is not None:
        doc["target"] = {"weights": {"t": 1.0}, "loss": 0.0, "perplexity": target}
    (run / "eval_test.json").write_text(json.dumps(doc))
    return run


def test_verdict_prints_the_ratio_and_writes_table_and_chart(tmp_path, capsys):
    learned = _run(tmp_path, "learned", {"a": 10.0, "b": 30.0})
    baseline = _run(tmp_path, "baseline", {"a": 12.0, "b": 28.0})
    assert verdict.main([str(learned), str(baseline), "--out", str(tmp_path / "v")]) == 0
    printed = capsys.readouterr().out
    assert "| a | 10.00 | 12.00 | 0.833 |" in printed and "| **mean** | **20.00** | **20.00** | **1.000** |" in printed
    assert "ratio 1.000" in printed and "not a ranking" in printed  # no measured spread: no word of a gain
    assert (tmp_path / "v" / "verdict.png").read_bytes()[:8] == PNG_MAGIC
    better = _run(tmp_path, "better", {"a": 9.0, "b": 27.0})  # 10% lower
    spread = ["--spread-source", "RESULTS 6"]
    assert verdict.main([str(better), str(baseline), "--out", str(tmp_path / "w"), "--seed-spread", "0.03", *spread]) == 0
    printed = capsys.readouterr().out
    assert "18.00 vs 20.00" in printed and "BETTER beyond seed noise" in printed and "(RESULTS 6)" in printed
    # the same 10% inside a regime whose seeds move a mixture by 4% (bound 2 sqrt 2 x 4% = 11.3%)
    assert verdict.main([str(better), str(baseline), "--out", str(tmp_path / "w"), "--seed-spread", "0.04", *spread]) == 0
    printed = capsys.readouterr().out
    assert "Within seed noise" in printed and "11.3%" in printed and "BETTER" not in printed
    worse = _run(tmp_path, "worse", {"a": 13.0, "b": 33.0})
    assert verdict.main([str(worse), str(baseline), "--out", str(tmp_path / "x"), "--seed-spread", "0.01"]) == 0
    assert "WORSE beyond seed noise" in capsys.readouterr().out
    assert verdict.main([str(worse), str(baseline), "--seed-spread", "-1"]) == 2


def test_with_a_target_the_verdict_judges_the_target_perplexity(tmp_path, capsys):
    learned = _run(tmp_path, "learned", {"a": 10.0, "t": 40.0}, target=38.0)
    baseline = _run(tmp_path, "baseline", {"a": 8.0, "t": 50.0}, target=47.5)
    assert verdict.main([str(learned), str(baseline), "--out", str(tmp_path / "v"), "--seed-spread", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "| **target** (t) | **38.00** | **47.50** | **0.800** |" in printed and "| mean | 25.00 | 29.00 | 0.862 |" in printed
    assert "target test perplexity 38.00 vs 47.50" in printed and "BETTER beyond seed noise" in printed
    other = _run(tmp_path, "other", {"a": 8.0, "t": 50.0})  # scores no target
    assert verdict.main([str(learned), str(other)]) == 2
    assert "different targets" in capsys.readouterr().err


def test_verdict_refuses_a_missing_or_non_test_evaluation(tmp_path, capsys):
    val = _run(tmp_path, "val", {"a": 1.0}, split="val")
    assert verdict.main([str(val), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("verdict: error:") and "eval_test.json" in err and len(err.splitlines()) == 1
