"""The mixture α on the simplex: where α is stepped with the hypergradient Δ.

α lives on the (optionally floored) simplex ``{a : a_m >= min_weight, sum_m a_m = 1}`` over M domains.
One TANDEM update (METHOD.md, "Algorithm") is

    α <- Proj( α - lr_α * Δ )                      (update="projected_gradient", the paper's step)
    α <- α * exp(-lr_α * Δ) / Z                    (update="exponentiated_gradient", mirror descent [project])

followed by the weight floor (a Euclidean projection onto the floored simplex) and optional DoReMi-style
smoothing ``α <- (1 - eps) α + eps / M``. With ``momentum`` β > 0 [project] the step follows an exponential
average of Δ instead of the last Δ alone, ``v <- β v + (1 - β) Δ``, α stepped with v (no bias correction:
each Δ moves α by lr_α Δ in total, spread over the next ~1 / (1 - β) updates, so the first updates are
small instead of amplified). Why: one update's Δ is mostly noise (its centred spread is several times
its mean over many updates, docs/METHOD.md), and a step on each raw Δ makes α travel many times further
than where it ends. A domain with a larger Δ loses weight. The caller folds the
penalty γ into Δ (or into ``lr``): this module does not know about γ.

Everything is float64 so that α is bit-reproducible across runs and resumes, and sums to 1 within 1e-12.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from tandem_components.errors import TandemError

UPDATES = ("projected_gradient", "exponentiated_gradient")

# Slack on user-given constraints (a weight floor times M at exactly 1, an initial α typed with
# 6 decimals): float rounding must not turn a valid config into an error.
_SUM_TOL = 1e-6
_FLOOR_TOL = 1e-12


def _as_float64_vector(x, name: str, size: int | None = None) -> torch.Tensor:
    """``x`` as a finite float64 1-D tensor (a copy), or TandemError naming ``name``."""
    try:
        t = torch.as_tensor(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TandemError(f"{name}: expected a 1-D sequence of numbers, got {type(x).__name__} ({e})") from None
    if t.dim() != 1:
        raise TandemError(f"{name}: expected a 1-D vector, got shape {tuple(t.shape)}")
    if size is not None and t.numel() != size:
        raise TandemError(f"{name}: expected {size} values (one per domain), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise TandemError(f"{name}: expected finite values, got {t.tolist()}")
    return t.clone()


def project_to_simplex(v: torch.Tensor, min_weight: float = 0.0) -> torch.Tensor:
    """Euclidean projection of ``v`` onto ``{a : a_m >= min_weight, sum_m a_m = 1}``.

    Sort-based O(M log M) algorithm (Held et al. 1974; Duchi et al. 2008) applied to ``b = a - min_weight``,
    which lives on the simplex of radius ``1 - M * min_weight``. Works along the last dimension, so a
    batch ``(..., M)`` projects each row.

    Args:
        v: (..., M) real tensor, finite.
        min_weight: floor for every entry; ``min_weight * M <= 1``.

    Returns:
        (..., M) float64 tensor on the floored simplex (sum 1 within ~1e-15 per row).
    """
    if not isinstance(v, torch.Tensor):
        v = torch.as_tensor(v, dtype=torch.float64)
    if v.dim() == 0 or v.shape[-1] == 0:
        raise TandemError(f"project_to_simplex: v must have entries on its last dim, got shape {tuple(v.shape)}")
    v = v.detach().to(dtype=torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise TandemError("project_to_simplex: v must be finite (got NaN or inf)")
    m = v.shape[-1]
    min_weight = float(min_weight)
    if not math.isfinite(min_weight) or min_weight < 0.0:
        raise TandemError(f"min_weight: expected a number >= 0, got {min_weight}")
    if min_weight * m > 1.0 + _FLOOR_TOL:
        raise TandemError(f"min_weight: expected min_weight * M <= 1 (M={m}), got {min_weight} * {m}")
    radius = max(1.0 - min_weight * m, 0.0)
    if radius == 0.0:
        return torch.full_like(v, 1.0 / m)
    y = v - min_weight
    u, _ = torch.sort(y, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - radius
    ind = torch.arange(1, m + 1, dtype=torch.float64)
    cond = (u - css / ind) > 0
    # rho = last index where cond holds (cond is true at index 0 always, and is a prefix).
    rho = (cond.to(torch.int64) * torch.arange(m)).amax(dim=-1, keepdim=True)
    theta = torch.gather(css, -1, rho) / (rho + 1).to(torch.float64)
    return torch.clamp(y - theta, min=0.0) + min_weight


def project_to_capped_simplex(v: torch.Tensor, min_weight: float, max_weights: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of ``v`` onto ``{a : min_weight <= a_m <= max_weights_m, sum_m a_m = 1}``.

    The projection is ``clip(v - θ, min_weight, max_weights)`` for the θ at which it sums to 1 (the sum falls
    as θ grows): θ is bracketed by bisection, then solved exactly over the entries strictly inside their
    bounds, so the result sums to 1 within float rounding. Works along the last dimension: a batch
    ``(..., M)`` projects each row at once (the swarm projects 100k candidate mixtures; ``mixture/swarm.py``).
    The caller guarantees the set is not empty (``M * min_weight <= 1 <= sum(max_weights)``,
    ``max_weights >= min_weight``)."""
    v = v.detach().to(dtype=torch.float64)
    low = torch.full_like(v, float(min_weight))
    high = max_weights.to(dtype=torch.float64).expand_as(v)
    lo = (v - high).amin(dim=-1, keepdim=True) - 1.0  # sum >= 1 at lo, <= 1 at hi
    hi = (v - low).amax(dim=-1, keepdim=True) + 1.0
    for _ in range(200):  # ~60 halvings reach float64's resolution: stop once no bracket moves
        mid = 0.5 * (lo + hi)
        above = torch.minimum(torch.maximum(v - mid, low), high).sum(dim=-1, keepdim=True) > 1.0
        new_lo, new_hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        if torch.equal(new_lo, lo) and torch.equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    theta = 0.5 * (lo + hi)
    a = torch.minimum(torch.maximum(v - theta, low), high)
    free = (v - theta > low) & (v - theta < high)
    # the exact θ over the free entries of each row: the bounded ones are fixed at their bound
    count = free.sum(dim=-1, keepdim=True)
    if v.dim() == 1:  # one α (every update): summed over the index sets, so α is bit-identical to earlier runs'
        inside, fixed = v[free].sum(), a[~free].sum()
    else:
        inside = torch.where(free, v, 0.0).sum(dim=-1, keepdim=True)
        fixed = torch.where(free, 0.0, a).sum(dim=-1, keepdim=True)
    exact = (inside - (1.0 - fixed)) / count.clamp(min=1)
    return torch.where(free, v - exact, a)


class MixtureState:
    """The mixture α over ``domains`` and its trajectory.

    Args:
        domains: domain names, in the order shared with the loader and the per-domain losses.
        initial: α_0; ``None`` = uniform. Must be >= 0, sum to 1 (within 1e-6; renormalised exactly)
            and respect ``min_weight``.
        lr: step size lr_α (> 0). For the projected step it is in units of α per nat of Δ.
        update: ``"projected_gradient"`` (paper) or ``"exponentiated_gradient"`` (mirror descent).
        min_weight: floor on every α_m after each update, ``0 <= min_weight <= 1/M``.
        smoothing: eps in ``α <- (1 - eps) α + eps / M`` after each step, ``0 <= eps < 1``.
        momentum: β of the exponential average of Δ that α steps with, ``0 <= β < 1`` (0: the last Δ).
        average_tail: the fraction of the run, counted back from its end, that ``average`` covers,
            ``0 < f <= 1`` (1: the whole trajectory, as DoReMi exports; 0.5: its second half) [project].
        max_weights: an upper bound per domain on every α (``None``: none) [project]: the recipes pass
            ``mixture.epoch_cap`` C as ``C * n_m / N`` (UniMax's cap on α: no domain seen more than C epochs).
            A bound below ``min_weight`` is raised to it; the bounds must sum to >= 1. An α_0 above a bound
            is projected onto the capped simplex (logged by the recipe), and every update projects onto it.
        repetition_price: λ >= 0 [project], in Δ's units (nats) per planned epoch past the first: each update
            steps on ``Δ_m + λ max(e_m - 1, 0)``, e_m = α_m x ``epochs_per_weight``_m the epochs of domain m
            that the current α plans (METHOD.md "Pricing repetition"). 0: off (the paper's Δ alone).
        epochs_per_weight: N / n_m per domain (the run's draw over the domain's train tokens: the epochs
            α_m = 1 would plan); needed when ``repetition_price`` > 0.

    Attributes:
        history: α after each update, ``history[0]`` = α_0; each (M,) float64.
        deltas: the Δ of each update (``deltas[i]`` produced ``history[i + 1]``); each (M,) float64.

    ``average(end_step)`` weighs each α of ``history`` by the training steps the proxy took under it:
    α_0 from step 0 to the first update, α_i from update i to update i + 1, the last α until ``end_step``
    (the steps are those passed to ``step(..., at_step=)``). Without steps or ``end_step`` it is the plain
    mean of ``history``. Either way a convex combination, so it stays on the floored simplex. With
    ``average_tail`` f < 1 only the last fraction f of the steps (of the updates, without steps) counts.
    Why the tail: α starts at α_0 and takes a good part of the run to leave it; a whole-run average of an
    iterate still moving is pulled back toward α_0, by the same amount in every seed (docs/METHOD.md,
    "the exported average").

    On ``load_state_dict`` the trajectory is restored and the domain list must match; the
    hyperparameters (lr, update, min_weight, smoothing) are the ones this object was constructed with, so
    a resumed run may change them. ``state_dict()`` records them for provenance.
    """

    def __init__(
        self,
        domains: list[str],
        initial: Sequence[float] | torch.Tensor | None = None,
        lr: float = 1.0,
        update: str = "projected_gradient",
        min_weight: float = 0.0,
        smoothing: float = 0.0,
        momentum: float = 0.0,
        average_tail: float = 1.0,
        max_weights: Sequence[float] | torch.Tensor | None = None,
        repetition_price: float = 0.0,
        epochs_per_weight: Sequence[float] | torch.Tensor | None = None,
    ):
        if isinstance(domains, str) or not isinstance(domains, Sequence) or len(domains) == 0:
            raise TandemError(f"domains: expected a non-empty list of domain names, got {domains!r}")
        domains = list(domains)
        if not all(isinstance(d, str) and d for d in domains):
            raise TandemError(f"domains: expected non-empty strings, got {domains!r}")
        if len(set(domains)) != len(domains):
            dup = sorted({d for d in domains if domains.count(d) > 1})
            raise TandemError(f"domains: expected unique names, duplicated: {dup}")
        m = len(domains)
        if update not in UPDATES:
            raise TandemError(f"update: expected one of {list(UPDATES)}, got {update!r}")
        lr = _finite_float(lr, "lr")
        if lr <= 0:
            raise TandemError(f"lr: expected a number > 0, got {lr}")
        min_weight = _finite_float(min_weight, "min_weight")
        if min_weight < 0 or min_weight * m > 1.0 + _FLOOR_TOL:
            raise TandemError(f"min_weight: expected 0 <= min_weight <= 1/M = {1.0 / m}, got {min_weight}")
        smoothing = _finite_float(smoothing, "smoothing")
        if not 0.0 <= smoothing < 1.0:
            raise TandemError(f"smoothing: expected 0 <= smoothing < 1, got {smoothing}")
        momentum = _finite_float(momentum, "momentum")
        if not 0.0 <= momentum < 1.0:
            raise TandemError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
        average_tail = _finite_float(average_tail, "average_tail")
        if not 0.0 < average_tail <= 1.0:
            raise TandemError(f"average_tail: expected 0 < average_tail <= 1, got {average_tail}")

        repetition_price = _finite_float(repetition_price, "repetition_price")
        if repetition_price < 0:
            raise TandemError(f"repetition_price: expected a number >= 0 (nats per epoch), got {repetition_price}")
        if repetition_price > 0:
            if epochs_per_weight is None:
                raise TandemError("repetition_price > 0 needs epochs_per_weight (N / n_m per domain)")
            epochs_per_weight = _as_float64_vector(epochs_per_weight, "epochs_per_weight", m)
            if bool((epochs_per_weight <= 0).any()):
                raise TandemError(f"epochs_per_weight: expected numbers > 0, got {epochs_per_weight.tolist()}")

        if max_weights is not None:
            max_weights = _as_float64_vector(max_weights, "max_weights", m).clamp(min=min_weight)
            if float(max_weights.sum()) < 1.0 - _FLOOR_TOL:
                raise TandemError(f"max_weights: the per-domain caps sum to {float(max_weights.sum()):.6g} < 1: "
                                  "no mixture fits under them (raise the cap or shorten the run)")

        if initial is None:
            alpha = torch.full((m,), 1.0 / m, dtype=torch.float64)
        else:
            alpha = _as_float64_vector(initial, "initial", m)
            if bool((alpha < 0).any()):
                raise TandemError(f"initial: expected weights >= 0, got {alpha.tolist()}")
            total = float(alpha.sum())
            if abs(total - 1.0) > _SUM_TOL:
                raise TandemError(f"initial: expected weights summing to 1, got sum {total}")
            if abs(total - 1.0) > _FLOOR_TOL:  # keep the user's exact values when they already sum to 1
                alpha = alpha / total
            if bool((alpha < min_weight - _SUM_TOL).any()):
                raise TandemError(f"initial: expected every weight >= min_weight={min_weight}, got {alpha.tolist()}")

        self.max_weights = max_weights
        if max_weights is not None and bool((alpha > max_weights + _FLOOR_TOL).any()):
            alpha = project_to_capped_simplex(alpha, min_weight, max_weights)
        self.domains: list[str] = domains
        self.lr = lr
        self.update = update
        self.min_weight = min_weight
        self.smoothing = smoothing
        self.momentum = momentum
        self.average_tail = average_tail
        self.repetition_price = repetition_price
        self.epochs_per_weight = epochs_per_weight if repetition_price > 0 else None
        self.last_price = torch.zeros(m, dtype=torch.float64)  # the repetition term of the last update
        self.velocity = torch.zeros(m, dtype=torch.float64)  # the exponential average of Δ (momentum > 0)
        self._alpha = alpha
        self.history: list[torch.Tensor] = [alpha.clone()]
        self.deltas: list[torch.Tensor] = []
        self.update_steps: list[int] = []  # the training step of each update (when the caller says it)

    # ---- reading α -------------------------------------------------------------------------------
    @property
    def weights(self) -> torch.Tensor:
        """Current α, (M,) float64 (a copy)."""
        return self._alpha.clone()

    @property
    def num_updates(self) -> int:
        return len(self.deltas)

    def last(self) -> torch.Tensor:
        """α after the latest update (α_0 if none), (M,) float64."""
        return self._alpha.clone()

    def average(self, end_step: int | None = None) -> torch.Tensor:
        """Trajectory average, (M,) float64: each α weighted by the steps trained under it (up to
        ``end_step``) when every update's step is known, else (α_0 + α_1 + ... + α_n) / (n + 1); over the
        last ``average_tail`` of the run only.

        Why by steps: α_0 is used for K steps only (the first update comes at the end of the first
        probe), and the last α for whatever is left of the run; a plain mean counts each as a full episode."""
        history = torch.stack(self.history)
        if end_step is None or not self.update_steps or len(self.update_steps) != self.num_updates:
            keep = max(1, math.ceil(self.average_tail * len(history) - 1e-9))
            return history[-keep:].mean(dim=0)
        bounds = torch.tensor([0, *self.update_steps, max(int(end_step), self.update_steps[-1])], dtype=torch.float64)
        start = float(bounds[-1]) * (1.0 - self.average_tail)
        bounds = bounds.clamp(min=start)
        durations = bounds[1:] - bounds[:-1]
        if float(durations.sum()) <= 0:  # every update at the last step
            return history[-1].clone() if self.average_tail < 1.0 else history.mean(dim=0)
        return (durations[:, None] * history).sum(dim=0) / durations.sum()

    def as_dict(self, which: str = "last", end_step: int | None = None) -> dict[str, float]:
        """``{domain: α_m}`` for ``which`` in ``"last"`` / ``"average"`` (``average(end_step)``)."""
        if which == "last":
            a = self.last()
        elif which == "average":
            a = self.average(end_step)
        else:
            raise TandemError(f"which: expected 'last' or 'average', got {which!r}")
        return {d: float(x) for d, x in zip(self.domains, a.tolist())}

    # ---- stepping α ------------------------------------------------------------------------------
    def repetition_term(self, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """``λ max(e_m - 1, 0)``, e_m the epochs of domain m that ``alpha`` (default: the current α) plans;
        zeros when ``repetition_price`` is 0. Why: Δ is measured over K steps, where one more epoch of a
        source costs nothing yet; at stage-2 length every epoch past the first buys less than the one before
        (Muennighoff et al. 2023), so the step charges each planned epoch past the first. Equal at the
        natural proportions (every e_m equal), which the step then leaves where Δ alone would put it."""
        if self.epochs_per_weight is None:
            return torch.zeros(len(self.domains), dtype=torch.float64)
        alpha = self._alpha if alpha is None else alpha.to(torch.float64)
        return self.repetition_price * (alpha * self.epochs_per_weight - 1.0).clamp(min=0.0)

    def step(self, delta: torch.Tensor, at_step: int | None = None) -> torch.Tensor:
        """One update of α with the hypergradient Δ, (M,) (a larger Δ_m lowers α_m), made at training step
        ``at_step`` (for the time-weighted ``average``). Returns the new α."""
        if at_step is not None and self.update_steps and at_step < self.update_steps[-1]:
            raise TandemError(f"at_step: updates must come in step order, got {at_step} after {self.update_steps[-1]}")
        delta = _as_float64_vector(delta, "delta", len(self.domains))
        alpha = self._alpha
        self.last_price = self.repetition_term(alpha)
        direction = delta + self.last_price
        if self.momentum > 0:
            self.velocity = self.momentum * self.velocity + (1.0 - self.momentum) * direction
            direction = self.velocity
        if self.update == "projected_gradient":
            new = self._project(alpha - self.lr * direction)
        else:
            # log-space for stability; a zero weight stays zero (log 0 = -inf -> exp = 0).
            logits = torch.log(alpha) - self.lr * direction
            new = torch.softmax(logits, dim=0)
            if self.min_weight > 0 or self.max_weights is not None:
                new = self._project(new)
        if self.smoothing > 0:
            # keeps the floor: (1-eps) a + eps/M >= a whenever a <= 1/M, and min_weight <= 1/M.
            new = (1.0 - self.smoothing) * new + self.smoothing / len(self.domains)
        if self.max_weights is not None:  # the caps last: the step and the smoothing may both cross them
            new = project_to_capped_simplex(new, self.min_weight, self.max_weights)
        self._alpha = new
        self.history.append(new.clone())
        self.deltas.append(delta)
        if at_step is not None:
            self.update_steps.append(int(at_step))
        return new.clone()

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        """Onto the floored simplex, under the per-domain caps when there are any."""
        if self.max_weights is None:
            return project_to_simplex(v, self.min_weight)
        return project_to_capped_simplex(v, self.min_weight, self.max_weights)

    # ---- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Tensors, strings and python scalars only: loadable with ``torch.load(weights_only=True)``."""
        m = len(self.domains)
        return {
            "domains": list(self.domains),
            "weights": self._alpha.clone(),
            "history": torch.stack(self.history).clone(),
            "deltas": torch.stack(self.deltas).clone() if self.deltas else torch.zeros((0, m), dtype=torch.float64),
            "num_updates": self.num_updates,
            "update_steps": torch.tensor(self.update_steps, dtype=torch.int64),
            "lr": self.lr,
            "update": self.update,
            "min_weight": self.min_weight,
            "smoothing": self.smoothing,
            "momentum": self.momentum,
            "average_tail": self.average_tail,
            "repetition_price": self.repetition_price,
            "max_weights": self.max_weights.clone() if self.max_weights is not None else torch.zeros(0, dtype=torch.float64),
            "velocity": self.velocity.clone(),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore α and its trajectory from ``state_dict()``; the domain list must match exactly."""
        for key in ("domains", "weights", "history", "deltas"):
            if key not in sd:
                raise TandemError(f"mixture state_dict: missing key {key!r}")
        if list(sd["domains"]) != self.domains:
            raise TandemError(f"mixture state_dict: domains {list(sd['domains'])} do not match {self.domains}")
        m = len(self.domains)
        weights = torch.as_tensor(sd["weights"], dtype=torch.float64)
        history = torch.as_tensor(sd["history"], dtype=torch.float64)
        deltas = torch.as_tensor(sd["deltas"], dtype=torch.float64)
        n = deltas.shape[0] if deltas.dim() == 2 else -1
        if weights.shape != (m,) or history.dim() != 2 or history.shape != (n + 1, m) or deltas.shape != (n, m):
            raise TandemError(
                f"mixture state_dict: inconsistent shapes weights {tuple(weights.shape)}, history "
                f"{tuple(history.shape)}, deltas {tuple(deltas.shape)} for M={m}"
            )
        self._alpha = weights.clone()
        self.history = [h.clone() for h in history]
        self.deltas = [d.clone() for d in deltas]
        # a checkpoint from before momentum: its α stepped on the last Δ alone (a zero average)
        self.velocity = torch.as_tensor(sd.get("velocity", torch.zeros(m)), dtype=torch.float64).clone()
        if self.velocity.shape != (m,):
            raise TandemError(f"mixture state_dict: velocity has shape {tuple(self.velocity.shape)}, expected ({m},)")
        steps = [int(s) for s in torch.as_tensor(sd.get("update_steps", []), dtype=torch.int64).tolist()]
        self.update_steps = steps if len(steps) == n else []  # a checkpoint from before steps were kept


def _finite_float(x, name: str) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise TandemError(f"{name}: expected a number, got {x!r}") from None
    if not math.isfinite(f):
        raise TandemError(f"{name}: expected a finite number, got {x!r}")
    return f
