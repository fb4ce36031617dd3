"""Weight stability between a rewind point and the end of training, and across rounds."""

from __future__ import annotations

import torch

from ..pruning.masks import Masks


def weight_stability(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], masks: Masks) -> dict[str, dict]:
    """Per masked tensor and overall, over the kept weights only:

    * ``sign_agreement``: fraction of kept weights whose sign is the same at start and end;
    * ``distance``: ‖θ_end − θ_start‖ / ‖θ_start‖;
    * ``cosine``: cosine similarity of θ_start and θ_end.
    """
    out, a_all, b_all = {}, [], []
    for name, keep in masks.items():
        a, b = start[name][keep].double(), end[name][keep].double()
        a_all.append(a)
        b_all.append(b)
        out[name] = _stats(a, b)
    out["overall"] = _stats(torch.cat(a_all), torch.cat(b_all)) if a_all else {}
    return out


def _stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    norm_a = float(a.norm())
    return {
        "sign_agreement": float((torch.sign(a) == torch.sign(b)).double().mean()) if len(a) else float("nan"),
        "distance": float((b - a).norm()) / norm_a if norm_a else float("nan"),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if len(a) else float("nan"),
    }
