"""Model builders for configs (``model._component_``).

``decoder`` is torchtune's Llama-3 style decoder-only transformer (RMSNorm, RoPE, SwiGLU, GQA) with the
sizes given in the config: the paper's "160M GPT-style" proxy is ``num_layers=12, embed_dim=768,
num_heads=12``; the tiny CPU configs use 2-3 layers of width 128-192.
"""

from __future__ import annotations

from torch import nn

from tandem_components.torchtune_api import llama3


def decoder(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    intermediate_dim: int | None = None,
    rope_base: int = 10_000,
    norm_eps: float = 1e-5,
) -> nn.Module:
    """A decoder-only LM mapping (B, T) token ids to (B, T, vocab_size) logits."""
    return llama3(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, max_seq_len=max_seq_len, intermediate_dim=intermediate_dim,
        rope_base=rope_base, norm_eps=norm_eps,
    )
