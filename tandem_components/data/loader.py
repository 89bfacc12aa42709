"""The α-weighted multi-domain loader: where the loader reads α.

Training batches are drawn in-process (no worker threads) so that ``set_weights(α)`` takes effect at the
very next batch and the state (one random generator, the current α, token counters) resumes exactly.

Sampling of one training batch of B sequences of T tokens:
    1. B domain ids ~ Categorical(α), with the loader's generator;
    2. for each sample of domain m, a window start uniform in ``[0, n_m - T - 1]`` where
       ``n_m = min(len(domain m), token_budget[m])``; the window holds T + 1 tokens;
    3. ``tokens = window[:-1]``, ``labels = window[1:]`` (next-token targets).

Random state: a numpy ``Generator(PCG64)`` seeded from ``SeedSequence([seed, rank, stream])``, where
``stream`` tells the training loader from the per-domain sampler apart (same seed, different windows).
Its state is plain python ints, so checkpoints load with ``torch.load(weights_only=True)``; it draws
exact (unbiased) integers with a per-sample upper bound in one vectorised call.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torchdata.nodes import BaseNode

from tandem_components.data.batch import Batch
from tandem_components.errors import TandemError

_STREAM_TRAIN = 0
_STREAM_PER_DOMAIN = 1
_STREAM_PROBE_ORDER = 3
#: mixture.probe_budget when a config does not set it, in training batches (data.batch_size): Δ's probe
#: then costs each twin at most two batch forwards per update, whatever the number of domains
DEFAULT_PROBE_BUDGET_BATCHES = 2
_SUM_TOL = 1e-6


# ---- shared validation / indexing helpers ----------------------------------------------------------------
def _check_int(x, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TandemError(f"{name}: expected an integer >= {minimum}, got {x!r}")
    if int(x) < minimum:
        raise TandemError(f"{name}: expected an integer >= {minimum}, got {x}")
    return int(x)


def _check_rank(rank, world_size) -> tuple[int, int]:
    """(rank, world_size), validated: 0 <= rank < world_size."""
    world_size = _check_int(world_size, "world_size", 1)
    rank = _check_int(rank, "rank", 0)
    if rank >= world_size:
        raise TandemError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
    return rank, world_size


def _check_domains(domain_tokens) -> list[np.ndarray]:
    if isinstance(domain_tokens, np.ndarray) or not isinstance(domain_tokens, Sequence) or len(domain_tokens) == 0:
        raise TandemError("domain_tokens: expected a non-empty list of 1-D token arrays, one per domain")
    arrays = []
    for m, a in enumerate(domain_tokens):
        if not isinstance(a, np.ndarray):
            raise TandemError(f"domain_tokens[{m}]: expected a numpy array (np.memmap), got {type(a).__name__}")
        if a.ndim != 1:
            raise TandemError(f"domain_tokens[{m}]: expected a 1-D token array, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TandemError(f"domain_tokens[{m}]: expected an integer token dtype, got {a.dtype}")
        arrays.append(a)
    return arrays


def _effective_lengths(arrays: list[np.ndarray], token_budget, seq_len: int) -> np.ndarray:
    """n_m = min(len, budget_m) per domain, each >= T + 1, as int64."""
    m = len(arrays)
    if token_budget is None:
        token_budget = [None] * m
    if isinstance(token_budget, (str, bytes)) or not isinstance(token_budget, Sequence) or len(token_budget) != m:
        raise TandemError(
            f"token_budget: expected a list of {m} entries (int or None, one per domain), got {token_budget!r}"
        )
    lengths = np.empty(m, dtype=np.int64)
    for i, (a, b) in enumerate(zip(arrays, token_budget)):
        if b is None:
            n = len(a)
        else:
            b = _check_int(b, f"token_budget[{i}]", 1)
            n = min(len(a), b)
        if n < seq_len + 1:
            where = f"token_budget[{i}]={b}" if b is not None and b < len(a) else f"length {len(a)}"
            raise TandemError(
                f"domain_tokens[{i}]: expected at least seq_len + 1 = {seq_len + 1} tokens within its budget, "
                f"got {where}"
            )
        lengths[i] = n
    return lengths


def _gather_windows(
    arrays: list[np.ndarray], domain_ids: np.ndarray, starts: np.ndarray, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``arrays[d][s : s + T + 1]`` -> (tokens, labels), each (B, T) int64."""
    out = np.empty((len(starts), seq_len + 1), dtype=np.int64)
    # One slice copy per sample (B of them, not per token): contiguous reads from the memmap.
    for i, (d, s) in enumerate(zip(domain_ids.tolist(), starts.tolist())):
        out[i] = arrays[d][s : s + seq_len + 1]
    window = torch.from_numpy(out)
    # separate contiguous tensors: an in-place edit of one must not change the other.
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def _make_rng(seed: int, rank: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank, stream])))


def _rng_state(rng: np.random.Generator) -> dict:
    s = rng.bit_generator.state
    return {
        "bit_generator": str(s["bit_generator"]),
        "state": int(s["state"]["state"]),
        "inc": int(s["state"]["inc"]),
        "has_uint32": int(s["has_uint32"]),
        "uinteger": int(s["uinteger"]),
    }


def _set_rng_state(rng: np.random.Generator, sd: dict) -> None:
    rng.bit_generator.state = {
        "bit_generator": sd["bit_generator"],
        "state": {"state": int(sd["state"]), "inc": int(sd["inc"])},
        "has_uint32": int(sd["has_uint32"]),
        "uinteger": int(sd["uinteger"]),
    }


def _check_config(sd: dict, expected: dict, what: str) -> None:
    for key, want in expected.items():
        if key not in sd:
            raise TandemError(f"{what} state_dict: missing key {key!r}")
        got = sd[key]
        got = got.tolist() if isinstance(got, torch.Tensor) else got
        if got != want:
            raise TandemError(f"{what} state_dict: {key}={got} does not match this loader's {key}={want}")


def _check_probe_schedule(sd: dict, schedule: "ProbeSchedule") -> None:
    """The checkpoint's probe held as many domains per update as this run's (a state from before bounded
    probes has no ``domains_per_probe``: its probes held every domain)."""
    saved = int(sd.get("domains_per_probe", len(sd["domain_lengths"])))
    if saved != schedule.domains_per_probe:
        raise TandemError(
            f"mixture.probe_budget: the checkpoint's probe held {saved} of {schedule.num_domains} domains per "
            f"update, this run's holds {schedule.domains_per_probe}; resume with the probe it was written with "
            "(mixture.probe_budget=null: every domain, as before bounded probes)")
    saved_order = sd.get("probe_order", "fixed")  # a state from before probe_order walked one permutation
    if schedule.domains_per_probe < schedule.num_domains and saved_order != schedule.order:
        raise TandemError(f"mixture.probe_order: the checkpoint's probe walked the domains {saved_order!r}, this "
                          f"run's {schedule.order!r}; resume with mixture.probe_order={saved_order}")


# ---- training loader --------------------------------------------------------------------------------------
class AlphaSampling:
    """What the α-weighted loaders (this module's and ``sft_loader``'s) share: α itself, and drawing
    domain ids by it. A subclass provides ``num_domains`` and a numpy generator ``self._rng``."""

    num_domains: int

    def _validate_weights(self, weights) -> np.ndarray:
        m = self.num_domains
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().to(torch.float64).numpy()
        try:
            w = np.array(weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise TandemError(f"weights: expected {m} numbers, got {weights!r}") from None
        if w.shape != (m,):
            raise TandemError(f"weights: expected shape ({m},) (one per domain), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise TandemError(f"weights: expected finite values >= 0, got {w.tolist()}")
        if abs(float(w.sum()) - 1.0) > _SUM_TOL:
            raise TandemError(f"weights: expected values summing to 1 (within {_SUM_TOL}), got sum {float(w.sum())}")
        return w

    def set_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """Set α, (M,); used from the very next batch."""
        self._weights = self._validate_weights(weights)
        self._cdf = np.cumsum(self._weights)

    @property
    def weights(self) -> torch.Tensor:
        """Current α the loader samples with, (M,) float64."""
        return torch.from_numpy(self._weights.copy())

    def _draw_domains(self, n: int) -> np.ndarray:
        """``n`` domain ids drawn from Categorical(α) with ``self._rng``."""
        u = self._rng.random(n)
        # side="right": a zero-weight domain (flat cdf step) is never chosen, not even at u = 0.
        ids = np.searchsorted(self._cdf, u * self._cdf[-1], side="right")
        np.minimum(ids, self.num_domains - 1, out=ids)
        return ids


class WeightedDomainLoader(AlphaSampling, BaseNode[Batch]):
    """Infinite iterator of training batches whose domain mix follows α, changeable between batches.

    A ``torchdata.nodes.BaseNode``: it can be wrapped in ``torchdata.nodes.Loader`` or used directly
    (``next(loader)``, ``state_dict()``, ``load_state_dict(sd)``). ``reset(None)`` returns to the start
    (fresh generator, zero counters, the constructor's α).

    Args:
        domain_tokens: one 1-D integer token array per domain (np.memmap), in the mixture's domain order.
        weights: α, (M,) >= 0 summing to 1 (within 1e-6).
        batch_size: B >= 1 sequences per batch on this rank (the global batch is B * world_size).
        seq_len: T >= 1 tokens per sequence (a window reads T + 1 tokens).
        seed: non-negative int seeding the generator. Every rank draws the same global batch of
            ``world_size * batch_size`` rows and keeps rows ``[rank * B, (rank + 1) * B)``, so ranks see
            different data and the union over ranks equals a 1-process run with batch ``world_size * B``.
        rank, world_size: this process's data-parallel rank; all ranks must be given the same α.
        token_budget: data-restricted scenario, per domain an int (use only the first that many tokens)
            or None (all of it).

    Attributes:
        tokens_drawn: (M,) int64, training tokens drawn per domain by ALL ranks together (T per sample);
            identical on every rank.
    """

    def __init__(
        self,
        domain_tokens: Sequence[np.ndarray],
        weights: Sequence[float] | torch.Tensor,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        token_budget: Sequence[int | None] | None = None,
    ):
        super().__init__()
        self._arrays = _check_domains(domain_tokens)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seq_len = _check_int(seq_len, "seq_len", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self._lengths = _effective_lengths(self._arrays, token_budget, self.seq_len)
        self._initial_weights = self._validate_weights(weights)
        self.reset(None)

    @property
    def num_domains(self) -> int:
        return len(self._arrays)

    # ---- counters ---------------------------------------------------------------------------------------
    @property
    def tokens_drawn(self) -> torch.Tensor:
        return torch.from_numpy(self._tokens_drawn.copy())

    @property
    def domain_lengths(self) -> torch.Tensor:
        """n_m = min(len, budget_m), (M,) int64: the tokens each domain may be sampled from."""
        return torch.from_numpy(self._lengths.copy())

    def epochs_seen(self) -> torch.Tensor:
        """(M,) float64: tokens_drawn / n_m, passes over each domain's (budgeted) data by all ranks."""
        return torch.from_numpy(self._tokens_drawn / self._lengths.astype(np.float64))

    # ---- BaseNode interface -----------------------------------------------------------------------------
    def reset(self, initial_state: dict | None = None) -> None:
        super().reset(initial_state)
        self._rng = _make_rng(self.seed, 0, _STREAM_TRAIN)  # rank-independent: see next()
        self._tokens_drawn = np.zeros(self.num_domains, dtype=np.int64)
        self._num_batches = 0
        self.set_weights(self._initial_weights)
        if initial_state is not None:
            self._load(initial_state)

    def next(self) -> Batch:
        b, t, w = self.batch_size, self.seq_len, self.world_size
        # Every rank draws the same GLOBAL batch (w * B rows) and keeps its own B rows: the data of a
        # run does not depend on how many ranks it is split over (a 2-rank run sees exactly the batches
        # of a 1-rank run with twice the batch size), and per-domain epoch counts are global on every rank.
        ids = self._draw_domains(b * w)
        # start in [0, n_m - T - 1]: integers' high is exclusive, so high = n_m - T.
        starts = self._rng.integers(0, self._lengths[ids] - t, dtype=np.int64)
        self._tokens_drawn += np.bincount(ids, minlength=self.num_domains).astype(np.int64) * t
        mine = slice(self.rank * b, (self.rank + 1) * b)
        ids, starts = ids[mine], starts[mine]
        tokens, labels = _gather_windows(self._arrays, ids, starts, t)
        self._num_batches += 1
        return Batch(tokens=tokens, labels=labels, domain_ids=torch.from_numpy(ids.astype(np.int64)))

    def get_state(self) -> dict[str, Any]:
        return {
            "rng": _rng_state(self._rng),
            "weights": torch.from_numpy(self._weights.copy()),
            "tokens_drawn": torch.from_numpy(self._tokens_drawn.copy()),
            "num_batches": self._num_batches,
            # configuration, checked on load: a mismatch would silently change the batches. The state is
            # the same on every rank and for any number of ranks drawing the same global batch.
            "seed": self.seed,
            "global_batch_size": self.batch_size * self.world_size,
            "seq_len": self.seq_len,
            "domain_lengths": torch.from_numpy(self._lengths.copy()),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Resume exactly: the next batches equal those of the uninterrupted run."""
        self.reset(sd)

    def _load(self, sd: dict) -> None:
        _check_config(
            sd,
            {"seed": self.seed, "global_batch_size": self.batch_size * self.world_size, "seq_len": self.seq_len,
             "domain_lengths": self._lengths.tolist()},
            "loader",
        )
        for key in ("rng", "weights", "tokens_drawn", "num_batches"):
            if key not in sd:
                raise TandemError(f"loader state_dict: missing key {key!r}")
        self.set_weights(torch.as_tensor(sd["weights"], dtype=torch.float64))
        self._tokens_drawn = torch.as_tensor(sd["tokens_drawn"], dtype=torch.int64).numpy().copy()
        self._num_batches = int(sd["num_batches"])
        _set_rng_state(self._rng, sd["rng"])

    @property
    def num_batches(self) -> int:
        return self._num_batches


# ---- fixed per-domain batches -----------------------------------------------------------------------------
def probe_budget(mixture_cfg, global_batch_size: int) -> int | None:
    """Global sequences in Δ's probe batch per update: ``mixture.probe_budget``, by default
    ``DEFAULT_PROBE_BUDGET_BATCHES`` training batches; None (``probe_budget: null``): every domain, every update."""
    budget = mixture_cfg.get("probe_budget", DEFAULT_PROBE_BUDGET_BATCHES * int(global_batch_size))
    return None if budget is None else int(budget)


def domains_per_probe(num_domains: int, per_domain: int, budget: int | None) -> int:
    """D: the domains whose ``per_domain`` sequences fit in ``budget`` (at least one; all M when None)."""
    return num_domains if budget is None else max(1, min(num_domains, budget // per_domain))


#: ``mixture.probe_order``: how a bounded probe walks the domains [project]. ``reshuffled``: a fresh seeded
#: permutation every pass, so that over the run every pair of domains meets in a probe; ``fixed``: one
#: permutation for the whole run (before issue 27: where D divides M the probes are a fixed partition).
PROBE_ORDERS = ("reshuffled", "fixed")


class ProbeSchedule:
    """Which domains a probe batch holds: all M, or ``domains_per_probe`` = D of them, in turns.

    A bounded probe (``mixture.probe_budget``) holds D < M domains, D distinct ones per call, over a seeded
    permutation of the domains (so that neighbouring domains, e.g. the sub-domains of one source, are not
    always probed together).

    - ``order="reshuffled"`` (default): the calls come in passes of ``bound`` = ceil(M / D) calls, each pass
      with a fresh permutation (drawn from the seed and the pass's index), D consecutive domains per call;
      where D does not divide M the pass's last call is topped up with the first domains of the same
      permutation. Every domain is measured at least once in every pass, so at least once in any
      2 x ``bound`` - 1 consecutive calls. Why: the α step moves weight only among the domains of one
      probe (``carry_delta: neutral``), so two domains are compared only when they meet in a probe, and
      with one permutation for the whole run, where D divides M, the probes are a fixed partition (M = 8,
      D = 2: four pairs, whose totals only a floor or a cap ever changes; docs/METHOD.md "Δ's probe at many domains").
    - ``order="fixed"``: the permutation drawn once, D consecutive domains per call, wrapping around (the
      schedule before issue 27): every domain is measured in any ``bound`` consecutive calls.
    """

    def __init__(self, num_domains: int, domains_per_probe: int | None, seed: int, order: str = "reshuffled"):
        if order not in PROBE_ORDERS:
            raise TandemError(f"mixture.probe_order: expected one of {list(PROBE_ORDERS)}, got {order!r}")
        self.num_domains = num_domains
        self.domains_per_probe = num_domains if domains_per_probe is None else min(
            _check_int(domains_per_probe, "domains_per_probe", 1), num_domains)
        self.order = order
        self.seed = seed
        self._order = _make_rng(seed, 0, _STREAM_PROBE_ORDER).permutation(num_domains)

    @property
    def bound(self) -> int:
        """The calls of one pass over the domains: ceil(M / D)."""
        return -(-self.num_domains // self.domains_per_probe)

    def domains(self, call: int) -> np.ndarray:
        """The (sorted) domain ids of probe number ``call`` (0-based)."""
        m, d = self.num_domains, self.domains_per_probe
        if d == m:
            return np.arange(m, dtype=np.int64)
        if self.order == "fixed":
            return np.sort(self._order[(call * d + np.arange(d)) % m]).astype(np.int64)
        n_pass, j = divmod(call, self.bound)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, n_pass, _STREAM_PROBE_ORDER, 1])))
        order = rng.permutation(m)
        chosen = order[j * d:(j + 1) * d]
        if len(chosen) < d:  # the pass's last call: topped up with the pass's first domains
            chosen = np.concatenate([chosen, order[:d - len(chosen)]])
        return np.sort(chosen).astype(np.int64)


class PerDomainSampler:
    """Fixed number of windows per probed domain (the paired probe batches for Δ).

    ``sample()`` returns ``per_domain`` fresh random windows of every domain the ``ProbeSchedule`` names
    for this call (all of them by default), grouped by domain (``domain_ids`` = [d0]*per_domain +
    [d1]*per_domain + ...), so B = D * per_domain.
    """

    def __init__(
        self, domain_tokens, per_domain: int, seq_len: int, seed: int, rank: int = 0, token_budget=None,
        world_size: int = 1, domains_per_probe: int | None = None, probe_order: str = "reshuffled",
    ):
        self._arrays = _check_domains(domain_tokens)
        self.per_domain = _check_int(per_domain, "per_domain", 1)
        self.seq_len = _check_int(seq_len, "seq_len", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self._lengths = _effective_lengths(self._arrays, token_budget, self.seq_len)
        self.schedule = ProbeSchedule(len(self._arrays), domains_per_probe, self.seed, probe_order)
        self._rng = _make_rng(self.seed, 0, _STREAM_PER_DOMAIN)
        self._num_calls = 0

    @property
    def num_domains(self) -> int:
        return len(self._arrays)

    def sample(self) -> Batch:
        chosen = self.schedule.domains(self._num_calls)
        w, k = self.world_size, self.per_domain
        # As in WeightedDomainLoader, all ranks draw the global batch (per_domain windows of each domain
        # for each rank) and keep their share: the union over ranks does not depend on the world size.
        highs = self._lengths[np.repeat(chosen, k * w)] - self.seq_len
        starts = self._rng.integers(0, highs, dtype=np.int64)
        starts = starts.reshape(len(chosen), w, k)[:, self.rank, :].reshape(-1)
        ids = np.repeat(chosen, k)
        tokens, labels = _gather_windows(self._arrays, ids, starts, self.seq_len)
        self._num_calls += 1
        return Batch(tokens=tokens, labels=labels, domain_ids=torch.from_numpy(ids))

    def state_dict(self) -> dict:
        return {
            "rng": _rng_state(self._rng),
            "num_calls": self._num_calls,
            "seed": self.seed,
            "global_per_domain": self.per_domain * self.world_size,
            "seq_len": self.seq_len,
            "domain_lengths": torch.from_numpy(self._lengths.copy()),
            "domains_per_probe": self.schedule.domains_per_probe,
            "probe_order": self.schedule.order,
        }

    def load_state_dict(self, sd: dict) -> None:
        _check_config(
            sd,
            {"seed": self.seed, "global_per_domain": self.per_domain * self.world_size, "seq_len": self.seq_len,
             "domain_lengths": self._lengths.tolist()},
            "per-domain sampler",
        )
        _check_probe_schedule(sd, self.schedule)
        for key in ("rng", "num_calls"):
            if key not in sd:
                raise TandemError(f"per-domain sampler state_dict: missing key {key!r}")
        _set_rng_state(self._rng, sd["rng"])
        self._num_calls = int(sd["num_calls"])


# ---- deterministic evaluation windows ---------------------------------------------------------------------
def eval_windows(
    domain_tokens: Sequence[np.ndarray], seq_len: int, max_windows_per_domain: int | None
) -> list[Batch]:
    """Deterministic evaluation windows: one Batch per domain, no randomness.

    ``max_windows_per_domain=None``: all of them, tiling each domain's tokens from 0 (a whole split).

    Per domain of n tokens, k = min(max_windows_per_domain, n // (T + 1)) windows of T + 1 tokens that do
    not overlap (no token shared between two windows), with starts spread evenly from 0 to n - T - 1:
    ``start_i = i * (n - T - 1) // (k - 1)``. If the whole array fits in k windows they tile it from 0.
    """
    arrays = _check_domains(domain_tokens)
    seq_len = _check_int(seq_len, "seq_len", 1)
    w = seq_len + 1
    whole = max(len(a) for a in arrays) // w + 1
    k_max = whole if max_windows_per_domain is None else _check_int(max_windows_per_domain, "max_windows_per_domain", 1)
    batches = []
    for m, a in enumerate(arrays):
        n = len(a)
        if n < w:
            raise TandemError(f"domain_tokens[{m}]: expected at least seq_len + 1 = {w} tokens for evaluation, got {n}")
        n_full = n // w
        k = min(k_max, n_full)
        if k == n_full:
            starts = np.arange(k, dtype=np.int64) * w
        elif k == 1:
            starts = np.zeros(1, dtype=np.int64)
        else:
            # gap >= (n - w) // (k - 1) >= w because n >= (k + 1) * w here: no overlap.
            starts = np.arange(k, dtype=np.int64) * (n - w) // (k - 1)
        ids = np.full(k, m, dtype=np.int64)
        tokens, labels = _gather_windows(arrays, ids, starts, seq_len)
        batches.append(Batch(tokens=tokens, labels=labels, domain_ids=torch.from_numpy(ids)))
    return batches
