"""TANDEM episodes with FSDP2-sharded twins: run by tests/test_fsdp_twins.py under torchrun (2 CPU ranks,
gloo), and in-process without FSDP as the 1-process reference on the same global batches.

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_scripts/fsdp_twins.py OUT_DIR [--chunked]

Every rank draws the same global batch (one loader, rank 0's stream, world_size=1) and keeps the rows
``rank::world``: the ranks together see exactly the 1-process batch. Each rank writes ``rank<r>.json``;
rank 0 also writes the gathered final proxy weights to ``proxy_full.pt``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path: make the repo importable

from tandem_components.data.loader import Batch, PerDomainSampler, WeightedDomainLoader  # noqa: E402
from tandem_components.distributed.collectives import all_reduce_sum, rank_and_world_size  # noqa: E402
from tandem_components.distributed.parallel import (  # noqa: E402
    full_state_dict,
    init_distributed_if_launched,
    make_prepare,
)
from tandem_components.estimators import TandemEstimator  # noqa: E402
from tandem_components.mixture.state import MixtureState  # noqa: E402
from tandem_components.training.chunked_loss import model_chunked_domain_losses  # noqa: E402
from tandem_components.training.domain_loss import model_domain_losses  # noqa: E402
from tandem_components.training.twins import build_twins  # noqa: E402
from tests.helpers import adamw, patterned_tokens, tiny_decoder  # noqa: E402

EPISODES, EPISODE_LEN, PROBE_STEPS = 3, 3, 2  # T, E, K
GLOBAL_BATCH, SEQ, NUM_DOMAINS = 8, 16, 2
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast",
               "reduce_scatter", "all_to_all_single", "send", "recv")


def _my_rows(batch: Batch, rank: int, world: int) -> Batch:
    return Batch(batch.tokens[rank::world], batch.labels[rank::world], batch.domain_ids[rank::world])


def _global_mean(value: float) -> float:
    """Mean over ranks of a per-rank token mean (ranks hold equal token counts)."""
    _, world = rank_and_world_size()
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64))[0]) / world


class _CollectiveCounter:
    """Counts calls of torch.distributed collectives, and DTensor/functional collectives, in a block."""

    def __enter__(self):
        import torch.distributed as dist
        from torch.distributed.tensor.debug import CommDebugMode

        self.calls, self._saved = 0, {}
        for name in COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is not None:
                self._saved[name] = fn

                def counted(*a, _fn=fn, **k):
                    self.calls += 1
                    return _fn(*a, **k)

                setattr(dist, name, counted)
        self._mode = CommDebugMode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        import torch.distributed as dist

        self._mode.__exit__(*exc)
        for name, fn in self._saved.items():
            setattr(dist, name, fn)
        self.calls += self._mode.get_total_counts()
        return False


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _check_sync(twins, fsdp: bool) -> dict:
    """Before/after ``sync()``: parameters sharded, no collective during sync, twins equal afterwards."""
    out = {}
    params = list(twins.proxy.parameters()) + list(twins.reference.parameters())
    out["sharded_before_sync"] = all(type(p).__name__ == "DTensor" for p in params) if fsdp else True
    with _CollectiveCounter() as counter:
        twins.sync()
    out["sync_collectives"] = counter.calls
    out["full_params_equal"] = all(
        torch.equal(_full(r), _full(u))
        for r, u in zip(twins.reference.parameters(), twins.proxy.parameters(), strict=True)
    )
    states_equal = True
    for r, u in zip(twins.reference.parameters(), twins.proxy.parameters(), strict=True):
        su, sr = twins.proxy_optimizer.state.get(u, {}), twins.reference_optimizer.state.get(r, {})
        states_equal &= su.keys() == sr.keys() and all(
            torch.equal(_local(sr[k]), _local(v)) if torch.is_tensor(v) else sr[k] == v for k, v in su.items()
        )
    out["optimizer_state_equal"] = bool(states_equal)
    return out


def run_episodes(fsdp: bool, chunked: bool) -> dict:
    rank, world = rank_and_world_size()
    forward = functools.partial(model_chunked_domain_losses, num_chunks=4) if chunked else model_domain_losses
    domains = [patterned_tokens(7, 0, 4000), patterned_tokens(11, 20, 4000)]
    torch.manual_seed(0)
    twins = build_twins(tiny_decoder, adamw(3e-3), adamw(3e-3), prepare=make_prepare(device="cpu", fsdp=fsdp))
    estimator = TandemEstimator(twins, NUM_DOMAINS, gamma=1.0, max_grad_norm=1.0, forward=forward)
    mixture = MixtureState(["a", "b"], lr=0.1)  # α stays inside the simplex
    loader = WeightedDomainLoader(domains, [0.5, 0.5], GLOBAL_BATCH, SEQ, seed=0)  # global batch, 1 stream
    train = iter(loader)
    val = iter(WeightedDomainLoader(domains, [1.0, 0.0], GLOBAL_BATCH, SEQ, seed=1))
    probe = PerDomainSampler(domains, per_domain=4, seq_len=SEQ, seed=2)

    result = {"rank": rank, "world": world, "proxy_loss": [], "reference_loss": [], "alpha": [], "delta": [],
              "sync_checks": [], "distance_after_sync": []}
    for _ in range(EPISODES):
        result["sync_checks"].append(_check_sync(twins, fsdp))  # estimator.begin_episode() is twins.sync()
        with _CollectiveCounter() as control:  # positive control: the counter does see collectives
            result["distance_after_sync"].append(twins.parameter_distance())
        result["control_collectives"] = control.calls
        for k in range(EPISODE_LEN):
            batch = _my_rows(next(train), rank, world)
            loss = forward(twins.proxy, batch, NUM_DOMAINS).mean
            loss.backward()
            torch.nn.utils.clip_grad_norm_(twins.proxy.parameters(), 1.0)
            twins.proxy_optimizer.step()
            twins.proxy_optimizer.zero_grad(set_to_none=True)
            result["proxy_loss"].append(_global_mean(float(loss.detach())))
            if k < PROBE_STEPS:
                metrics = estimator.probe_step(batch, _my_rows(next(val), rank, world))
                result["reference_loss"].append(
                    [_global_mean(metrics["reference/train_loss"]), _global_mean(metrics["reference/val_loss"])]
                )
            if k == PROBE_STEPS - 1:
                delta = estimator.delta(_my_rows(probe.sample(), rank, world))
                alpha = mixture.step(delta)
                loader.set_weights(alpha)
                result["delta"].append(delta.tolist())
                result["alpha"].append(alpha.tolist())
    result["alpha_hex"] = [[float(a).hex() for a in row] for row in result["alpha"]]
    state = full_state_dict(twins.proxy)  # collective: every rank calls it; only rank 0 gets the tensors
    result["full_state_keys"] = sorted(state)
    result["_state"] = state
    return result


def main(out_dir: str, chunked: bool) -> None:
    assert init_distributed_if_launched("cpu"), "run me with torchrun (WORLD_SIZE > 1)"
    torch.set_num_threads(1)
    result = run_episodes(fsdp=True, chunked=chunked)
    state = result.pop("_state")
    out = Path(out_dir)
    if result["rank"] == 0:
        torch.save(state, out / "proxy_full.pt")
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], chunked="--chunked" in sys.argv[2:])
