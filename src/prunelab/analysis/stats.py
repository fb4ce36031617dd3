"""Uncertainty over seeds: bootstrap intervals, paired tests, Holm correction (arXiv 1904.10922)."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from ..errors import PrunelabError


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 9999,
                 seed: int = 0, method: str = "BCa") -> tuple[float, float, float]:
    """(mean, low, high): the mean with a bootstrap confidence interval (scipy.stats.bootstrap).

    Needs at least 2 values; with identical values the interval is the point.
    """
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or len(data) < 2:
        raise PrunelabError(f"a bootstrap interval needs at least 2 values, got {len(data)}")
    mean = float(data.mean())
    if np.all(data == data[0]):
        return mean, mean, mean
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                             method=method, random_state=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_test(a: Sequence[float], b: Sequence[float], method: Literal["wilcoxon", "permutation"] = "permutation",
                *, seed: int = 0) -> float:
    """Two-sided p-value that paired samples ``a`` and ``b`` (same seeds) differ.

    ``permutation`` flips the sign of each paired difference (exact for up to
    13 pairs — every one of the 2^n flips, enumerated here as scipy.stats.permutation_test
    would, without its overhead — else 9,999 random flips); ``wilcoxon`` is the signed-rank test.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise PrunelabError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    diff = a - b
    if np.all(diff == 0):
        return 1.0
    if method == "permutation" and 2 ** len(diff) <= 9999:
        return _exact_sign_flip(diff)
    from scipy import stats

    if method == "wilcoxon":
        return float(stats.wilcoxon(a, b).pvalue)
    result = stats.permutation_test((diff,), np.mean, permutation_type="samples", alternative="two-sided",
                                    n_resamples=9999, random_state=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _exact_sign_flip(diff: np.ndarray) -> float:
    """Two-sided p of the mean under all 2^n sign flips, with scipy.stats.permutation_test's tie
    tolerance and definition (twice the smaller tail, at most 1)."""
    n = len(diff)
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    null = (signs * diff).mean(axis=1)
    observed = diff.mean()
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less = np.count_nonzero(null <= observed + gamma) / len(null)
    greater = np.count_nonzero(null >= observed - gamma) / len(null)
    return float(min(1.0, 2 * min(less, greater)))
