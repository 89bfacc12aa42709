"""recipes/sft.py run for real (in-process) on the embedded SFT set with a tiny model: stage 1 (TANDEM over
task categories), stage 2 (fixed, on the learned α), and bad input through the recipe (exit 2, one line)."""

from __future__ import annotations

import gzip
import json
import math

import pytest
from omegaconf import OmegaConf

from tandem_components.mixture.export import read_mixture_export
from tests.conftest import REPO_ROOT as REPO_ROOT_FOR_DATA
from tests.recipe_runner import run_in_process, run_in_process_for_fixture
from tests.recipe_runner import sft_tiny as tiny

STAGE1 = "configs/sft/tiny_stage1.yaml"
STAGE2 = "configs/sft/tiny_stage2.yaml"
CATEGORIES = ["math", "summarize", "define", "docstring", "chat"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stage1(fixture_tokenizer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_stage1")
    code = run_in_process_for_fixture(
        "sft", STAGE1, *tiny(fixture_tokenizer_path), f"output_dir={out}", "max_steps=10",
        "mixture.episode_len=5", "mixture.probe_steps=2", "mixture.probe_seqs_per_domain=2",
        "mixture.val_batch_size=4",
    )
    assert code == 0
    return out


def test_stage1_learns_a_mixture_over_categories_and_writes_the_tables(stage1):
    weights, doc = read_mixture_export(stage1 / "mixture.yaml", use="last")
    assert list(weights) == CATEGORIES and math.isclose(sum(weights.values()), 1.0, abs_tol=1e-9)
    assert doc["method"] == "tandem" and doc["provenance"]["num_updates"] == 2
    assert doc["provenance"]["tokenizer_sha256"]
    rows = [json.loads(line) for line in (stage1 / "mixture_trajectory.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 7]
    assert (stage1 / "mixture_trajectory.png").read_bytes()[:8] == PNG_MAGIC
    table = json.loads((stage1 / "sft_eval.json").read_text())
    assert [r["category"] for r in table] == CATEGORIES
    for r in table:
        assert math.isfinite(r["test_loss"]) and r["test_ppl"] > 1 and 0 <= r["value"] <= 1 and r["epochs"] > 0
        assert r["metric"] == ("exact_match" if r["category"] == "math" else "rouge_l")
    gens = [json.loads(line) for line in (stage1 / "generations.jsonl").read_text().splitlines()]
    assert [g["category"] for g in gens] == CATEGORIES
    summary = json.loads((stage1 / "summary.json").read_text())
    assert summary["sft"] == table


def test_stage2_fine_tunes_on_the_learned_mixture(stage1, fixture_tokenizer_path, tmp_path, monkeypatch):
    out = tmp_path / "stage2"
    assert 0 == run_in_process(
        "sft", STAGE2, *tiny(fixture_tokenizer_path), f"output_dir={out}", "max_steps=4",
        f"mixture.weights_from={stage1 / 'mixture.yaml'}", "data.packing=true", "eval.generate_per_category=0",
        monkeypatch=monkeypatch,
    )
    used, doc = read_mixture_export(out / "mixture.yaml", use="last")
    learned, _ = read_mixture_export(stage1 / "mixture.yaml", use="average")
    assert doc["method"] == "fixed" and used == learned


def _write(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("case", ["empty_category", "missing_response", "mismatched_checkpoint", "unknown_key",
                                  "subset_too_large", "target_with_train", "weights_name_a_target"])
def test_bad_input_exits_2_with_one_line(case, fixture_tokenizer_path, tmp_path, monkeypatch, capsys):
    overrides = [*tiny(fixture_tokenizer_path), f"output_dir={tmp_path / 'out'}", "max_steps=2"]
    if case == "empty_category":
        _write(tmp_path / "empty.jsonl.gz", [])
        overrides.append(f"data.categories.chat.train={tmp_path / 'empty.jsonl.gz'}")
        expected = "chat/train"
        message = "no examples"
    elif case == "missing_response":
        _write(tmp_path / "bad.jsonl.gz", [{"prompt": "2+2?", "response": "4"}, {"prompt": "3+3?", "answer": "6"}])
        overrides.append(f"data.categories.math.val={tmp_path / 'bad.jsonl.gz'}")
        expected = "math/val"
        message = "line 2: record has no response field 'response'"
    elif case == "mismatched_checkpoint":
        from tandem_components.models import decoder
        from tandem_components.models.checkpoint import save_model_weights

        cfg = dict(vocab_size=1024, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=128)
        path = tmp_path / "model" / "model.safetensors"
        save_model_weights(decoder(**cfg).state_dict(), path,
                           OmegaConf.create({"_component_": "tandem_components.models.decoder", **cfg}))
        overrides.append(f"pretrained_weights={path}")  # the config says embed_dim=64
        expected = str(path)
        message = "weights do not match the model config"
    elif case == "target_with_train":
        overrides.append("data.categories.chat.target=true")  # chat still names its train split
        expected = "data.categories.chat"
        message = "a target (target: true) with val and test only"
    elif case == "weights_name_a_target":
        overrides += ["~data.categories.chat.train", "~data.categories.chat.train_examples",
                      "data.categories.chat.target=true", "mixture.weights={math: 0.5, chat: 0.5}"]
        expected = "mixture.weights"
        message = "['chat'] is a target category"
    elif case == "subset_too_large":
        overrides.append("data.categories.chat.train_examples=5000")
        expected = "data.categories.chat.train_examples"
        message = "5000 is more than the 837 training examples"
    else:
        overrides.append("data.shards=data/shards/embedded")  # a pretraining key, not an SFT one
        expected = "data.shards"
        message = "unknown key"
    assert run_in_process("sft", STAGE1, *overrides, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tandem: error: ") and expected in err[0] and message in err[0], err
    assert not (tmp_path / "out").exists()  # nothing written


def test_resume_from_a_checkpoint_is_bit_identical(fixture_tokenizer_path, tmp_path, monkeypatch):
    """TANDEM over categories, checkpoint at step 3 of 6; a fresh run resumed from it ends bit-identical."""
    import shutil

    from safetensors.torch import load_file

    run = [*tiny(fixture_tokenizer_path), "max_steps=6", "mixture.episode_len=2", "mixture.probe_steps=1",
           "mixture.probe_seqs_per_domain=1", "mixture.val_batch_size=2", "eval.generate_per_category=0",
           "checkpoint.every_n_steps=3"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_in_process("sft", STAGE1, *run, f"output_dir={whole}", monkeypatch=monkeypatch) == 0
    shutil.copytree(whole / "checkpoints", resumed / "checkpoints")  # as if the run had died after step 3 ...
    shutil.copy(whole / "mixture_trajectory.jsonl", resumed)  # ... having written rows past it (dropped on resume)
    assert run_in_process("sft", STAGE1, *run, f"output_dir={resumed}", "resume=true", monkeypatch=monkeypatch) == 0
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (whole, resumed))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (whole / "mixture_trajectory.jsonl").read_text() == (resumed / "mixture_trajectory.jsonl").read_text()


@pytest.mark.parametrize("learner", ["doremi", "doge"])
def test_baseline_learners_run_over_categories(learner, fixture_tokenizer_path, tmp_path, monkeypatch):
    out = tmp_path / learner
    extra = ["mixture.reference_steps=2", "mixture.update=exponentiated_gradient"] if learner == "doremi" else []
    assert 0 == run_in_process(
        "sft", STAGE1, *tiny(fixture_tokenizer_path), f"output_dir={out}", "max_steps=4", f"mixture.learner={learner}",
        "mixture.episode_len=2", "mixture.probe_steps=1", "mixture.probe_seqs_per_domain=1", "mixture.val_batch_size=2",
        "eval.generate_per_category=0", *extra, monkeypatch=monkeypatch,
    )
    weights, doc = read_mixture_export(out / "mixture.yaml", use="last")
    assert doc["method"] == learner and list(weights) == CATEGORIES and doc["provenance"]["num_updates"] == 2


def _sft_recipe(tokenizer, out, *overrides):
    """The real SFT recipe object, set up, with ``chat`` a target category (val and test only)."""
    import runpy

    from tests.conftest import REPO_ROOT

    recipe_cls = runpy.run_path(str(REPO_ROOT / "recipes" / "sft.py"), run_name="recipes.sft")["SFTRecipe"]
    cfg = OmegaConf.merge(OmegaConf.load(REPO_ROOT / STAGE1),
                          OmegaConf.from_dotlist([*tiny(tokenizer), f"output_dir={out}", *overrides]))
    chat = cfg.data.categories.chat
    del chat["train"], chat["train_examples"]
    chat.target = True
    recipe = recipe_cls(cfg)
    recipe.setup()
    return recipe


@pytest.mark.parametrize("learner", ["tandem", "doge"])
def test_a_target_category_is_read_by_the_learner_and_scored_never_trained_on(learner, fixture_tokenizer_path,
                                                                               tmp_path, monkeypatch):
    """α covers the four trained categories; every validation batch (TANDEM's reference, DoGE's gradient) is
    the target's; the loader never draws it; the target is scored on test, with its task metric."""
    monkeypatch.chdir(REPO_ROOT_FOR_DATA)
    out = tmp_path / "out"
    recipe = _sft_recipe(fixture_tokenizer_path, out, f"mixture.learner={learner}", "max_steps=6",
                         "mixture.episode_len=3", "mixture.probe_steps=2", "mixture.probe_seqs_per_domain=2",
                         "mixture.val_batch_size=4")
    assert recipe.domains == ["math", "summarize", "define", "docstring"] and recipe.targets == ["chat"]
    chat = recipe.eval_domains.index("chat")
    assert all(bool((next(iter(recipe.val_loader)).domain_ids == chat).all()) for _ in range(3))
    assert all(int(next(iter(recipe.train_loader)).domain_ids.max()) < len(recipe.domains) for _ in range(5))
    if learner == "doge":
        recipe.val_iter = iter(recipe.val_loader)
        assert bool((recipe.estimator.val_batches().domain_ids == chat).all())
    recipe.train()
    recipe.cleanup()
    assert len(recipe.mixture.last()) == 4 and list(OmegaConf.load(out / "mixture.yaml").domains) == recipe.domains
    rows = {r["category"]: r for r in json.loads((out / "sft_eval.json").read_text())}
    assert rows["chat"]["role"] == "target" and rows["chat"]["train_examples"] == 0 and rows["chat"]["metric"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["test_loss"] == pytest.approx(rows["chat"]["test_loss"], abs=1e-12)

