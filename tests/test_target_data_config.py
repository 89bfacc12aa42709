"""tools/target_data_config.py: one domain of a data config made a validation-only target, the rest unchanged."""

from __future__ import annotations

import runpy

import yaml

from tests.conftest import REPO_ROOT

TOOL = runpy.run_path(str(REPO_ROOT / "tools" / "target_data_config.py"))


def test_the_named_domain_becomes_a_target_and_the_others_stay_sources(tmp_path, capsys):
    out = tmp_path / "build" / "target.yaml"
    assert TOOL["main"](["--config", str(REPO_ROOT / "configs" / "data" / "embedded.yaml"), "--target", "legal",
                         "--out", str(out), "--output-dir", "data/shards/x"]) == 0
    original = yaml.safe_load((REPO_ROOT / "configs" / "data" / "embedded.yaml").read_text())
    config = yaml.safe_load(out.read_text())
    assert config["output_dir"] == "data/shards/x" and config["tokenizer"] == original["tokenizer"]
    by_name = {d["name"]: d for d in config["domains"]}
    assert by_name["legal"] == {"name": "legal", "val": "data/embedded/legal/val.jsonl.gz", "target": True}
    assert [d for d in config["domains"] if d["name"] != "legal"] == [d for d in original["domains"] if d["name"] != "legal"]
    assert TOOL["main"](["--config", str(REPO_ROOT / "configs" / "data" / "embedded.yaml"), "--target", "poetry",
                         "--out", str(tmp_path / "no.yaml"), "--output-dir", "x"]) == 2
    err = capsys.readouterr().err
    assert "--target" in err and "'poetry'" in err and not (tmp_path / "no.yaml").exists()
