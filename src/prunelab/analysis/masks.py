"""Mask similarity (Jaccard beside chance) and emergent structure (beside random pruning)."""

from __future__ import annotations

import math
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
    """Jaccard of independent Bernoulli masks keeping fractions p and q of one tensor: pq / (p + q − pq).

    Only right for a single tensor; masks pruned to different densities per
    layer need :func:`chance_overlap`, which is larger.
    """
    denominator = p + q - p * q
    return p * q / denominator if denominator else 1.0


@dataclass(frozen=True)
class Chance:
    """The Jaccard of two independent random masks with the same per-tensor kept counts as ``a`` and ``b``."""

    mean: float
    sd: float
    per_tensor: dict[str, float]  # exact expectation per tensor (hypergeometric)
    draws: int  # simulated pairs behind ``mean``/``sd`` of the overall value

    def z(self, observed: float) -> float:
        return (observed - self.mean) / self.sd if self.sd > 0 else (0.0 if observed == self.mean else math.inf)


def _tensor_expectation(n: int, ka: int, kb: int) -> float:
    """E[|A∩B| / |A∪B|] for uniformly random subsets of sizes ka and kb of n items (exact: the
    intersection is hypergeometric). Summed over the intersections within 12 SD of the mean — the
    rest of the distribution weighs below 1e-30 — from log-binomials, so a 10^6-weight tensor costs
    milliseconds, not the seconds a pmf over the whole support takes."""
    from scipy.special import gammaln

    if ka == 0 and kb == 0:
        return 1.0
    low, high = max(0, ka + kb - n), min(ka, kb)
    mean = ka * kb / n
    sd = math.sqrt(ka * kb * (n - ka) * (n - kb) / (n * n * (n - 1))) if n > 1 else 0.0
    i = np.arange(max(low, math.floor(mean - 12 * sd) - 1), min(high, math.ceil(mean + 12 * sd) + 1) + 1,
                  dtype=np.float64)

    def log_comb(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    log_pmf = log_comb(ka, i) + log_comb(n - ka, kb - i) - log_comb(n, kb)
    pmf = np.exp(log_pmf)
    return float(np.sum(pmf * i / (ka + kb - i)) / np.sum(pmf))


def chance_overlap(a: dict[str, int], b: dict[str, int], sizes: dict[str, int], *, draws: int = 4000,
                   seed: int = 0) -> Chance:
    """Chance level of the Jaccard between masks keeping ``a[t]`` and ``b[t]`` of ``sizes[t]`` weights in
    each tensor t, placed at random and independently (what random pruning at the same per-layer
    sparsity gives). Per tensor the expectation is exact; the overall value (intersections and unions
    summed over tensors) has no closed form and is simulated with ``draws`` seeded hypergeometric draws."""
    rng = np.random.default_rng(seed)
    inter = np.zeros(draws)
    union = np.zeros(draws)
    per_tensor = {}
    for name, n in sizes.items():
        ka, kb = int(a[name]), int(b[name])
        if not (0 <= ka <= n and 0 <= kb <= n):
            raise PrunelabError(f"tensor {name!r}: kept counts {ka} and {kb} must lie in 0..{n}")
        per_tensor[name] = _tensor_expectation(n, ka, kb)
        draw = rng.hypergeometric(ka, n - ka, kb, size=draws) if ka and kb and n else np.zeros(draws)
        inter += draw
        union += ka + kb - draw
    overall = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return Chance(float(overall.mean()), float(overall.std(ddof=1)), per_tensor, draws)


def _counts(masks: Masks) -> tuple[dict[str, int], dict[str, int]]:
    return {k: int(m.sum()) for k, m in masks.items()}, {k: m.numel() for k, m in masks.items()}


def similarity_matrix(masks: dict[str, Masks]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise overall Jaccard between labelled mask sets, the chance level of each pair (random masks
    with the same per-tensor kept counts: :func:`chance_overlap`) and the z-score against it.

    Mask sets over different tensors (a transferred model) have no similarity: NaN.
    """
    labels = list(masks)
    n = len(labels)
    sim, chance, z = np.ones((n, n)), np.ones((n, n)), np.zeros((n, n))
    counts = {k: _counts(v) for k, v in masks.items()}
    for i in range(n):
        for j in range(i + 1, n):
            a, b = masks[labels[i]], masks[labels[j]]
            if set(a) != set(b) or any(a[t].shape != b[t].shape for t in a):
                sim[i, j] = sim[j, i] = chance[i, j] = chance[j, i] = z[i, j] = z[j, i] = np.nan
                continue
            sim[i, j] = sim[j, i] = jaccard(a, b)["overall"]
            c = chance_overlap(counts[labels[i]][0], counts[labels[j]][0], counts[labels[i]][1])
            chance[i, j] = chance[j, i] = c.mean
            z[i, j] = z[j, i] = c.z(sim[i, j])
    return labels, sim, chance, z


@dataclass(frozen=True)
class Structure:
    """Fraction of fully pruned groups in one tensor, beside random pruning's expectation."""

    tensor: str
    group: str  # linear: "output units", "input units"; conv: "filters", "input channels", "kernels"
    size: int  # weights per group
    fraction: float
    expected: float  # random pruning of exactly the tensor's pruned count: C(m, g) / C(n, g)

    @property
    def excess(self) -> float:
        return self.fraction - self.expected


def fully_pruned_chance(n: int, pruned: int, size: int) -> float:
    """The chance that a given group of ``size`` weights is entirely pruned when ``pruned`` of the tensor's
    ``n`` weights are pruned uniformly at random: C(pruned, size) / C(n, size) (hypergeometric; s^size
    is its Bernoulli approximation, too high or too low when groups are small or tensors sparse)."""
    from scipy.special import gammaln

    if pruned < size:
        return 0.0
    if pruned >= n:
        return 1.0
    return float(np.exp(gammaln(pruned + 1) - gammaln(pruned - size + 1) - gammaln(n + 1) + gammaln(n - size + 1)))


def _groups(pruned) -> dict[str, "object"]:
    """Each kind of group of a weight tensor as rows of a 2-D view."""
    if pruned.dim() == 2:
        return {"output units": pruned, "input units": pruned.transpose(0, 1)}
    out_ch, in_ch = pruned.shape[:2]
    return {"filters": pruned.reshape(out_ch, -1), "input channels": pruned.transpose(0, 1).reshape(in_ch, -1),
            "kernels": pruned.reshape(out_ch * in_ch, -1)}


def emergent_structure(masks: Masks) -> list[Structure]:
    """Fully pruned rows/columns (linear) or filters, input channels and kernels (conv), per tensor."""
    out = []
    for name, keep in masks.items():
        if keep.dim() < 2:
            continue
        pruned = ~keep.bool()
        n, m = pruned.numel(), int(pruned.sum())
        for group, rows in _groups(pruned).items():
            size = rows.shape[1]
            out.append(Structure(name, group, size, float(rows.all(dim=1).float().mean()),
                                 fully_pruned_chance(n, m, size)))
    return out
