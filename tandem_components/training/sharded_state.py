"""The models' and optimizers' part of a training checkpoint, through ``torch.distributed.checkpoint`` (DCP).

Under FSDP2 every rank holds 1/N of each parameter and optimizer-state tensor (DTensor shards). DCP saves
them where they are: each rank writes its own shards, rank 0 the metadata (global shapes, shard offsets),
and a load reads, for each rank, the pieces its shards cover, whatever the number of ranks that wrote
them. The state dicts come from ``get_state_dict`` (keys are parameter names, optimizer state keyed by
them too, the same for a plain and a sharded model: a 1-process checkpoint loads into 8 ranks and back),
and go back with ``set_state_dict``. This is what torchtitan's and torchtune's distributed recipes do.

In one process (no process group) DCP runs without collectives (``no_dist``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, MutableMapping

import torch
from torch import nn

from tandem_components.distributed.collectives import is_distributed

#: name -> (model, optimizer): e.g. {"proxy": (u, opt_u), "reference": (w, opt_w)}
Stateful = Mapping[str, tuple[nn.Module, torch.optim.Optimizer]]


def get_sharded_state(parts: Stateful) -> dict[str, Any]:
    """``{name: {"model": ..., "optimizer": ...}}``: this rank's shards (DTensors under FSDP2).

    An optimizer that has not stepped yet gets its state initialised first (``get_state_dict`` does it
    with a zero-lr step), so the dict has every entry a checkpoint will fill on load."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    state = {}
    for name, (model, optimizer) in parts.items():
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state[name] = {"model": model_sd, "optimizer": optim_sd}
    return state


def set_sharded_state(parts: Stateful, state: Mapping[str, Any]) -> None:
    """Put a loaded ``get_sharded_state`` dict back into the models and optimizers."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    for name, (model, optimizer) in parts.items():
        set_state_dict(model, optimizer, model_state_dict=state[name]["model"],
                       optim_state_dict=state[name]["optimizer"])


def save_sharded(state: Mapping[str, Any], folder: Path) -> None:
    """Each rank writes its shards of ``state`` under ``folder`` (a collective when distributed)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # in one process DCP warns that it assumes one process: it is meant
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=not is_distributed())


def load_sharded(state: MutableMapping[str, Any], folder: Path) -> None:
    """Fill ``state`` (this run's ``get_sharded_state``) in place from ``folder``, resharding as needed."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(folder)), no_dist=not is_distributed())
