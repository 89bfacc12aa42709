"""Models: the decoder builder that configs name in ``model._component_``, its weights file, and HF
checkpoints in and out (Llama/Qwen2-style, SmolLM2)."""

from tandem_components.models.builders import decoder
from tandem_components.models.checkpoint import load_model_weights, save_model_weights
from tandem_components.models.hf_checkpoint import (
    convert_gguf_to_hf,
    export_hf_llama,
    hf_llama,
    load_hf_weights,
    save_hf_checkpoint,
    smollm2_gguf_path,
    tandem_pretrained,
)

__all__ = [
    "decoder",
    "load_model_weights",
    "save_model_weights",
    "hf_llama",
    "export_hf_llama",
    "load_hf_weights",
    "save_hf_checkpoint",
    "convert_gguf_to_hf",
    "smollm2_gguf_path",
    "tandem_pretrained",
]
