"""The target-aware baseline a user tries first: weight each source by how close its text is to the target's.

A cheap DSIR-style estimate (Xie et al. 2023, "Data Selection for Language Models via Importance
Resampling"): each text is summarised by its distribution over hashed unigram and bigram features, and
source m gets

    p_m ∝ exp(−KL(target ‖ m) / τ)        (τ = ``mixture.similarity_temperature``)

where the target's distribution is the ``target_weights``-weighted mixture of the target domains' val
features (what the user cares about) and a source's is that of a sample of its train split (what would be
trained on). Small τ puts the weight on the closest source; large τ tends to uniform.

Why not DSIR's own package (``data-selection``): it hashes the words of raw-text files with one sha256
per n-gram in Python (plus nltk) to resample documents; here the recipes hold token shards and need one
number per source, so the features are hashed token-id n-grams, computed with numpy in milliseconds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from tandem_components.errors import TandemError

#: hashed feature buckets (DSIR's default), tokens sampled per text, and the add-one smoothing
NUM_BUCKETS = 10_000
SAMPLE_TOKENS = 1_000_000
_SMOOTHING = 1.0
# odd 64-bit multipliers of a multiplicative hash (Knuth) for unigrams and bigrams
_A, _B = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def _sample(tokens: np.ndarray, max_tokens: int) -> np.ndarray:
    """At most ``max_tokens`` tokens of ``tokens``, as 16 evenly spaced contiguous pieces (deterministic),
    so that a long split is represented along its whole length, not by its beginning alone."""
    tokens = np.asarray(tokens)
    if tokens.size <= max_tokens:
        return tokens.astype(np.uint64)
    pieces, size = 16, max_tokens // 16
    starts = np.linspace(0, tokens.size - size, pieces).astype(np.int64)
    return np.concatenate([tokens[s:s + size] for s in starts]).astype(np.uint64)


def ngram_distribution(tokens: np.ndarray, num_buckets: int = NUM_BUCKETS, max_tokens: int = SAMPLE_TOKENS) -> np.ndarray:
    """(num_buckets,) float64 distribution of hashed unigrams and bigrams of a token sample, add-one smoothed."""
    ids = _sample(tokens, max_tokens)
    with np.errstate(over="ignore"):  # the hash wraps around 2^64 on purpose
        unigrams = (ids * _A) >> np.uint64(40)
        bigrams = ((ids[:-1] * _A) ^ (ids[1:] * _B)) >> np.uint64(40)
    counts = np.bincount((np.concatenate([unigrams, bigrams]) % np.uint64(num_buckets)).astype(np.int64),
                         minlength=num_buckets).astype(np.float64)
    counts += _SMOOTHING
    return counts / counts.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) in nats (both smoothed: no zero)."""
    return float(np.sum(p * np.log(p / q)))


def similarity_weights(
    sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    target_weights: Sequence[float],
    temperature: float,
    num_buckets: int = NUM_BUCKETS,
    max_tokens: int = SAMPLE_TOKENS,
) -> tuple[torch.Tensor, list[float]]:
    """p_m ∝ exp(−KL(target ‖ source_m) / τ) over ``sources`` (token arrays); the target distribution is
    the ``target_weights``-weighted mixture of the ``targets``' distributions. Returns the (M,) float64
    weights and the KLs (nats), for provenance."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise TandemError(f"mixture.similarity_temperature: expected a number > 0, got {temperature!r}")
    if len(targets) != len(target_weights) or not targets or sum(target_weights) <= 0:
        raise TandemError("mixture.weights: similarity needs a target (target domains or mixture.target_weights)")
    total = float(sum(target_weights))
    target = sum((w / total) * ngram_distribution(t, num_buckets, max_tokens)
                 for t, w in zip(targets, target_weights) if w > 0)
    kls = [kl_divergence(target, ngram_distribution(s, num_buckets, max_tokens)) for s in sources]
    logits = -torch.tensor(kls, dtype=torch.float64) / float(temperature)
    return torch.softmax(logits, dim=0), kls


def corpus_similarity_weights(
    corpus, target_spec, temperature: float, budgets: Sequence[int] | None = None
) -> tuple[torch.Tensor, dict]:
    """``similarity_weights`` over a prepared corpus's training domains: each source's train split (its
    first ``budgets[m]`` tokens in the data-restricted setting: what can be trained on), the target
    being ``target_spec`` (``mixture.target_weights``; default the corpus's target domains) over the val
    splits. Returns the weights and their provenance (τ, buckets, KL per source)."""
    from tandem_components.mixture.named import resolve_target_weights  # named.py does not import this module

    val_domains = [*corpus.domains, *corpus.targets]
    target = resolve_target_weights(target_spec, val_domains, corpus.targets).tolist()
    sources = [corpus.tokens(d, "train") for d in corpus.domains]
    if budgets is not None:
        sources = [s[: int(b)] for s, b in zip(sources, budgets)]
    chosen = [(corpus.tokens(d, "val"), w) for d, w in zip(val_domains, target) if w > 0]
    weights, kls = similarity_weights(sources, [t for t, _ in chosen], [w for _, w in chosen], temperature)
    provenance = {
        "temperature": float(temperature), "num_buckets": NUM_BUCKETS, "sample_tokens": SAMPLE_TOKENS,
        "target": {d: w for d, w in zip(val_domains, target) if w > 0},
        "kl_nats": dict(zip(corpus.domains, kls)),
    }
    return weights, provenance
