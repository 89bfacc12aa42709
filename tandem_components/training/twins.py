"""The twin networks: proxy u and reference w, and their synchronisation.

TANDEM trains two copies of one model (METHOD.md):
- the **proxy** u trains on the α-weighted training mixture only;
- the **reference** w trains on the same mixture (weighted γ) *plus* the validation data;
and every episode starts with ``sync()``: w <- u. Without it the twins drift apart and Δ measures the
drift instead of the effect of the validation data (paper, Fig. 7).

``sync()`` copies parameters, buffers and the optimizer state (so w starts as u's exact continuation,
a [project] decision) in place: after the first call, no tensor is reallocated. Under FSDP2 both twins
are sharded identically, so every copy is shard-local (no communication).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from tandem_components.distributed.collectives import all_reduce_sum, local_shard

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]



@dataclass
class TwinModels:
    """Proxy u and reference w with their optimizers (same model config, same parameter order)."""

    proxy: nn.Module
    reference: nn.Module
    proxy_optimizer: torch.optim.Optimizer
    reference_optimizer: torch.optim.Optimizer

    @torch.no_grad()
    def sync(self) -> None:
        """w <- u: parameters, buffers and optimizer state, copied in place."""
        for p_ref, p_prx in zip(self.reference.parameters(), self.proxy.parameters(), strict=True):
            local_shard(p_ref).copy_(local_shard(p_prx))
        for b_ref, b_prx in zip(self.reference.buffers(), self.proxy.buffers(), strict=True):
            local_shard(b_ref).copy_(local_shard(b_prx))
        self._sync_optimizer_state()

    def _sync_optimizer_state(self) -> None:
        src_opt, dst_opt = self.proxy_optimizer, self.reference_optimizer
        for p_ref, p_prx in zip(self.reference.parameters(), self.proxy.parameters(), strict=True):
            src = src_opt.state.get(p_prx)
            if not src:  # the proxy has not stepped yet: the reference starts fresh as well
                dst_opt.state.pop(p_ref, None)
                continue
            dst = dst_opt.state.get(p_ref)
            if not dst or dst.keys() != src.keys():  # first sync: allocate once
                dst_opt.state[p_ref] = {
                    k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in src.items()
                }
                continue
            for key, value in src.items():
                if torch.is_tensor(value):
                    local_shard(dst[key]).copy_(local_shard(value))
                else:
                    dst[key] = copy.deepcopy(value)

    @torch.no_grad()
    def reflect_reference(self) -> None:
        """w <- 2u - w in place (shard-local under FSDP2): the reference moved by the same steps the other way
        (TANDEM's central Δ); applied twice it gives w back, up to rounding."""
        for p_ref, p_prx in zip(self.reference.parameters(), self.proxy.parameters(), strict=True):
            local_shard(p_ref).mul_(-1).add_(local_shard(p_prx), alpha=2)

    @torch.no_grad()
    def parameter_distance(self) -> float:
        """||w - u||_2 over the full parameters: 0 right after sync; logged to show drift (paper Fig. 7).

        Under FSDP2 each rank sums its shards and the sums are all-reduced: a collective, so call it on
        every rank.
        """
        total = torch.zeros((), dtype=torch.float64, device=next(self.proxy.parameters()).device)
        for p_ref, p_prx in zip(self.reference.parameters(), self.proxy.parameters(), strict=True):
            total += (local_shard(p_ref).double() - local_shard(p_prx).double()).pow(2).sum()
        return float(all_reduce_sum(total).sqrt())


def build_twins(
    build_model: Callable[[], nn.Module],
    make_proxy_optimizer: OptimizerFactory,
    make_reference_optimizer: OptimizerFactory,
    prepare: Callable[[nn.Module], nn.Module] = lambda m: m,
) -> TwinModels:
    """Build u and w from one model config; w starts as an exact copy of u.

    Args:
        build_model: returns a freshly initialised model (e.g. ``config.instantiate(cfg.model)``).
        make_proxy_optimizer / make_reference_optimizer: optimizer from a parameter iterable (lr_u, lr_w).
        prepare: applied to each twin before its optimizer is built (device move, FSDP2 sharding,
            compile), identically to both so that their parameters line up shard for shard.
    """
    proxy = build_model()
    reference = copy.deepcopy(proxy)
    proxy = prepare(proxy)
    reference = prepare(reference)
    twins = TwinModels(
        proxy=proxy,
        reference=reference,
        proxy_optimizer=make_proxy_optimizer(proxy.parameters()),
        reference_optimizer=make_reference_optimizer(reference.parameters()),
    )
    twins.sync()
    return twins
