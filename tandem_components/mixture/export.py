"""The mixture export: the YAML file that stage 2 (and users' own training) reads.

One file, one format (``FORMAT``), written atomically:

    format: tandem-mixture/v1
    method: tandem
    domains: [code, books, ...]
    weights:
      last:    {code: 0.21, books: 0.12, ...}   # α after the final update
      average: {code: 0.19, books: 0.14, ...}   # trajectory average of α
    provenance: {tokenizer_sha256, corpus_index_sha256, seed, steps, num_updates, hyperparameters, ...}

A stage-2 config points at it with ``mixture.weights_from: <path>`` and picks ``mixture.use: average``
or ``last``. The provenance makes a mixture reproducible: learned weights depend on the tokenizer, the
corpus and the seed, so they are recorded next to the weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from tandem_components.atomic import atomic_write_text
from tandem_components.errors import TandemError

FORMAT = "tandem-mixture/v1"
WHICH = ("last", "average")
SUM_TOLERANCE = 1e-6


def _rounded(weights: Sequence[float], domains: Sequence[str]) -> dict[str, float]:
    return {d: float(w) for d, w in zip(domains, weights)}


def write_mixture_export(
    path: str | Path,
    domains: Sequence[str],
    last: Sequence[float],
    average: Sequence[float],
    method: str,
    provenance: Mapping[str, Any],
) -> Path:
    """Write the export atomically; returns its path."""
    doc = {
        "format": FORMAT,
        "method": method,
        "domains": list(domains),
        "weights": {"last": _rounded(last, domains), "average": _rounded(average, domains)},
        "provenance": dict(provenance),
    }
    header = (
        f"# Data mixture learned by tandem ({method}). Train on it with\n"
        f"#   mixture.learner=fixed mixture.weights_from={path} mixture.use=average|last\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False))
    return Path(path)


def read_mixture_export(path: str | Path, use: str = "average") -> tuple[dict[str, float], dict[str, Any]]:
    """Read an export written by ``write_mixture_export``: returns (domain -> weight, whole document)."""
    path = Path(path)
    if use not in WHICH:
        raise TandemError(f"mixture.use: expected one of {list(WHICH)}, got {use!r}")
    if not path.is_file():
        raise TandemError(f"{path}: mixture export not found (mixture.weights_from)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TandemError(f"{path}: not a readable YAML mixture export ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TandemError(f"{path}: not a tandem mixture export (expected 'format: {FORMAT}')")
    weights = doc.get("weights", {}).get(use)
    if not isinstance(weights, dict):
        raise TandemError(f"{path}: has no 'weights.{use}' mapping")
    return {str(k): v for k, v in weights.items()}, doc


def weights_vector(weights: Mapping[str, Any], domains: Sequence[str], source: str) -> torch.Tensor:
    """Validate domain -> weight against the corpus's domains; returns (M,) float64 in domain order.

    ``source`` names the config key or file in error messages.
    """
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise TandemError(f"{source}: unknown domain(s) {unknown}; the corpus has {list(domains)}")
    missing = [d for d in domains if d not in weights]
    if missing:
        raise TandemError(f"{source}: no weight for domain(s) {missing}")
    values = []
    for d in domains:
        w = weights[d]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise TandemError(f"{source}.{d}: expected a finite non-negative number, got {w!r}")
        values.append(float(w))
    total = sum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise TandemError(f"{source}: weights must sum to 1, they sum to {total:.6g}")
    vector = torch.tensor(values, dtype=torch.float64)
    # keep the user's exact numbers when they already sum to 1 (a stage-2 run trains on exactly them)
    return vector if abs(total - 1.0) <= 1e-12 else vector / total
