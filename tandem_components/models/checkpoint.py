"""Final model weights: safetensors plus the model config that rebuilds them, written atomically.

(Full training state for resuming lives in ``training/state.py``.)
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tandem_components.atomic import atomic_path, atomic_write_text
from tandem_components.errors import TandemError


def save_model_weights(state_dict: dict[str, torch.Tensor], path: str | Path, model_cfg: DictConfig) -> Path:
    """Write a full (unsharded, CPU) state dict to ``path`` and ``model_config.yaml`` beside it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata={"format": "pt"})
    atomic_write_text(
        path.parent / "model_config.yaml", yaml.safe_dump(OmegaConf.to_container(model_cfg, resolve=True))
    )
    return path


def load_model_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load safetensors weights into an (unsharded) model; one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TandemError(f"{path}: model weights not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise TandemError(f"{path}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    bad = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
    if bad or set(state) - set(expected):
        raise TandemError(f"{path}: weights do not match the model config (first mismatch: {(bad or sorted(set(state) - set(expected)))[0]})")
    model.load_state_dict(state)
    return model
