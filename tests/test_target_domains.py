"""Target domains (val/test only) through the real pretraining recipe: α covers the training domains alone
and the loader never draws a target; the validation batches TANDEM's reference and DoGE's gradient read
come from the target; the target is evaluated on val and test; bad input is refused in one line.

The corpus: the small real-text fixture corpus (code, legal, tech_docs) with legal as a target domain,
and ``mirror``, legal's training text as a source under another name; prepared by the real prepare_data
recipe with the fixture tokenizer."""

from __future__ import annotations

import json
import math
import runpy

import pytest
import torch
from omegaconf import OmegaConf

from tandem_components.data.shards import ShardedCorpus
from tandem_components.training.evaluation import DomainEval, EvalResult
from tests.conftest import REPO_ROOT
from tests.recipe_runner import TINY, pretrain_recipe, run_in_process

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
TARGET = "legal"


@pytest.fixture(scope="module")
def target_shards(fixture_corpus, fixture_tokenizer_path, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("target_corpus") / "shards"
    domains = [{"name": d, "train": str(f["train"]), "val": str(f["val"])} for d, f in fixture_corpus.items() if d != TARGET]
    domains.append({"name": "mirror", "train": str(fixture_corpus[TARGET]["train"]), "val": str(fixture_corpus[TARGET]["val"])})
    # the fixture's legal val holds 3 documents: its train file stands in as the target's given test split
    domains.append({"name": TARGET, "val": str(fixture_corpus[TARGET]["val"]), "test": str(fixture_corpus[TARGET]["train"]),
                    "target": True})
    cfg = OmegaConf.create({"output_dir": str(out), "dtype": "uint16", "tokenizer": {"path": str(fixture_tokenizer_path)},
                            "domains": domains})
    runpy.run_path(str(REPO_ROOT / "recipes" / "prepare_data.py"))["PrepareDataRecipe"](cfg).run()
    return str(out)


def _recipe(shards, out, *overrides):
    return pretrain_recipe(STAGE1, shards, out, *overrides)


@pytest.mark.parametrize("learner", ["tandem", "doge"])
def test_alpha_covers_the_sources_and_the_validation_batches_come_from_the_target(target_shards, tmp_path, learner):
    recipe = _recipe(target_shards, tmp_path / "out", f"mixture.learner={learner}", "max_steps=10",
                     "mixture.episode_len=5", "mixture.probe_steps=2")
    corpus = ShardedCorpus.open(target_shards)
    assert recipe.domains == corpus.domains and TARGET not in recipe.domains and recipe.targets == [TARGET]
    assert recipe.eval_domains == [*corpus.domains, TARGET]
    target_id = recipe.eval_domains.index(TARGET)
    val_batches = [next(iter(recipe.val_loader)) for _ in range(3)]
    assert all(bool((b.domain_ids == target_id).all()) for b in val_batches)  # the default target: the target domain
    drawn = [next(iter(recipe.train_loader)).domain_ids for _ in range(5)]
    assert all(int(ids.max()) < len(recipe.domains) for ids in drawn)
    if learner == "doge":  # its validation gradient reads what its val_batches callable returns
        recipe.val_iter = iter(recipe.val_loader)
        assert bool((recipe.estimator.val_batches().domain_ids == target_id).all())
    recipe.train()
    recipe.cleanup()
    out = tmp_path / "out"
    assert len(recipe.mixture.last()) == len(recipe.domains)
    assert len(recipe.train_loader.tokens_drawn) == len(recipe.domains)
    export = OmegaConf.load(out / "mixture.yaml")
    assert list(export.domains) == recipe.domains
    for name in ("eval.json", "eval_test.json"):  # the target is scored on val and on test, first
        doc = json.loads((out / name).read_text())
        assert TARGET in doc["domains"] and doc["target"]["weights"] == {TARGET: 1.0}
        assert doc["target"]["loss"] == pytest.approx(doc["domains"][TARGET]["loss"], abs=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["test_loss"] == pytest.approx(doc["domains"][TARGET]["loss"], abs=1e-12)


def test_target_weights_may_name_sources_and_targets(target_shards, tmp_path):
    recipe = _recipe(target_shards, tmp_path / "out", "max_steps=5", f"mixture.target_weights={{code: 0.5, {TARGET}: 0.5}}")
    ids = torch.cat([next(iter(recipe.val_loader)).domain_ids for _ in range(20)])
    names = {recipe.eval_domains[i] for i in ids.tolist()}
    assert names == {"code", TARGET}
    assert recipe.scored_target() == {"code": 0.5, TARGET: 0.5}
    recipe.cleanup()


def test_the_target_score_is_the_weighted_mean_loss_and_leads_the_table():
    result = EvalResult(step=1, split="test", per_domain={"a": DomainEval(2.0, 10), "b": DomainEval(4.0, 10)},
                        target={"a": 0.25, "b": 0.75})
    assert result.target_loss == pytest.approx(3.5) and result.target_perplexity == pytest.approx(math.exp(3.5))
    assert result.format_table().splitlines()[0].startswith("TARGET (a 0.25, b 0.75): test loss 3.5000")
    assert EvalResult(step=1, per_domain=result.per_domain).target_loss is None


def test_similarity_weights_lead_with_the_source_closest_to_the_target(target_shards, tmp_path, monkeypatch):
    """A stage-2 run on ``mixture.weights: similarity``: the target's own text (``mirror``) gets the most
    weight, and the weights, their τ and the KLs are in summary.json."""
    out = tmp_path / "out"
    assert 0 == run_in_process("pretrain", STAGE1, *TINY, f"data.shards={target_shards}", f"output_dir={out}",
                               "max_steps=2", "mixture.learner=fixed", "mixture.weights=similarity",
                               "mixture.similarity_temperature=0.5", monkeypatch=monkeypatch)
    similarity = json.loads((out / "summary.json").read_text())["similarity"]
    kl = similarity["kl_nats"]
    assert similarity["temperature"] == 0.5 and similarity["target"] == {TARGET: 1.0}
    assert min(kl, key=kl.get) == "mirror"
    drawn = json.loads((out / "summary.json").read_text())["final_alpha"]
    assert max(drawn, key=drawn.get) == "mirror"


@pytest.mark.parametrize("overrides, expected", [
    ([f"mixture.weights={{code: 0.4, tech_docs: 0.3, {TARGET}: 0.3}}"], ["mixture.weights", f"['{TARGET}']", "target domain"]),
    (["mixture.target_weights={code: 0.0}"], ["mixture.target_weights", "sum to 1"]),
    # a fixed mixture reads target_weights too (the tables' target score): refused before training
    (["mixture.learner=fixed", "mixture.target_weights={poetry: 1.0}"], ["mixture.target_weights", "'poetry'"]),
])
def test_bad_target_input_fails_in_one_line_writing_nothing(target_shards, tmp_path, monkeypatch, capsys, overrides, expected):
    out = tmp_path / "out"
    assert 2 == run_in_process("pretrain", STAGE1, *TINY, f"data.shards={target_shards}", f"output_dir={out}",
                               "max_steps=5", *overrides, monkeypatch=monkeypatch)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tandem: error:")]
    assert len(err) == 1 and all(part in err[0] for part in expected), err
    assert not out.exists()


def test_the_repetition_price_is_charged_where_l_val_reads_a_target(target_shards, tmp_path):
    """mixture.repetition_price λ: each update's recorded charge is λ max(α_m N / n_m - 1, 0) at the α it
    stepped from (the previous row's), and some source is charged (the fixture's sources are repeated);
    the provenance records λ. With L_val on a source alone (no validation-only target read) nothing is
    charged: every source is then scored itself (docs/METHOD.md "Pricing repetition")."""
    price, out = 0.05, tmp_path / "priced"
    recipe = _recipe(target_shards, out, f"mixture.repetition_price={price}", "max_steps=200", "data.batch_size=16",
                     "mixture.episode_len=20", "mixture.probe_steps=2")  # 205k tokens drawn: 44k-132k per source
    assert recipe.mixture.repetition_price == price
    recipe.train()
    recipe.cleanup()
    tokens = dict(zip(recipe.domains, recipe.natural_tokens))
    rows = [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]
    assert len(rows) >= 3
    for before, row in zip(rows, rows[1:]):
        expected = {d: price * max(before["alpha"][d] * recipe.run_tokens / tokens[d] - 1.0, 0.0) for d in tokens}
        assert row["repetition"] == pytest.approx(expected, abs=1e-9)
    assert any(v > 0 for row in rows for v in row["repetition"].values())
    assert OmegaConf.load(out / "mixture.yaml").provenance.hyperparameters.repetition_price == price
    sources_only = _recipe(target_shards, tmp_path / "sources", f"mixture.repetition_price={price}", "max_steps=5",
                           "mixture.target_weights={code: 1.0}")
    assert sources_only.mixture.repetition_price == 0.0
    sources_only.cleanup()
