"""The swarm: a RegMix-style mixture search (Liu et al. 2024), the parts that need no training [project].

RegMix learns a mixture without a learner in the loop: N short runs, each on one mixture drawn at random,
then a regression from the mixture weights to the target's validation loss, whose predicted optimum is
the export. This module is that method less the runs (``tools/swarm.py`` runs them):

- ``draw_mixtures``: N mixtures from a Dirichlet around a prior, Dirichlet(c * prior). The prior is
  ``temperature`` 0.5 over the domains' train tokens (their budgets in the data-restricted recipe): RegMix's
  prior, which flattens the natural one so that small domains are explored. c, the concentration, is one
  number, or a range [low, high] from which each draw takes one of 15 log-spaced values (RegMix's "strength"
  0.1 to 5: small c gives draws near a corner, large c draws near the prior, so the swarm sees both). Each
  draw is then projected under the epoch cap (``epoch_cap_bounds``: no draw plans more than C epochs of a
  domain; RegMix rejects such draws, a projection keeps every draw usable when the cap binds on the prior).
- ``fit_swarm``: two regressions from weights to loss, picked by their held-out Spearman rank correlation
  (k-fold cross-validation over the N runs: the ranking is what finding the optimum needs). A ridge on the
  weights, their squares and products (a model linear in α puts its optimum on a vertex of the capped
  simplex; the quadratic terms let it bend to an interior one), and gradient-boosted trees, RegMix's model
  family. Both from scikit-learn: LightGBM, RegMix's own, would be a second native dependency for the same
  tree family, which on N <= a few hundred runs gains nothing in speed.
- ``predicted_optimum``: many candidates from the same Dirichlet under the same cap, the mean of the top k
  predicted, projected onto the capped simplex (averaging the top k, as RegMix does, smooths the regression's
  noise instead of trusting its single best point).

Everything is seeded: the same seed draws the same mixtures and the same candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tandem_components.errors import TandemError
from tandem_components.mixture.named import temperature_weights
from tandem_components.mixture.state import project_to_capped_simplex

#: the swarm's options (``swarm.<key>`` in the harness, the driver's ``swarm.<key>=`` overrides), defaults
OPTIONS: dict[str, Any] = {
    "n": 32,                       # proxy runs (the regression's data points)
    "concentration": [0.1, 5.0],   # Dirichlet c (params = c * prior): a number, or [low, high] (RegMix's)
    "prior_temperature": 0.5,      # prior p_m ∝ n_m^τ over the domains' train tokens / budgets
    "epoch_cap": None,             # C: no draw plans more than C epochs of a domain (null: no cap)
    "top_k": 100,                  # the export is the mean of the k best predicted candidates
    "candidates": 100_000,         # candidates the regression ranks
    "folds": 5,                    # k of the cross-validation that picks the regression
    "max_steps": None,             # the proxy runs' length (null: the recipe config's max_steps)
}
#: fewer runs than this cannot both fit a regression and hold some out to judge it
MIN_RUNS = 4
#: concentration levels of a [low, high] range, log-spaced, as RegMix's synthesize_mixture.py
LEVELS = 15
MODELS = ("ridge", "gbm")


def _int(value: Any, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise TandemError(f"swarm.{key}: expected an integer >= {least}, got {value!r}")
    return value


def _positive(value: Any, key: str, zero_ok: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0 or (value == 0 and not zero_ok)):
        raise TandemError(f"swarm.{key}: expected a number {'>=' if zero_ok else '>'} 0, got {value!r}")
    return float(value)


def concentration_levels(concentration: Any) -> np.ndarray:
    """The Dirichlet concentrations draws pick from: ``[c]``, or ``LEVELS`` log-spaced over ``[low, high]``."""
    if isinstance(concentration, (list, tuple)):
        if len(concentration) != 2:
            raise TandemError(f"swarm.concentration: expected a number > 0 or [low, high], got {concentration!r}")
        low, high = (_positive(c, "concentration") for c in concentration)
        if low > high:
            raise TandemError(f"swarm.concentration: expected low <= high, got {concentration!r}")
        return np.geomspace(low, high, LEVELS) if low < high else np.array([low])
    return np.array([_positive(concentration, "concentration")])


def check_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The swarm's options with defaults filled in, each checked: a bad one is a one-line ``swarm.<key>`` error."""
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise TandemError(f"swarm.{unknown[0]}: unknown option; known: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **raw}
    _int(opts["n"], "n", MIN_RUNS)
    concentration_levels(opts["concentration"])
    _positive(opts["prior_temperature"], "prior_temperature", zero_ok=True)
    if opts["epoch_cap"] is not None:
        _positive(opts["epoch_cap"], "epoch_cap")
    _int(opts["top_k"], "top_k", 1)
    _int(opts["candidates"], "candidates", opts["top_k"])
    _int(opts["folds"], "folds", 2)
    if opts["max_steps"] is not None:
        _int(opts["max_steps"], "max_steps", 1)
    if isinstance(opts["concentration"], tuple):
        opts["concentration"] = list(opts["concentration"])
    return opts


def swarm_prior(natural_tokens: Sequence[int], temperature: float = 0.5) -> np.ndarray:
    """The Dirichlet's mean: p_m ∝ n_m^τ (``temperature_weights``), (M,) float64."""
    return temperature_weights(natural_tokens, _positive(temperature, "prior_temperature", zero_ok=True)).numpy()


def cap_rows(mixtures: np.ndarray, max_weights: Any) -> np.ndarray:
    """Each row projected onto the capped simplex (``max_weights`` None: unchanged). Rows already under the
    cap are left as they are: projection would only move them by rounding."""
    if max_weights is None:
        return mixtures
    high = np.asarray(max_weights, dtype=np.float64)
    out = mixtures.copy()
    over = (mixtures > high).any(axis=1)
    if over.any():
        out[over] = project_to_capped_simplex(torch.from_numpy(mixtures[over]), 0.0, torch.from_numpy(high)).numpy()
    return out


def draw_mixtures(prior: Sequence[float], n: int, concentration: Any, seed: int, max_weights: Any = None,
                  stream: int = 0) -> np.ndarray:
    """``n`` mixtures, (n, M) float64: each from Dirichlet(c * prior), c one of ``concentration_levels``
    (picked at random per draw), then projected under ``max_weights``. ``stream`` separates independent
    sequences of one seed (0: the swarm's runs, 1: the candidates ranked for the optimum).

    Prefix-stable: the first k of n draws are the k draws, so a swarm grown from k to n runs keeps its first
    k (the picks, and each level's draws, come from their own generators, consumed in order)."""
    prior = np.asarray(prior, dtype=np.float64)
    levels = concentration_levels(concentration)
    picks = np.minimum((np.random.default_rng([seed, stream, 0]).random(n) * len(levels)).astype(np.int64),
                       len(levels) - 1)
    draws = np.empty((n, prior.size), dtype=np.float64)
    for j, c in enumerate(levels):  # one vectorised draw per level (numpy's Dirichlet copes with tiny c * p)
        rows = np.flatnonzero(picks == j)
        if rows.size:
            draws[rows] = np.random.default_rng([seed, stream, 1 + j]).dirichlet(c * prior, size=rows.size)
    return cap_rows(draws, max_weights)


def spearman(measured: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties ranked by their mean rank); None when either side is constant."""
    from scipy.stats import rankdata  # scikit-learn's own dependency

    a, b = rankdata(measured), rankdata(predicted)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _models(seed: int) -> dict[str, Any]:
    """The two candidate regressions, unfitted. sklearn is imported here only: recipes import this package."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    return {
        # weights, squares and products, on their own scale (all in [0, 1]: standardising would blow up a
        # feature that barely varies in a few runs); the penalty chosen by leave-one-out inside
        "ridge": make_pipeline(PolynomialFeatures(2, include_bias=False), RidgeCV(alphas=np.logspace(-6, 2, 17))),
        # small trees, slow learning rate: N is tens to hundreds of points
        "gbm": GradientBoostingRegressor(n_estimators=200, learning_rate=0.05, max_depth=2, min_samples_leaf=2,
                                         random_state=seed),
    }


@dataclass
class SwarmFit:
    """The regression chosen, both models' held-out Spearman correlations and out-of-fold predictions."""

    model: str
    spearman: dict[str, float | None]
    held_out: dict[str, list[float]]
    predictor: Any = field(repr=False)

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        return np.asarray(self.predictor.predict(np.asarray(mixtures, dtype=np.float64)), dtype=np.float64)


def fit_swarm(mixtures: Sequence[Sequence[float]], scores: Sequence[float], folds: int = 5, seed: int = 0) -> SwarmFit:
    """Fit both regressions from ``mixtures`` (N, M) to ``scores`` (N,), judge each by the Spearman correlation
    of its k-fold out-of-fold predictions with the measured scores (k = min(folds, N)), refit the better one
    (ridge on a tie) on all N runs."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_predict

    x, y = np.asarray(mixtures, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise TandemError(f"swarm: expected N mixtures (N, M) and N scores, got {x.shape} and {y.shape}")
    if len(y) < MIN_RUNS:
        raise TandemError(f"swarm.n: {len(y)} runs are too few to fit the regression and hold runs out to judge "
                          f"it; use at least {MIN_RUNS}")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise TandemError("swarm: every mixture and score must be finite")
    cv = KFold(n_splits=min(_int(folds, "folds", 2), len(y)), shuffle=True, random_state=seed)
    models = _models(seed)
    held = {name: cross_val_predict(model, x, y, cv=cv) for name, model in models.items()}
    rho = {name: spearman(y, held[name]) for name in models}
    chosen = max(MODELS, key=lambda name: -math.inf if rho[name] is None else rho[name])
    return SwarmFit(chosen, rho, {k: v.tolist() for k, v in held.items()}, clone(models[chosen]).fit(x, y))


def predicted_optimum(fit: SwarmFit, prior: Sequence[float], concentration: Any, seed: int, max_weights: Any = None,
                      candidates: int = 100_000, top_k: int = 100) -> tuple[np.ndarray, float]:
    """The export: the mean of the ``top_k`` candidates (of ``candidates`` drawn as the swarm was, under the
    same cap) with the lowest predicted score, projected onto the capped simplex; and its predicted score."""
    pool = draw_mixtures(prior, _int(candidates, "candidates", 1), concentration, seed, max_weights, stream=1)
    best = np.argsort(fit.predict(pool), kind="stable")[:_int(top_k, "top_k", 1)]
    mean = pool[best].mean(axis=0)
    mean = cap_rows((mean / mean.sum())[None], max_weights)[0]
    return mean, float(fit.predict(mean[None])[0])
