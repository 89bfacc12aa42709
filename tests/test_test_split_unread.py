"""The test split is read by the final evaluation only: TANDEM's reference and DoGE's validation gradient
draw from val. Two corpora identical except for their test split (real text vs random tokens) must give
the same α trajectory, Δ and val evaluation bit for bit, and different test figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tandem_components.data.shards import ShardedCorpus
from tests.corpus_variants import derive_corpus, uniform_random_tokens
from tests.recipe_runner import TINY, run_in_process

STAGE1 = "configs/pretrain/tiny_stage1.yaml"
DOMAINS = ["code", "reference", "math"]


@pytest.fixture(scope="module")
def twin_corpora(embedded_shards, tmp_path_factory):
    """(real test split, random-token test split) over the same train and val tokens."""
    src = ShardedCorpus.open(embedded_shards)
    root = tmp_path_factory.mktemp("test_split")
    corpora = []
    for name, scramble in (("real", False), ("scrambled", True)):
        domains = {}
        for i, d in enumerate(DOMAINS):
            splits = {s: np.asarray(src.tokens(d, s)[:20_000]) for s in ("train", "val", "test")}
            if scramble:
                splits["test"] = uniform_random_tokens(splits["test"].size, src.vocab_size, seed=i)
            domains[d] = splits
        corpora.append(derive_corpus(embedded_shards, root / name, [], extra=domains))
    return corpora


def _run(corpus, out, learner, monkeypatch):
    status = run_in_process(
        "pretrain", STAGE1, *TINY, f"data.shards={corpus}", f"output_dir={out}", "max_steps=12",
        f"mixture.learner={learner}", "mixture.episode_len=4", "mixture.probe_steps=2",
        "mixture.probe_seqs_per_domain=2", "eval.test_windows_per_domain=4", monkeypatch=monkeypatch,
    )
    assert status == 0
    trajectory = [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]
    val = json.loads((out / "eval.json").read_text())
    test = json.loads((out / "eval_test.json").read_text())
    return trajectory, val, test


@pytest.mark.parametrize("learner", ["tandem", "doge"])
def test_learners_never_read_the_test_split(twin_corpora, learner, tmp_path, monkeypatch):
    real, scrambled = twin_corpora
    traj_a, val_a, test_a = _run(real, tmp_path / "a", learner, monkeypatch)
    traj_b, val_b, test_b = _run(scrambled, tmp_path / "b", learner, monkeypatch)
    assert len(traj_a) == 3 and traj_a == traj_b  # α and Δ at every update: unchanged by the test split
    assert val_a["domains"] == val_b["domains"]
    # ... while the split does reach the final evaluation (random tokens are harder to predict)
    assert test_b["mean_perplexity"] > test_a["mean_perplexity"]
