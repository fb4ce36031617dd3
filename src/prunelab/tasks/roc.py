"""Two-class metrics: ROC AUC and background rejection at fixed signal efficiencies.

The rejection ``1 / FPR`` at a signal efficiency (TPR) takes the smallest false-positive rate reached
at a threshold keeping at least that efficiency (the step ROC curve, no interpolation). With no
background event passing, the rejection is unbounded: reported as ``inf`` (JSON: null).
"""

from __future__ import annotations

import numpy as np

EFFICIENCIES = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def rejection(labels: np.ndarray, scores: np.ndarray, efficiencies=EFFICIENCIES) -> dict[float, float]:
    """``{efficiency: 1/FPR}`` with class 1 the signal."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return {e: float("nan") for e in efficiencies}
    fpr, tpr, _ = roc_curve(labels, scores)
    out = {}
    for e in efficiencies:
        reach = fpr[tpr >= e - 1e-12]
        f = float(reach.min()) if reach.size else 1.0
        out[e] = float("inf") if f == 0 else 1.0 / f
    return out
