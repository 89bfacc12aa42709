"""recipes/pretrain.py run for real on the embedded corpus with tiny models: stage 1, stage 2, and two
behaviour checks on real data (a random-token domain is down-weighted; a target domain is up-weighted)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tandem_components.data.shards import ShardedCorpus
from tandem_components.mixture.export import read_mixture_export, weights_vector
from tandem_components.models import decoder
from tandem_components.models.hf_checkpoint import load_hf_weights
from tests.corpus_variants import derive_corpus, uniform_random_tokens
from tests.recipe_runner import TINY, run_in_process, tune_run

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
STAGE2 = "configs/pretrain/tiny_stage2.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _trajectory(out):
    return [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stage1_run(embedded_shards, tmp_path_factory):
    """Stage 1 through `tune run` (the user's entry point): 30 steps, E=5, K=2 -> 6 α updates."""
    out = tmp_path_factory.mktemp("stage1")
    proc = tune_run(
        "pretrain", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}", "max_steps=30",
        "mixture.episode_len=5", "mixture.probe_steps=2", "mixture.probe_seqs_per_domain=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_stage1_writes_a_valid_export_trajectory_plot_and_eval(stage1_run, embedded_shards):
    out, proc = stage1_run
    corpus = ShardedCorpus.open(embedded_shards)
    weights, doc = read_mixture_export(out / "mixture.yaml", use="average")
    alpha = weights_vector(weights, corpus.domains, "export")  # covers every domain, sums to 1
    assert doc["method"] == "tandem" and doc["provenance"]["num_updates"] == 6
    assert doc["provenance"]["tokenizer_sha256"] == corpus.tokenizer_sha256
    assert doc["provenance"]["corpus_index_sha256"] == corpus.index_sha256
    assert not torch.allclose(alpha, torch.full_like(alpha, 1 / len(alpha)))  # α moved

    rows = _trajectory(out)
    assert [r["update"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows] == [2, 7, 12, 17, 22, 27]  # Δ after K=2 steps of each episode
    for row in rows:
        assert list(row["alpha"]) == corpus.domains
        assert math.isclose(sum(row["alpha"].values()), 1.0, abs_tol=1e-9)
        assert all(math.isfinite(v) for v in row["delta"].values())
    last, _ = read_mixture_export(out / "mixture.yaml", use="last")
    assert last == rows[-1]["alpha"]

    assert (out / "mixture_trajectory.png").read_bytes()[:8] == PNG_MAGIC
    evaluation = json.loads((out / "eval.json").read_text())
    assert set(evaluation["domains"]) == set(corpus.domains)
    assert all(math.isfinite(d["loss"]) and d["perplexity"] > 1 for d in evaluation["domains"].values())
    assert list((out / "logs").iterdir())  # the metric logger wrote something
    assert "Per-domain validation" in proc.stdout and "mixture export" in proc.stdout


def test_stage2_trains_a_larger_model_on_the_exported_mixture(stage1_run, embedded_shards, tmp_path, monkeypatch):
    stage1_out, _ = stage1_run
    out = tmp_path / "stage2"
    assert 0 == run_in_process(
        "pretrain", STAGE2, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}", "max_steps=6",
        f"mixture.weights_from={stage1_out / 'mixture.yaml'}", "mixture.use=average", "model.num_layers=2",
        monkeypatch=monkeypatch,
    )
    used, doc = read_mixture_export(out / "mixture.yaml", use="last")
    learned, _ = read_mixture_export(stage1_out / "mixture.yaml", use="average")
    assert doc["method"] == "fixed" and used == learned  # stage 2 trained on exactly the learned α
    # a fixed mixture never updates: no trajectory file, no plot of a constant
    assert not (out / "mixture_trajectory.jsonl").exists() and not (out / "mixture_trajectory.png").exists()
    assert json.loads((out / "eval.json").read_text())["mean_perplexity"] > 1
    # the saved weights load back into the model the config describes
    model_cfg = yaml.safe_load((out / "model" / "model_config.yaml").read_text())
    model = decoder(**{k: v for k, v in model_cfg.items() if k != "_component_"})
    model.load_state_dict(load_file(out / "model" / "model.safetensors"))
    assert model_cfg["num_layers"] == 2
    # ... and so does the HF-format export, through torchtune's FullModelHFCheckpointer
    from_hf = load_hf_weights(decoder(**{k: v for k, v in model_cfg.items() if k != "_component_"}), out / "model" / "hf")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), from_hf.state_dict().values()))


def _run_short_tandem(shards, out, monkeypatch, *extra):
    assert 0 == run_in_process(
        "pretrain", STAGE1, *TINY, f"data.shards={shards}", f"output_dir={out}", "max_steps=40",
        "mixture.episode_len=5", "mixture.probe_steps=3", "mixture.lr=2.0", "optimizer.lr=3e-3",
        # 8 updates: every domain in every probe, each Δ stepped at once (the shipped bounded probe and
        # momentum spread a measurement over ~10 updates; tests/test_known_answers.py runs those settings)
        "mixture.probe_budget=null", "mixture.momentum=0.0",
        "data.batch_size=16", *extra, monkeypatch=monkeypatch,
    )


def test_a_domain_of_uniformly_random_tokens_loses_weight(embedded_shards, tmp_path, monkeypatch):
    """Noise teaches the reference nothing that transfers, so its Δ stays ~0 while real domains' Δ is
    negative: the exported (trajectory-average) weight of the random domain ends below 1/M and below
    every real domain's. (Its *last* α can drift back late in a run, because the default validation
    target includes the random domain's own val split; stage 2 uses the average by default.)"""
    src = ShardedCorpus.open(embedded_shards)
    real = ["code", "books", "legal", "dialogue"]
    noise = {
        "train": uniform_random_tokens(150_000, src.vocab_size, seed=0).astype(src.dtype),
        "val": uniform_random_tokens(10_000, src.vocab_size, seed=1).astype(src.dtype),
    }
    shards = derive_corpus(embedded_shards, tmp_path / "with_noise", real, {"random": noise}, max_tokens=150_000)
    _run_short_tandem(shards, tmp_path / "out", monkeypatch)
    weights, _ = read_mixture_export(tmp_path / "out" / "mixture.yaml", use="average")
    m = len(weights)
    assert weights["random"] < 1 / m, weights
    assert all(weights["random"] < weights[d] for d in real), weights


def test_target_weights_on_one_domain_raise_its_weight(embedded_shards, tmp_path, monkeypatch):
    shards = derive_corpus(
        embedded_shards, tmp_path / "four", ["code", "books", "legal", "dialogue"], max_tokens=150_000
    )
    _run_short_tandem(shards, tmp_path / "out", monkeypatch, "mixture.target_weights={legal: 1.0}")
    for use in ("last", "average"):
        weights, _ = read_mixture_export(tmp_path / "out" / "mixture.yaml", use=use)
        assert weights["legal"] > 1 / 4 and weights["legal"] == max(weights.values()), (use, weights)
