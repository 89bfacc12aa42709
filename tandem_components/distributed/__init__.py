"""Several processes: the collectives that keep α and Δ identical on every rank (no-ops in one process),
and what makes a model scale: FSDP2, per-layer compile, float8, activation checkpointing."""

from tandem_components.distributed.collectives import (
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_int,
    is_distributed,
    is_main_process,
    launched_world_size,
    local_shard,
    rank_and_world_size,
)
from tandem_components.distributed.parallel import (
    apply_float8,
    apply_fsdp,
    full_state_dict,
    init_distributed_if_launched,
    is_fsdp,
    local_device,
    make_prepare,
    prepare_model,
)

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_int",
    "is_distributed",
    "is_main_process",
    "launched_world_size",
    "local_shard",
    "rank_and_world_size",
    "apply_float8",
    "apply_fsdp",
    "full_state_dict",
    "init_distributed_if_launched",
    "is_fsdp",
    "local_device",
    "make_prepare",
    "prepare_model",
]
