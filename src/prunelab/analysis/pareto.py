"""Pareto operating points over efficiency, accuracy and a disparity metric."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_front(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of the non-dominated rows of ``points`` (n × d).

    A point dominates another if it is at least as good on every axis and
    strictly better on one; ``maximize[j]`` says which direction is good.
    O(n²) comparisons: fine for the thousands of states a study has.
    """
    pts = np.asarray(points, dtype=float)
    signs = np.where(np.asarray(maximize), 1.0, -1.0)
    p = pts * signs  # now larger is better on every axis
    n = len(p)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated = np.all(p >= p[i], axis=1) & np.any(p > p[i], axis=1)
        if dominated.any():
            keep[i] = False
    return np.flatnonzero(keep)


def select_operating_point(rows: list[dict], *, efficiency: str, accuracy: str, dense_accuracy: float,
                           max_accuracy_drop: float, worst: str | None = None, dense_worst: float | None = None,
                           max_worst_drop: float | None = None) -> dict:
    """The most efficient row whose accuracy drop (and worst-group drop) stay within limits.

    Returns the chosen row with and without the fairness constraint, and a
    sentence saying whether adding it changed the choice.
    """

    def best(candidates):
        return max(candidates, key=lambda r: (r[efficiency], r[accuracy]), default=None)

    eps = 1e-12  # limits are inclusive; 0.955 - 0.945 must count as a 0.01 drop
    accurate = [r for r in rows if dense_accuracy - r[accuracy] <= max_accuracy_drop + eps]
    without = best(accurate)
    with_fair = without
    if worst is not None:
        fair = [r for r in accurate if dense_worst - r[worst] <= max_worst_drop + eps]
        with_fair = best(fair)
    changed = with_fair is not without
    if without is None:
        statement = "no candidate meets the accuracy constraint"
    elif not changed:
        statement = "adding the fairness constraint does not change the chosen point"
    elif with_fair is None:
        statement = "no candidate meets the fairness constraint; without it the choice would stand"
    else:
        statement = (f"adding the fairness constraint changes the choice: {efficiency} "
                     f"{without[efficiency]:.4g} → {with_fair[efficiency]:.4g}")
    return {"without_fairness": without, "with_fairness": with_fair, "changed": changed, "statement": statement}
