"""Turning the config's mixture keys into weight vectors over the corpus's domains.

``mixture.weights`` is the starting α of a learner, or the constant α of ``learner: fixed``:
  - ``uniform``: 1/M each;
  - ``natural``: proportional to each domain's training tokens;
  - a mapping ``{domain: weight}`` covering every domain, summing to 1.
``mixture.weights_from`` (a stage-1 ``mixture.yaml``) takes precedence, with ``mixture.use`` choosing
its ``last`` or ``average`` weights.

``mixture.target_weights`` says which validation domains the learner optimises for (L_val); missing
domains get 0, the default is uniform over all domains.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from tandem_components.errors import TandemError
from tandem_components.export import read_mixture_export, weights_vector


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def named_weights(name: str, domains: Sequence[str], natural_tokens: Sequence[int], key: str) -> torch.Tensor:
    m = len(domains)
    if name == "uniform":
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    if name == "natural":
        counts = torch.tensor([float(n) for n in natural_tokens], dtype=torch.float64)
        return counts / counts.sum()
    raise TandemError(f"{key}: expected 'uniform', 'natural' or a {{domain: weight}} mapping, got {name!r}")


def named_or_mapping_weights(
    spec: Any, domains: Sequence[str], natural_tokens: Sequence[int], key: str
) -> torch.Tensor:
    """``uniform`` | ``natural`` | ``{domain: weight}`` -> (M,) float64 in domain order."""
    spec = _plain(spec)
    if isinstance(spec, str):
        return named_weights(spec, domains, natural_tokens, key=key)
    if isinstance(spec, Mapping):
        return weights_vector(spec, domains, source=key)
    raise TandemError(f"{key}: expected 'uniform', 'natural' or a mapping, got {type(spec).__name__}")


def resolve_initial_weights(mix: DictConfig, domains: Sequence[str], natural_tokens: Sequence[int]) -> torch.Tensor:
    """α_0 (or the fixed α) as an (M,) float64 vector in domain order."""
    source = mix.get("weights_from")
    if source:
        weights, _ = read_mixture_export(source, use=mix.get("use", "average"))
        return weights_vector(weights, domains, source=str(source))
    return named_or_mapping_weights(mix.get("weights", "uniform"), domains, natural_tokens, key="mixture.weights")


def resolve_target_weights(spec: Any, domains: Sequence[str]) -> torch.Tensor:
    """Weights of the validation objective L_val over domains (default uniform)."""
    spec = _plain(spec)
    if spec is None or spec == "uniform":
        return torch.full((len(domains),), 1.0 / len(domains), dtype=torch.float64)
    if not isinstance(spec, Mapping) or not spec:
        raise TandemError(f"mixture.target_weights: expected 'uniform' or a {{domain: weight}} mapping, got {spec!r}")
    full = {d: spec.get(d, 0.0) for d in domains}
    unknown = sorted(set(spec) - set(domains))
    if unknown:
        raise TandemError(f"mixture.target_weights: unknown domain(s) {unknown}; the corpus has {list(domains)}")
    return weights_vector(full, domains, source="mixture.target_weights")
