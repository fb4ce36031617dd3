"""Uncertainty over seeds: bootstrap intervals, paired tests, Holm correction (arXiv 1904.10922)."""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

from ..caches import CACHES
from ..errors import PrunelabError


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 9999,
                 seed: int = 0, method: str = "BCa") -> tuple[float, float, float]:
    """(mean, low, high): the mean with a bootstrap confidence interval, as
    ``scipy.stats.bootstrap(np.mean, method=..., rng=default_rng(seed))`` gives it (see
    :func:`bootstrap_cis`).

    Needs at least 2 values; with identical values the interval is the point.
    """
    return bootstrap_cis([values], confidence, n_resamples=n_resamples, seed=seed, method=method)[0]


_BATCH = 1 << 22  # resample indices drawn at a time (32 MB): memory stays flat with many seeds


def bootstrap_cis(columns: Sequence[Sequence[float]], confidence: float = 0.95, *, n_resamples: int = 9999,
                  seed: int = 0, method: str = "BCa") -> list[tuple[float, float, float]]:
    """(mean, low, high) of each column, each with its bootstrap interval of the mean.

    Each column gets the interval ``scipy.stats.bootstrap((column,), np.mean, method=method,
    n_resamples=n_resamples, rng=np.random.default_rng(seed))`` gives it (``BCa`` or
    ``percentile``): the same resample indices, drawn from the same generator, and scipy's
    formulas (Efron & Tibshirani 14.3, 15.4); the resample means are scipy's bit for bit, the
    jackknife of a mean is closed-form (equal up to rounding; tests/test_analysis.py). Faster than
    calling scipy per column: columns of one length share one set of draws, drawn in batches, so
    memory stays flat — a report of a study with a thousand seeds computes hundreds of these.
    """
    from scipy.special import ndtr, ndtri

    if method not in ("BCa", "percentile"):
        raise PrunelabError(f"bootstrap method {method!r} must be BCa or percentile")
    data = [np.asarray(c, dtype=float) for c in columns]
    for column in data:
        if column.ndim != 1 or len(column) < 2:
            raise PrunelabError(f"a bootstrap interval needs at least 2 values, got {column.size}")
    out: list = [None] * len(data)
    by_length: dict[int, list[int]] = {}
    for k, column in enumerate(data):
        if np.all(column == column[0]):
            out[k] = (float(column.mean()),) * 3
        else:
            by_length.setdefault(len(column), []).append(k)
    alpha = (1 - confidence) / 2
    for n, ks in by_length.items():
        rng = np.random.default_rng(seed)
        theta_b = np.empty((n_resamples, len(ks)))
        rows = max(1, _BATCH // n)
        for start in range(0, n_resamples, rows):  # the generator's stream does not depend on the batch
            draws = rng.integers(0, n, (min(rows, n_resamples - start), n))
            for j, k in enumerate(ks):  # each row's mean sums as scipy's does: the same bits
                theta_b[start:start + len(draws), j] = data[k][draws].mean(axis=-1)
        for j, k in enumerate(ks):
            column, dist = data[k], theta_b[:, j]
            theta = column.mean()
            if method == "percentile":
                levels = [alpha, 1 - alpha]
            else:
                z0 = ndtri((np.count_nonzero(dist < theta) + np.count_nonzero(dist <= theta)) / (2 * n_resamples))
                jack = (column.sum() - column) / (n - 1)  # the mean without each value
                u = (n - 1) * (jack.mean() - jack)
                a_hat = (np.sum(u ** 3) / n ** 3) / (6 * (np.sum(u ** 2) / n ** 2) ** 1.5)
                z = ndtri(alpha)
                levels = [ndtr(z0 + (z0 + z) / (1 - a_hat * (z0 + z))), ndtr(z0 + (z0 - z) / (1 - a_hat * (z0 - z)))]
            low, high = np.quantile(dist, levels)
            out[k] = (float(theta), float(low), float(high))
    return out


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
    if method == "wilcoxon":
        from scipy import stats

        return float(stats.wilcoxon(a, b).pvalue)
    return random_sign_flip(diff, 9999, seed)


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


def random_sign_flip(diff: np.ndarray, n_resamples: int, seed: int, alternative: str = "two-sided") -> float:
    """p of the mean under ``n_resamples`` random sign flips (``two-sided`` or ``greater``):
    scipy.stats.permutation_test's (``permutation_type="samples"``, ``rng=np.random.default_rng(seed)``)
    — its flips, drawn one 32-bit word per value as its ``Generator.permuted`` draws them, its tie
    tolerance and its (count + 1) / (n + 1) — in batches, without its overhead (tests compare).
    scipy's call takes seconds at a thousand seeds, and a report of such a study makes dozens
    (docs/architecture.md)."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    observed = diff.mean()
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less = greater = 0
    rows = max(1, _BATCH // n)
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        kept = (rng.integers(0, 2 ** 32, size=(b, n), dtype=np.uint32) & 1).astype(bool)
        null = np.where(kept, diff, -diff).mean(axis=1)  # ±diff exactly: the sums are scipy's
        less += np.count_nonzero(null <= observed + gamma)
        greater += np.count_nonzero(null >= observed - gamma)
    if alternative == "greater":
        return float((greater + 1) / (n_resamples + 1))
    return float(min(1.0, 2 * min((less + 1) / (n_resamples + 1), (greater + 1) / (n_resamples + 1))))


# ---------------------------------------------------------------- the mean over seeds with its interval

# Seeds from which "auto" intervals are bootstrapped. Measured coverage of nominal 95 % intervals
# (benchmarks/interval_coverage.py): BCa 0.73 / 0.83 / 0.89 / 0.91 at 3 / 5 / 10 / 20 values of a
# normal accuracy, Student t 0.94–0.96 throughout; only from ~30 does the bootstrap catch up.
BOOTSTRAP_FROM = 30


INTERVALS = ("auto", "t", "bootstrap")


def check_interval(method: str) -> str:
    if method not in INTERVALS:
        raise PrunelabError(f"interval method {method!r} must be one of {', '.join(INTERVALS)}")
    return method


def mean_ci(values: list[float], confidence: float = 0.95, method: str = "auto",
            bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and confidence interval over seeds.

    ``bounds``: the metric's range (accuracy, recall, AUC: (0, 1)); the interval
    is clipped to it. A t interval is symmetric and with few seeds near a bound
    it crosses it (worst-class recall 0.99 ± 0.05); the true mean lies inside
    the range, so clipping never loses coverage, it only drops impossible values.

    ``method``: ``"bootstrap"`` (BCa, scipy.stats.bootstrap), ``"t"`` (Student
    t), or ``"auto"``: bootstrap from 30 values, t below. With few seeds a
    bootstrap can only resample a handful of distinct values and its interval is
    too narrow (benchmarks/interval_coverage.py measures it); the t interval is
    the honest one there.
    """
    return mean_cis([values], confidence, method, bounds)[0]


def mean_cis(columns: list[list[float]], confidence: float = 0.95, method: str = "auto",
             bounds: tuple[float, float] | None = None) -> list[tuple[float, float, float]]:
    """:func:`mean_ci` of each column. Bootstrapped columns of one length share their resamples
    (:func:`bootstrap_cis`), and recent answers are remembered, so the
    report's plots of one study, which ask for the same levels, bootstrap each once."""
    check_interval(method)
    data = [np.asarray(c, dtype=float) for c in columns]
    key = (confidence, method, tuple((c.tobytes()) for c in data))
    remembered = CACHES.mean_cis  # oldest first
    answer = remembered.get(key)
    if answer is None:
        answer = _mean_cis(data, confidence, method)
        remembered[key] = answer
        while len(remembered) > 256:
            remembered.pop(next(iter(remembered)))
    out = []
    for mean, lo, hi in answer:
        if bounds is not None and lo == lo:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        out.append((mean, lo, hi))
    return out


def _mean_cis(data: list[np.ndarray], confidence: float, method: str) -> list[tuple[float, float, float]]:
    from .tdist import t_quantile

    out: list = [None] * len(data)
    boot = []
    for k, values in enumerate(data):
        n = len(values)
        mean = float(sum(values.tolist()) / n)
        if n < 2:
            out[k] = (mean, math.nan, math.nan)
        elif method == "bootstrap" or (method == "auto" and n >= BOOTSTRAP_FROM):
            boot.append(k)
        else:
            sd = float(np.std(values, ddof=1))  # scipy's tstd warns on equal values, which 3 seeds often give
            half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
            out[k] = (mean, float(mean - half), float(mean + half))
    if boot:
        for k, (mean, lo, hi) in zip(boot, bootstrap_cis([data[k] for k in boot], confidence)):
            out[k] = (mean, float(lo), float(hi))
    return out
