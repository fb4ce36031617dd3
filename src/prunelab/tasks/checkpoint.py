"""Model weights as safetensors files: no pickle, loading runs no code."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import PrunelabError


def save_weights(model: nn.Module, path: Path, metadata: dict | None = None) -> None:
    """Write ``model``'s state dict atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"prunelab": json.dumps(metadata or {}, default=str)})
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> dict:
    """Load weights written by :func:`save_weights`; returns the metadata."""
    path = Path(path)
    if not path.is_file():
        raise PrunelabError(f"{path}: no such weights file")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise PrunelabError(f"{path}: not a readable safetensors file ({exc})") from exc
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise PrunelabError(f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return json.loads((fh.metadata() or {}).get("prunelab", "{}"))
