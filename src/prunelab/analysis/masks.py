"""Mask similarity (Jaccard beside chance) and emergent structure (beside random pruning)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PrunelabError
from ..pruning.masks import Masks


def jaccard(a: Masks, b: Masks) -> dict[str, float]:
    """Jaccard similarity |A∩B| / |A∪B| of the kept sets, per tensor and ``"overall"``.

    The Jaccard distance of the design notes is 1 − this.
    """
    if set(a) != set(b):
        raise PrunelabError(f"masks cover different tensors: {sorted(set(a) ^ set(b))}")
    out, inter_all, union_all = {}, 0, 0
    for name in a:
        if a[name].shape != b[name].shape:
            raise PrunelabError(f"mask {name!r}: shapes {tuple(a[name].shape)} and {tuple(b[name].shape)} differ")
        inter = int((a[name] & b[name]).sum())
        union = int((a[name] | b[name]).sum())
        out[name] = inter / union if union else 1.0
        inter_all, union_all = inter_all + inter, union_all + union
    out["overall"] = inter_all / union_all if union_all else 1.0
    return out


def chance_jaccard(p: float, q: float) -> float:
    """Expected Jaccard similarity of independent random masks keeping fractions p and q: pq / (p + q − pq)."""
    denominator = p + q - p * q
    return p * q / denominator if denominator else 1.0


def similarity_matrix(masks: dict[str, Masks]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pairwise overall Jaccard between labelled mask sets, and the chance level of each pair.

    Mask sets over different tensors (a transferred model) have no similarity: NaN.
    """
    labels = list(masks)
    n = len(labels)
    sim, chance = np.ones((n, n)), np.ones((n, n))
    keep = {k: sum(int(m.sum()) for m in v.values()) / sum(m.numel() for m in v.values()) for k, v in masks.items()}
    for i in range(n):
        for j in range(i + 1, n):
            a, b = masks[labels[i]], masks[labels[j]]
            sim[i, j] = sim[j, i] = jaccard(a, b)["overall"] if set(a) == set(b) else np.nan
            chance[i, j] = chance[j, i] = chance_jaccard(keep[labels[i]], keep[labels[j]])
    return labels, sim, chance


@dataclass(frozen=True)
class Structure:
    """Fraction of fully pruned groups in one tensor, beside random pruning's expectation."""

    tensor: str
    group: str  # "output units", "input units", "kernels"
    size: int  # weights per group
    fraction: float
    expected: float  # s ** size at the tensor's sparsity s

    @property
    def excess(self) -> float:
        return self.fraction - self.expected


def emergent_structure(masks: Masks) -> list[Structure]:
    """Fully pruned rows/columns (linear) or output/input channels and kernels (conv)."""
    out = []
    for name, keep in masks.items():
        pruned = ~keep.bool()
        s = float(pruned.float().mean())
        if keep.dim() < 2:
            continue
        groups = {"output units": pruned.reshape(keep.shape[0], -1),
                  "input units": pruned.transpose(0, 1).reshape(keep.shape[1], -1)}
        if keep.dim() > 2:
            groups["kernels"] = pruned.reshape(keep.shape[0] * keep.shape[1], -1)
        for group, rows in groups.items():
            size = rows.shape[1]
            out.append(Structure(name, group, size, float(rows.all(dim=1).float().mean()), s ** size))
    return out
