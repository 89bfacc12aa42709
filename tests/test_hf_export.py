"""A trained tandem decoder exported as an HF Llama checkpoint loads in transformers (same logits) and
back through torchtune's FullModelHFCheckpointer (same weights)."""

from __future__ import annotations

import pytest
import torch

from tandem_components.models import decoder
from tandem_components.models.hf_checkpoint import export_hf_llama, load_hf_weights

CFG = dict(vocab_size=96, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, max_seq_len=64)


def _trained_looking_decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    model = decoder(**CFG)
    with torch.no_grad():  # move off the init so that a wrong permutation or key shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _trained_looking_decoder()
    out = export_hf_llama(model.state_dict(), CFG, tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    tokens = torch.randint(0, CFG["vocab_size"], (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_export_round_trips_through_torchtunes_checkpointer(tmp_path):
    model = _trained_looking_decoder()
    out = export_hf_llama(model.state_dict(), CFG, tmp_path / "hf")
    fresh = decoder(**CFG)
    load_hf_weights(fresh, out)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
