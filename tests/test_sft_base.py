"""SFT from a pretrained start over categories of unequal size (issue 12), for real at test size.

The base is what ``make sft-base`` builds: the pretraining recipe with ``configs/pretrain/sft_base.yaml`` on
the embedded corpus (here: the fixture tokenizer and the test-size model, a few dozen steps). The SFT recipe
is set up on its weights and on none, and evaluated before any SFT step.
"""

from __future__ import annotations

import logging
import runpy

import pytest
import yaml
from omegaconf import OmegaConf

from tandem_components.data.sft_data import load_category, subset_examples
from tests.conftest import REPO_ROOT
from tests.recipe_runner import run_in_process, run_in_process_for_fixture, sft_tiny

BASE = "configs/pretrain/sft_base.yaml"
STAGE1 = "configs/sft/tiny_stage1.yaml"
STAGE2 = "configs/sft/tiny_stage2.yaml"
#: the test-size model of ``sft_tiny``, as pretraining keys
MODEL = ["model.vocab_size=1024", "model.embed_dim=64", "model.num_layers=1", "model.num_heads=4",
         "model.num_kv_heads=2", "model.max_seq_len=128"]
SUBSET = {"math": 40, "summarize": 4, "define": 9, "docstring": 20, "chat": 4}  # 10:1


@pytest.fixture(scope="module")
def base_weights(embedded_shards, tmp_path_factory):
    """The base, pretrained by the shipped config at test size (80 steps of 8 x 64 tokens)."""
    out = tmp_path_factory.mktemp("sft_base")
    code = run_in_process_for_fixture(
        "pretrain", BASE, *MODEL, f"data.shards={embedded_shards}", "data.seq_len=64", "data.batch_size=8",
        "max_steps=80", "lr_scheduler.warmup_steps=5", "eval.every_n_steps=0", "eval.windows_per_domain=4",
        f"output_dir={out}",
    )
    assert code == 0
    return out / "model" / "model.safetensors"


def _sft_recipe(tokenizer, tmp_path, *overrides):
    """The SFT stage-2 recipe, set up (data, models, loaders) but not trained."""
    recipe_cls = runpy.run_path(str(REPO_ROOT / "recipes" / "sft.py"), run_name="recipes.sft")["SFTRecipe"]
    cfg = OmegaConf.merge(OmegaConf.load(REPO_ROOT / STAGE2), OmegaConf.from_dotlist([
        *sft_tiny(tokenizer), "mixture.weights_from=null", "mixture.weights=uniform", "eval.examples_per_category=32",
        f"output_dir={tmp_path}", *overrides]))
    for key in ("train", "val", "test"):  # the config's data paths are relative to the repo root
        for name in cfg.data.categories:
            cfg.data.categories[name][key] = str(REPO_ROOT / cfg.data.categories[name][key])
    recipe = recipe_cls(cfg)
    recipe.setup()
    return recipe


def test_the_base_loads_and_starts_sft_well_below_a_model_from_scratch(base_weights, fixture_tokenizer_path, tmp_path):
    pretrained = _sft_recipe(fixture_tokenizer_path, tmp_path / "pretrained", f"pretrained_weights={base_weights}")
    scratch = _sft_recipe(fixture_tokenizer_path, tmp_path / "scratch")
    before_pretrained, before_scratch = pretrained._evaluate(0), scratch._evaluate(0)  # val, before any SFT step
    # 80 pretraining steps take the response tokens from ~ln(1024) = 6.9 nats to below 6: a usable start
    assert before_pretrained.mean_loss < before_scratch.mean_loss - 1.0, (before_pretrained.mean_loss,
                                                                          before_scratch.mean_loss)
    for name in pretrained.domains:  # every category, not just on average
        assert before_pretrained.per_domain[name].loss < before_scratch.per_domain[name].loss - 0.5


def test_category_subsets_are_deterministic_and_leave_val_and_test_whole(fixture_tokenizer_path, tmp_path):
    sizes = [f"data.categories.{name}.train_examples={n}" for name, n in SUBSET.items()]
    a = _sft_recipe(fixture_tokenizer_path, tmp_path / "a", *sizes)
    b = _sft_recipe(fixture_tokenizer_path, tmp_path / "b", *sizes, "seed=7")  # another seed: the same subset
    cfg = OmegaConf.load(REPO_ROOT / STAGE2).data.categories
    for m, name in enumerate(a.domains):
        assert len(a.examples["train"][m]) == SUBSET[name]
        assert [e.ids.tolist() for e in a.examples["train"][m]] == [e.ids.tolist() for e in b.examples["train"][m]]
        for split in ("val", "test"):
            whole = load_category(name, split, str(REPO_ROOT / cfg[name][split]))
            assert len(a.examples[split][m]) == len(whole) == 100
    examples = load_category("math", "train", str(REPO_ROOT / cfg["math"]["train"]))
    subset = subset_examples("math", examples, 40)
    assert subset == subset_examples("math", examples, 40) and len(set(subset)) == 40
    assert subset != examples[:40]  # a shuffled subset, not the head of the file
    assert subset_examples("math", examples, None) == examples
    assert max(SUBSET.values()) >= 10 * min(SUBSET.values())


def test_the_shipped_configs_fine_tune_the_base_with_a_10_to_1_spread():
    """The tiny SFT configs start from what make sft-base writes, with its architecture and tokenizer."""
    base = OmegaConf.load(REPO_ROOT / BASE)
    for path in (STAGE1, STAGE2):
        sft = OmegaConf.load(REPO_ROOT / path)
        assert sft.pretrained_weights == f"{base.output_dir}/model/model.safetensors"
        assert OmegaConf.to_container(sft.model) == OmegaConf.to_container(base.model)
        assert sft.tokenizer.path == f"{base.data.shards}/tokenizer.json"
        sizes = [c.train_examples for c in sft.data.categories.values()]
        assert max(sizes) >= 10 * min(sizes)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"--config {BASE}" in makefile and "sft-base:" in makefile


def test_from_scratch_only_when_said_with_a_notice(fixture_tokenizer_path, tmp_path, monkeypatch, caplog, capsys):
    common = [*sft_tiny(fixture_tokenizer_path), "max_steps=2", "eval.generate_per_category=0"]
    with caplog.at_level(logging.WARNING):
        assert run_in_process("sft", STAGE1, *common, f"output_dir={tmp_path / 'ok'}", monkeypatch=monkeypatch) == 0
    notices = [r.getMessage() for r in caplog.records if "from scratch" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("pretrained_weights: null"), notices  # once, not per twin

    doc = yaml.safe_load((REPO_ROOT / STAGE1).read_text())
    del doc["pretrained_weights"]  # a config that does not say where the model comes from
    config = tmp_path / "no_start.yaml"
    config.write_text(yaml.safe_dump(doc))
    without = [o for o in common if not o.startswith("pretrained_weights=")]
    for cfg, extra, message in [(config, [], "pretrained_weights: missing"),
                                (STAGE1, ["pretrained_weights=nowhere/model.safetensors"], "not found")]:
        capsys.readouterr()
        assert run_in_process("sft", cfg, *without, *extra, f"output_dir={tmp_path / 'bad'}", monkeypatch=monkeypatch) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "make sft-base" in err[0], err
        assert not (tmp_path / "bad").exists()


def test_unimax_in_sft_counts_examples(fixture_tokenizer_path, tmp_path):
    """N = 200 steps x 4 examples = 800 draws over 300/75/50/150/30 examples, at most 2 epochs each: chat,
    define and summarize are capped (60, 100, 150), math and docstring share the other 490."""
    recipe = _sft_recipe(fixture_tokenizer_path, tmp_path, "mixture.weights=unimax", "mixture.max_epochs=2")
    assert recipe.domains == ["math", "summarize", "define", "docstring", "chat"] and recipe.run_tokens == 800
    expected = [245 / 800, 150 / 800, 100 / 800, 245 / 800, 60 / 800]
    assert recipe.mixture.weights.tolist() == pytest.approx(expected, abs=1e-12)
