"""Turning the config's mixture keys into weight vectors over the corpus's domains.

``mixture.weights`` is the starting α of a learner, or the constant α of ``learner: fixed``:
  - ``uniform``: 1/M each;
  - ``natural``: proportional to each domain's training tokens;
  - ``temperature``: p_m ∝ n_m^τ, τ = ``mixture.temperature`` >= 0 (0: uniform, 1: natural);
  - ``similarity``: p_m ∝ exp(−KL(target ‖ m) / τ) over hashed n-gram distributions, τ =
    ``mixture.similarity_temperature`` (``mixture/similarity.py``; needs the corpus, given by the caller);
  - ``unimax`` (UniMax): the run's N = max_steps * batch_size * seq_len * world_size tokens spread
    uniformly over domains, none getting more than C * n_m tokens (C = ``mixture.max_epochs`` > 0),
    the excess shared uniformly among the others; weights = allocation / N;
  - a mapping ``{domain: weight}`` covering every domain, summing to 1.
``mixture.weights_from`` (a stage-1 ``mixture.yaml``) takes precedence, with ``mixture.use`` choosing
its ``last`` or ``average`` weights.

``mixture.target_weights`` says which validation domains the learner optimises for (L_val): training
domains and target domains (val/test only, never in α) alike; missing domains get 0. The default is
uniform over the target domains when the corpus has any, else uniform over all domains.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import math

import torch
from omegaconf import DictConfig, OmegaConf

from tandem_components.errors import TandemError
from tandem_components.mixture.export import read_mixture_export, weights_vector


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


NAMES = "'uniform', 'natural', 'temperature', 'unimax', 'similarity'"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a (non-bool) finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def temperature_weights(natural_tokens: Sequence[int], temperature: Any) -> torch.Tensor:
    """p_m ∝ n_m^τ (τ = ``mixture.temperature`` >= 0; 0: uniform, 1: natural)."""
    tau = _number(temperature)
    if tau is None or tau < 0:
        raise TandemError(
            f"mixture.temperature: expected a number >= 0 (weights 'temperature': p_m ∝ n_m^τ), got {temperature!r}"
        )
    counts = torch.tensor([float(n) for n in natural_tokens], dtype=torch.float64)
    if tau == 0:
        return torch.full_like(counts, 1.0 / len(counts))
    return torch.softmax(tau * counts.log(), dim=0)  # in log space: n^τ may overflow


def unimax_weights(natural_tokens: Sequence[int], max_epochs: Any, run_tokens: int | None, key: str) -> torch.Tensor:
    """UniMax: the run's ``run_tokens`` N spread uniformly over domains, at most C * n_m tokens each
    (C = ``mixture.max_epochs``), the excess shared uniformly among the others; allocation / N."""
    cap = _number(max_epochs)
    if cap is None or cap <= 0:
        raise TandemError(
            f"mixture.max_epochs: expected a number > 0 (weights 'unimax': at most max_epochs * n_m tokens "
            f"per domain), got {max_epochs!r}"
        )
    if run_tokens is None:
        raise TandemError(
            f"{key}: 'unimax' needs the run's token count (max_steps * batch_size * seq_len * world_size), "
            "which this recipe does not provide (its natural counts are not tokens); use another mixture"
        )
    counts = [float(n) for n in natural_tokens]
    total = float(run_tokens)
    if total <= 0:
        raise TandemError(f"{key}: 'unimax' needs a positive run token count, got {run_tokens!r}")
    most = cap * sum(counts)
    if most < total:
        raise TandemError(
            f"mixture.max_epochs: {max_epochs!r} epochs of the {sum(counts):,.0f} training tokens (examples in SFT) "
            f"place at most {most:,.0f}, fewer than the run's N = {run_tokens:,} it draws; use "
            f"mixture.max_epochs >= {total / sum(counts):.6g} or a shorter run"
        )
    alloc = [0.0] * len(counts)
    remaining = total
    order = sorted(range(len(counts)), key=lambda i: counts[i])
    for done, i in enumerate(order):
        alloc[i] = min(cap * counts[i], remaining / (len(counts) - done))
        remaining -= alloc[i]
    return torch.tensor(alloc, dtype=torch.float64) / total


def epochs_per_weight(natural_tokens: Sequence[int], run_tokens: int) -> list[float]:
    """``N / n_m`` per domain: the epochs of domain m that α_m = 1 plans over a run drawing N tokens (n_m its
    train tokens, its budget in the data-restricted recipe, examples in SFT). What ``mixture.repetition_price``
    charges on; the recipe and ``tools/replay_alpha.py`` both read it here, so a replay prices α as the run did."""
    return [run_tokens / max(int(n), 1) for n in natural_tokens]


def epoch_cap_bounds(natural_tokens: Sequence[int], epoch_cap: Any, run_tokens: int,
                     key: str = "mixture.epoch_cap") -> torch.Tensor:
    """``mixture.epoch_cap`` C as an upper bound on each α_m: ``C * n_m / N`` (n_m the domain's train tokens,
    its budget in the data-restricted recipe, examples in SFT; N the run's draw), so that no α places
    more than C epochs of any domain: UniMax's cap, applied to a learner's α [project]. ``key`` names the
    setting in errors (the swarm's is ``swarm.epoch_cap``)."""
    cap = _number(epoch_cap)
    if cap is None or cap <= 0:
        raise TandemError(f"{key}: expected a number > 0 (epochs) or null, got {epoch_cap!r}")
    counts = torch.tensor([float(n) for n in natural_tokens], dtype=torch.float64)
    if cap * float(counts.sum()) < run_tokens:
        raise TandemError(
            f"{key}: {epoch_cap!r} epochs of the {float(counts.sum()):,.0f} training tokens (examples in "
            f"SFT) place at most {cap * float(counts.sum()):,.0f}, fewer than the run's N = {run_tokens:,}; use "
            f"{key} >= {run_tokens / float(counts.sum()):.6g}, null, or a shorter run"
        )
    return cap * counts / float(run_tokens)


def named_or_mapping_weights(
    spec: Any,
    domains: Sequence[str],
    natural_tokens: Sequence[int],
    key: str,
    *,
    temperature: Any = None,
    max_epochs: Any = None,
    run_tokens: int | None = None,
    similarity: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``uniform`` | ``natural`` | ``temperature`` | ``unimax`` | ``similarity`` | ``{domain: weight}`` ->
    (M,) float64 in domain order (``similarity``: computed by the given callable, which reads the corpus:
    ``mixture/similarity.py``). ``temperature`` / ``max_epochs`` are the values of ``mixture.temperature`` /
    ``mixture.max_epochs``, ``run_tokens`` the run's N (``unimax``)."""
    spec = _plain(spec)
    if isinstance(spec, Mapping):
        return weights_vector(spec, domains, source=key)
    if spec == "uniform":
        return torch.full((len(domains),), 1.0 / len(domains), dtype=torch.float64)
    if spec == "natural":
        counts = torch.tensor([float(n) for n in natural_tokens], dtype=torch.float64)
        return counts / counts.sum()
    if spec == "temperature":
        return temperature_weights(natural_tokens, temperature)
    if spec == "unimax":
        return unimax_weights(natural_tokens, max_epochs, run_tokens, key)
    if spec == "similarity":
        if similarity is None:
            raise TandemError(f"{key}: similarity weights are computed from a corpus; none is given here")
        return similarity()
    raise TandemError(f"{key}: expected {NAMES} or a {{domain: weight}} mapping, got {spec!r}")


def resolve_initial_weights(
    mix: DictConfig, domains: Sequence[str], natural_tokens: Sequence[int], run_tokens: int | None = None,
    targets: Sequence[str] = (),
    similarity: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """α_0 (or the fixed α) as an (M,) float64 vector in domain order; ``run_tokens``: the run's N
    (max_steps * batch_size * seq_len * world_size), needed by ``unimax``; ``targets``: the corpus's
    target domains, which α never covers (named in a mapping, they get their own message);
    ``similarity``: computes ``weights: similarity``."""
    source = mix.get("weights_from")
    if source:
        weights, _ = read_mixture_export(source, use=mix.get("use", "average"))
        _refuse_targets(weights, targets, str(source), domains)
        return weights_vector(weights, domains, source=str(source))
    spec = _plain(mix.get("weights", "uniform"))
    if isinstance(spec, Mapping):
        _refuse_targets(spec, targets, "mixture.weights", domains)
    return named_or_mapping_weights(
        spec, domains, natural_tokens, key="mixture.weights",
        temperature=mix.get("temperature"), max_epochs=mix.get("max_epochs"), run_tokens=run_tokens,
        similarity=similarity,
    )


def _refuse_targets(weights: Mapping, targets: Sequence[str], source: str, domains: Sequence[str]) -> None:
    named = [d for d in weights if d in set(targets)]
    if named:
        raise TandemError(f"{source}: {named} is a target domain (val/test only, never trained on); the mixture "
                          f"covers the training domains {list(domains)}")


def resolve_target_weights(spec: Any, domains: Sequence[str], targets: Sequence[str] = ()) -> torch.Tensor:
    """Weights of the validation objective L_val over ``domains`` (every domain with a val split: the
    training domains, then the ``targets``). Default: uniform over the targets if there are any, else over
    all; ``uniform``: over all."""
    spec = _plain(spec)
    if spec is None and targets:
        return torch.tensor([1.0 / len(targets) if d in set(targets) else 0.0 for d in domains], dtype=torch.float64)
    if spec is None or spec == "uniform":
        return torch.full((len(domains),), 1.0 / len(domains), dtype=torch.float64)
    if not isinstance(spec, Mapping) or not spec:
        raise TandemError(f"mixture.target_weights: expected 'uniform' or a {{domain: weight}} mapping, got {spec!r}")
    full = {d: spec.get(d, 0.0) for d in domains}
    unknown = sorted(set(spec) - set(domains))
    if unknown:
        raise TandemError(f"mixture.target_weights: unknown domain(s) {unknown}; the corpus has {list(domains)}")
    return weights_vector(full, domains, source="mixture.target_weights")
