"""Weight stability between a rewind point and the end of training, and across rounds."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PrunelabError
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


# ---------------------------------------------------------------- linear mode connectivity


@dataclass(frozen=True)
class Barrier:
    """Test error along the straight line between two trained copies (Frankle et al. 2020, arXiv 1912.05671)."""

    alphas: tuple[float, ...]  # 0: copy a, 1: copy b
    errors: tuple[float, ...]  # test error (1 - accuracy) at each alpha
    barrier: float  # max error on the path minus the mean of the two endpoints' errors (instability)


def interpolate(a, b, alpha: float):
    """The snapshot (1 - alpha) * a + alpha * b; floating tensors are interpolated, integer buffers
    (batch-norm counters) taken from ``a``. Both must share architecture and masks."""
    if a.spec != b.spec:
        raise PrunelabError("interpolation: the two states have different architectures")
    if a.masks.keys() != b.masks.keys() or any(not torch.equal(a.masks[k], b.masks[k]) for k in a.masks):
        raise PrunelabError("interpolation: the two states have different masks (copies of one state share them)")
    weights = {k: torch.lerp(v, b.weights[k], alpha) if v.is_floating_point() else v for k, v in a.weights.items()}
    return a.evolve(weights=weights, optimizer=None)


def error_barrier(a, b, split, class_names, points: int = 11) -> Barrier:
    """Evaluate ``points`` evenly spaced models between snapshots ``a`` and ``b`` on ``split``.

    A barrier near 0 means the two copies lie in one linearly connected basin: the network is
    *stable* to the data order from the state they were copied from — the condition under
    which rewinding to that state finds matching sparse subnetworks.
    """
    from ..tasks.evaluation import evaluate

    if points < 2:
        raise PrunelabError(f"interpolation needs at least 2 points, got {points}")
    alphas = tuple(i / (points - 1) for i in range(points))
    errors = tuple(1.0 - evaluate(interpolate(a, b, t).model(), split, class_names).accuracy for t in alphas)
    return Barrier(alphas, errors, max(errors) - (errors[0] + errors[-1]) / 2)
