"""Saving trained weights: safetensors plus the model config that rebuilds them, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from tandem_components.atomic import atomic_path, atomic_write_text


def save_model_weights(model: torch.nn.Module, path: str | Path, model_cfg: DictConfig) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``model_config.yaml`` beside it."""
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_text(
        path.parent / "model_config.yaml", yaml.safe_dump(OmegaConf.to_container(model_cfg, resolve=True))
    )
    return path
