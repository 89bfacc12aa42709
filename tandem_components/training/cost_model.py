"""TANDEM's cost, in one place: what stage 1 does per episode, how long it should take, and MFU.

METHOD.md "Cost": per episode of E = ``episode_len`` steps with K = ``probe_steps`` probing steps,

    proxy u      E training steps on an α-weighted train batch                     E · t_train
    reference w  K steps, each on the same train batch AND a validation batch      K · t_reference
    Δ            2 probe forwards (both twins, no grad, on the paired probe batch) 2 · t_probe
    sync         one copy w <- u (parameters, buffers, optimizer state)            1 · t_sync

so a stage 1 of S steps costs ``S · t_train + n_ref · t_reference + 2 n_upd · t_probe + n_sync · t_sync``
where the counts follow the recipe's loop exactly (``recipes/pretrain.py``: a sync at every episode
start, a reference step while ``k < K``, an α update at ``k == K - 1``), including a last, partial
episode. A fixed-mixture run of the same proxy costs ``S · t_train``; for long runs the ratio tends to

    1 + (K / E) · t_reference / t_train + (2 / E) · t_probe / t_train + t_sync / (E · t_train)

Unit costs are seconds, measured on the same model and batches (``benchmarks/bench_overhead.py``);
``t_train`` and ``t_reference`` include drawing their batches, as the loop does.

MFU (model FLOPs utilisation): ``decoder_flops_per_token`` counts the training FLOPs of one token
(forward + backward) of torchtune's Llama-3 style decoder, ``6 N + 12 L d T`` (PaLM, appendix B;
nanoGPT's estimate): N = parameters of the matmuls (every Linear, the output projection included,
the token embedding excluded: a lookup, not a matmul), L layers, d = num_heads · head_dim, T the
sequence length (the attention scores QKᵀ and the weighted sum AV, counted without the causal
half-saving, as in PaLM).
"""

from __future__ import annotations

from dataclasses import dataclass

#: dense bf16 peak of one H100 SXM (989.4 TFLOP/s; NVIDIA's datasheet, without sparsity)
H100_BF16_PEAK_FLOPS = 989.4e12


@dataclass(frozen=True)
class UnitCosts:
    """Measured seconds per unit, on one rank (see the module docstring).

    Attributes:
        train_step_s: one optimizer step of one model on one train batch (B x T), incl. drawing it.
        reference_step_s: one reference step: forward + backward of a train batch AND a validation
            batch, one optimizer step, incl. drawing the validation batch.
        probe_forward_s: one no-grad forward of ONE twin on the probe batch (D x probe_seqs_per_domain
            sequences: D = M, or ``mixture.probe_budget // probe_seqs_per_domain`` with a bounded probe).
        sync_s: one synchronisation w <- u.
    """

    train_step_s: float
    reference_step_s: float
    probe_forward_s: float
    sync_s: float


@dataclass(frozen=True)
class EpisodeCounts:
    """How many times each unit runs in a stage 1 of ``steps`` steps (the recipe's loop)."""

    proxy_steps: int
    reference_steps: int
    probe_forwards: int
    syncs: int
    updates: int


def episode_counts(steps: int, episode_len: int, probe_steps: int) -> EpisodeCounts:
    """Counts of each unit over ``steps`` proxy steps with E = ``episode_len``, K = ``probe_steps``.

    The last episode may be partial (r = steps mod E steps): it syncs if r > 0, takes min(r, K)
    reference steps, and updates α only if r >= K.
    """
    if steps < 0 or episode_len < 1 or not 1 <= probe_steps <= episode_len:
        raise ValueError(f"expected steps >= 0 and 1 <= K <= E; got steps={steps}, E={episode_len}, K={probe_steps}")
    full, rest = divmod(steps, episode_len)
    updates = full + (1 if rest >= probe_steps else 0)
    return EpisodeCounts(
        proxy_steps=steps,
        reference_steps=full * probe_steps + min(rest, probe_steps),
        probe_forwards=2 * updates,
        syncs=full + (1 if rest else 0),
        updates=updates,
    )


def predict_stage1_time(units: UnitCosts, steps: int, episode_len: int, probe_steps: int) -> float:
    """Predicted seconds of a TANDEM stage 1 (the training loop; no evaluation, no I/O)."""
    n = episode_counts(steps, episode_len, probe_steps)
    return (
        n.proxy_steps * units.train_step_s
        + n.reference_steps * units.reference_step_s
        + n.probe_forwards * units.probe_forward_s
        + n.syncs * units.sync_s
    )


def predict_fixed_time(units: UnitCosts, steps: int) -> float:
    """Predicted seconds of a fixed-mixture run of the same proxy, steps and batch."""
    return steps * units.train_step_s


def predict_overhead_ratio(units: UnitCosts, steps: int, episode_len: int, probe_steps: int) -> float:
    """Predicted TANDEM / fixed wall-time ratio."""
    return predict_stage1_time(units, steps, episode_len, probe_steps) / predict_fixed_time(units, steps)


# ---------------------------------------------------------------------------------------------- MFU
def decoder_matmul_params(
    vocab_size: int, num_layers: int, num_heads: int, num_kv_heads: int, embed_dim: int,
    intermediate_dim: int | None = None,
) -> int:
    """N: weights of every Linear of ``tandem_components.models.decoder`` (torchtune's llama3; no biases).

    Per layer: q and o (d x d), k and v (d x kv_heads·head_dim), the SwiGLU MLP (3 x d x hidden);
    plus the output projection (d x V). ``hidden`` defaults to torchtune's ``scale_hidden_dim_for_mlp``:
    4d · 2/3 rounded up to a multiple of 256.
    """
    head_dim = embed_dim // num_heads
    if intermediate_dim is None:
        hidden = int(2 * (4 * embed_dim) / 3)
        intermediate_dim = 256 * ((hidden + 255) // 256)
    attention = 2 * embed_dim * embed_dim + 2 * embed_dim * num_kv_heads * head_dim
    mlp = 3 * embed_dim * intermediate_dim
    return num_layers * (attention + mlp) + embed_dim * vocab_size


def decoder_flops_per_token(
    vocab_size: int, num_layers: int, num_heads: int, num_kv_heads: int, embed_dim: int, seq_len: int,
    intermediate_dim: int | None = None,
) -> float:
    """Training FLOPs (forward + backward) per token: ``6 N + 12 L d T`` (module docstring)."""
    n = decoder_matmul_params(vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim)
    return 6.0 * n + 12.0 * num_layers * embed_dim * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float = H100_BF16_PEAK_FLOPS) -> float:
    """Model FLOPs utilisation in [0, 1]: achieved training FLOP/s over the device's peak."""
    return tokens_per_second * flops_per_token / peak_flops


def tandem_flops_per_proxy_token(flops_per_token: float, episode_len: int, probe_steps: int,
                                 val_batch_ratio: float = 1.0, probe_batch_ratio: float = 0.0) -> float:
    """Model FLOPs of a TANDEM stage 1 per proxy training token (for a stage-1 MFU).

    Per episode: E proxy steps (1 each), K reference steps of (1 + ``val_batch_ratio``) batches, and 2
    no-grad probe forwards of ``probe_batch_ratio`` train batches each (a forward is 1/3 of a step).
    """
    per_episode = episode_len + probe_steps * (1.0 + val_batch_ratio) + 2.0 * probe_batch_ratio / 3.0
    return flops_per_token * per_episode / episode_len
