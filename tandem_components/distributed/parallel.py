"""Scale and speed, applied to a model by functions (torchtitan style): FSDP2, activation checkpointing,
per-layer torch.compile, float8 Linear layers, and the full-state-dict gather for saving.

One entry point, ``prepare_model``, is what ``twins.build_twins(..., prepare=...)`` takes: it is applied
identically to the proxy u and the reference w, so their parameters line up shard for shard and
``TwinModels.sync()`` (w <- u) copies local shards only, with no communication.

Setup order in a recipe (each step needs the previous one):

    init_distributed_if_launched(device)          # before anything touches a process group
    device = local_device(device)                 # cuda:<LOCAL_RANK> under torchrun
    prepare = functools.partial(prepare_model, device=device, dtype=..., fsdp=is_distributed(), ...)
    twins = build_twins(build_model, make_u_opt, make_w_opt, prepare=prepare)   # optimizers after sharding

Order inside ``prepare_model`` (torchtitan's): device/dtype -> float8 -> activation checkpointing ->
compile -> FSDP. Float8 swaps ``nn.Linear`` for ``Float8Linear`` (same parameter names), so it must come
before FSDP wraps the parameters; compile and FSDP2 hooks compose per transformer layer.

Precision [project]: ``dtype`` is the *parameter* dtype (torchtune's convention, what the recipe's
``dtype: bf16`` already does): parameters, gradients and optimizer state are all in bf16, no autocast.
The loss is computed in float32 (``domain_loss``/``chunked_loss`` upcast the logits).

Every FSDP unit here uses ``reshard_after_forward=True``, the root included. By default FSDP2 keeps the
root's parameters (embedding, final norm, output projection) unsharded after a forward pass; after a
no-grad forward (Δ's probe pass, evaluation) nothing reshards them until that twin's next backward, and
``sync()`` then meets a full tensor on one twin and a shard on the other (seen: a size-mismatch error in
``copy_``). The cost is one more all-gather of the root's parameters per backward.

On CPU (gloo): FSDP2, activation checkpointing, compile (inductor needs a C++ compiler; ~40 s of cold
compile for a 1-layer model on 2 cores, seconds with a warm cache) and float8 (emulated) all work and are
tested (tests/test_parallel.py, tests/test_fsdp_twins.py). ``cpu_offload`` is for CUDA runs: untested here.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.distributed as dist
from torch import nn

from tandem_components.torchtune_api import (
    TransformerSelfAttentionLayer,
    compile_model,
    get_distributed_backend,
    set_activation_checkpointing,
)


# ---------------------------------------------------------------------------------------- process group
def init_distributed_if_launched(device: torch.device | str | None = None, cpu_offload: bool = False) -> bool:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Backend: gloo for CPU, nccl for CUDA (``cuda:nccl,cpu:gloo`` with ``cpu_offload``, whose optimizer
    step runs on CPU). Also selects ``cuda:<LOCAL_RANK>`` as the current CUDA device. Returns whether the
    run is distributed; a no-op (True) if the group already exists.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    device_type = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=get_distributed_backend(device_type, offload_ops_to_cpu=cpu_offload))
    return True


def local_device(device: torch.device | str) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:<LOCAL_RANK>``; anything else is unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# --------------------------------------------------------------------------------------------- float8
def float8_module_filter(module: nn.Module, fqn: str) -> bool:
    """Which Linear layers float8 training converts: not the output projection (logits stay in high
    precision: the per-domain losses Δ is made of come from them), and only layers whose both dims are
    divisible by 16 (a requirement of the float8 matmul)."""
    if fqn == "output" or fqn.endswith(".output"):
        return False
    if isinstance(module, nn.Linear):
        return module.in_features % 16 == 0 and module.out_features % 16 == 0
    return True


def apply_float8(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Swap eligible ``nn.Linear`` layers for torchao ``Float8Linear`` (dynamic tensor-wise scaling).

    Real float8 matmuls need CUDA SM >= 8.9 (H100, L4, RTX 4090). On any other device torchao's
    ``emulate=True`` is used: inputs and weights are still cast to float8 (e4m3 forward, e5m2 for
    gradients) with the same scales, and the matmul runs in the high-precision dtype. The numerics are
    float8's, the speed is not: on CPU it is a correctness check, not an optimisation.
    """
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training  # optional, heavy import

    config = Float8LinearConfig(emulate=torch.device(device).type != "cuda")
    return convert_to_float8_training(model, config=config, module_filter_fn=float8_module_filter)


# ------------------------------------------------------------------------------------ FSDP2 sharding
def apply_fsdp(model: nn.Module, device: torch.device | str = "cpu", cpu_offload: bool = False) -> nn.Module:
    """FSDP2: one ``fully_shard`` unit per transformer layer, then the root (embedding, norm, output).

    Every rank holds 1/world of each parameter, gradient and optimizer-state tensor (dim-0 shards,
    ``DTensor``). Gradients are averaged over ranks by reduce-scatter, so with equal token counts per
    rank the update equals that of one process on the global batch.

    ``cpu_offload`` (FSDP2 ``CPUOffloadPolicy``): sharded parameters, gradients and optimizer state live
    in CPU memory and the optimizer step runs on CPU; parameters are copied to the GPU for each layer's
    forward/backward. It applies to both twins alike (``build_twins`` takes one ``prepare``); the idle
    twin's state is thus on CPU too. Pass ``cpu_offload`` to ``init_distributed_if_launched`` as well.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    # An explicit mesh on the compute device: the default would pick CUDA whenever it is present.
    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    kwargs = {"mesh": mesh, "reshard_after_forward": True}  # explicit for the root too: module docstring
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in model.layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ------------------------------------------------------------------------------------ the entry point
def prepare_model(
    model: nn.Module,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    fsdp: bool = False,
    activation_checkpointing: bool = False,
    compile: bool = False,
    float8: bool = False,
    cpu_offload: bool = False,
) -> nn.Module:
    """Make a freshly built decoder ready to train; apply the same settings to both twins.

    Args:
        model: a torchtune ``TransformerDecoder`` (``models.decoder``), on CPU, not yet wrapped.
        device: where it trains (under FSDP, this rank's device: ``local_device``).
        dtype: parameter dtype (float32 or bfloat16; see the module docstring).
        fsdp: shard with FSDP2 (needs an initialised process group; any world size, 1 included).
        activation_checkpointing: recompute each transformer layer's activations in backward.
        compile: ``torch.compile`` each transformer layer (inductor; ``TORCH_COMPILE_BACKEND`` overrides).
        float8: float8 training of the eligible Linear layers (``apply_float8``).
        cpu_offload: with ``fsdp``, keep shards and optimizer state on CPU (``apply_fsdp``).

    Returns the same module, modified in place (returned for ``build_twins``' ``prepare``).
    """
    if cpu_offload and not fsdp:
        raise ValueError("cpu_offload needs fsdp=True (it is FSDP2's CPUOffloadPolicy)")
    # With CPU offload FSDP2 moves each shard to the device itself; parameters start on CPU.
    model = model.to(device=torch.device("cpu") if cpu_offload else device, dtype=dtype)
    if float8:
        apply_float8(model, device)
    if activation_checkpointing:
        set_activation_checkpointing(model, auto_wrap_policy={TransformerSelfAttentionLayer})
    if compile:
        compile_model(model, verbose=False)
    if fsdp:
        apply_fsdp(model, device, cpu_offload=cpu_offload)
    return model


def make_prepare(**settings) -> "functools.partial[nn.Module]":
    """``prepare_model`` with its settings bound: the ``prepare`` argument of ``build_twins``."""
    return functools.partial(prepare_model, **settings)


# ------------------------------------------------------------------------------ saving and logging
def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU, for saving: the full dict on rank 0, ``{}`` on the other ranks.

    Under FSDP this is a collective (all-gathers every parameter): call it on EVERY rank, then let rank 0
    write the file. Keys are the plain model's (no FSDP, compile or checkpoint-wrapper prefixes).
    """
    if not is_fsdp(model):
        return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.contiguous() for k, v in state.items()}
