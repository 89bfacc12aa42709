"""How settled a learned mixture is: the figures a user reads at the end of stage 1 (issue 25).

A learner whose α swings between the floor and 0.5 exports the average of a swing; these three figures
say, without a notebook, whether the trajectory reads as convergence:

- **largest per-update move** after the lr warmup: max over updates and domains of |α_t,m − α_t−1,m|;
- **path ratio**: the L1 length of the path, Σ_t ||α_t − α_t−1||_1, over the L1 net change
  ||α_T − α_0||_1 (1: α went straight to where it ended; 10: it travelled ten times as far as it got);
- **seed spread** of the exported average (across runs, in the harness): max over domains of
  max_seed α_m − min_seed α_m.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Convergence:
    max_move: float          # largest |Δα_m| of one update, after warmup (0 with no such update)
    path_l1: float           # Σ_t ||α_t − α_{t−1}||_1 over the whole run
    net_l1: float            # ||α_T − α_0||_1
    updates_after_warmup: int

    @property
    def path_ratio(self) -> float:
        """path / net change; inf when α ends where it started but moved."""
        if self.net_l1 > 0:
            return self.path_l1 / self.net_l1
        return 1.0 if self.path_l1 == 0 else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "path_ratio": self.path_ratio}

    def format(self) -> str:
        return (f"largest per-update move after warmup {self.max_move:.4f} ({self.updates_after_warmup} updates); "
                f"L1 path {self.path_l1:.3f} / net change {self.net_l1:.3f} = {self.path_ratio:.2f}x")


def convergence(history: Sequence[torch.Tensor], update_steps: Sequence[int], warmup_steps: int = 0) -> Convergence:
    """The figures of one trajectory: ``history[0]`` is α_0, ``history[i]`` α after the update made at
    training step ``update_steps[i - 1]``; a move counts as after warmup when its update's step is."""
    alphas = torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in history])
    moves = (alphas[1:] - alphas[:-1]).abs()  # (updates, M)
    late = torch.tensor([int(s) > warmup_steps for s in update_steps], dtype=torch.bool)
    if late.numel() != moves.shape[0]:
        raise ValueError(f"{moves.shape[0]} updates but {late.numel()} update steps")
    return Convergence(
        max_move=float(moves[late].max()) if bool(late.any()) else 0.0,
        path_l1=float(moves.sum()),
        net_l1=float((alphas[-1] - alphas[0]).abs().sum()),
        updates_after_warmup=int(late.sum()),
    )


def seed_spread(averages: Sequence[Sequence[float]]) -> float:
    """Max over domains of the range of the exported weight across seeds (0 for one seed)."""
    a = torch.as_tensor([list(x) for x in averages], dtype=torch.float64)
    return float((a.max(0).values - a.min(0).values).max()) if a.shape[0] > 1 else 0.0
