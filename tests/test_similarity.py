"""The similarity baseline's arithmetic on real token ids: hashed n-gram distributions, KL, the softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tandem_components.mixture.similarity import kl_divergence, ngram_distribution, similarity_weights


@pytest.fixture(scope="module")
def texts(embedded_shards):
    corpus = ShardedCorpus.open(embedded_shards)
    return {d: np.asarray(corpus.tokens(d, "train")) for d in ("code", "legal", "books")}, corpus


def test_distributions_are_smoothed_deterministic_and_separate_domains(texts):
    train, corpus = texts
    p = ngram_distribution(train["code"])
    assert p.shape == (10_000,) and abs(p.sum() - 1) < 1e-12 and (p > 0).all()
    assert np.array_equal(p, ngram_distribution(train["code"]))
    assert kl_divergence(p, p) == 0.0
    code_val = ngram_distribution(np.asarray(corpus.tokens("code", "val")))
    # a domain's val text is closer to its own train text than to another domain's
    assert kl_divergence(code_val, p) < min(kl_divergence(code_val, ngram_distribution(train[d])) for d in ("legal", "books"))


def test_the_weights_favour_the_closest_source_and_tend_to_uniform_with_temperature(texts):
    train, corpus = texts
    sources = [train["code"], train["legal"], train["books"]]
    target = [np.asarray(corpus.tokens("legal", "val"))]
    sharp, kls = similarity_weights(sources, target, [1.0], temperature=0.05)
    assert int(torch.argmax(sharp)) == 1 and float(sharp[1]) > 0.9 and kls[1] == min(kls)
    flat, _ = similarity_weights(sources, target, [1.0], temperature=1e6)
    assert torch.allclose(flat, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-5)
    # two targets weighted 0.9 / 0.1: the source of the heavier one leads
    mixed, _ = similarity_weights(sources, [np.asarray(corpus.tokens("code", "val")), target[0]], [0.9, 0.1], 0.05)
    assert int(torch.argmax(mixed)) == 0


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), "hot", True])
def test_a_bad_temperature_is_refused(texts, temperature):
    train, _ = texts
    with pytest.raises(TandemError, match="mixture.similarity_temperature"):
        similarity_weights([train["code"]], [train["legal"]], [1.0], temperature)
