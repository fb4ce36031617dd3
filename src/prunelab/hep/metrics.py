"""The metrics particle physicists quote for classifiers and energy regression.

* ROC AUC;
* background rejection ``1 / FPR`` at fixed signal efficiencies (TPR): the
  false-positive rate is the smallest reached at a threshold keeping at least
  that efficiency (the step ROC curve, no interpolation). With no background
  event passing, the rejection is unbounded: reported as ``inf`` (JSON: null)
  with its lower bound, the number of background events;
* energy resolution per energy bin: the mean (bias) and standard deviation
  (resolution) of ``E_pred / E_true``.
"""

from __future__ import annotations

import numpy as np

EFFICIENCIES = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ENERGY_BINS = (1.0, 10.0, 30.0, 60.0, 100.0)  # GeV: bin edges for per-energy views


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


def energy_bin_labels(energy: np.ndarray, edges=ENERGY_BINS) -> np.ndarray:
    """A label per event, e.g. ``"10-30 GeV"`` (the last bin includes its upper edge)."""
    energy = np.asarray(energy, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, len(edges) - 2)
    names = np.array([f"{edges[i]:g}-{edges[i + 1]:g} GeV" for i in range(len(edges) - 1)])
    return names[index]


def energy_resolution(e_true: np.ndarray, e_pred: np.ndarray, edges=ENERGY_BINS) -> list[dict]:
    """Per energy bin: events, bias ``mean(E_pred/E_true) - 1`` and resolution ``std(E_pred/E_true)``."""
    e_true, e_pred = np.asarray(e_true, dtype=np.float64), np.asarray(e_pred, dtype=np.float64)
    ratio = e_pred / e_true
    labels = energy_bin_labels(e_true, edges)
    rows = []
    for i in range(len(edges) - 1):
        name = f"{edges[i]:g}-{edges[i + 1]:g} GeV"
        r = ratio[labels == name]
        rows.append({"bin": name, "events": int(r.size),
                     "bias": float(r.mean() - 1) if r.size else float("nan"),
                     "resolution": float(r.std(ddof=1)) if r.size > 1 else float("nan")})
    return rows
