"""The metrics particle physicists quote for classifiers and energy regression.

* ROC AUC and background rejection ``1 / FPR`` at fixed signal efficiencies
  (generic two-class metrics: :mod:`prunelab.tasks.roc`, re-exported here);
* energy resolution per energy bin: the mean (bias) and standard deviation
  (resolution) of ``E_pred / E_true``;
* incident-energy ranges: default edges covering a set of showers, and a mask per range.
"""

from __future__ import annotations

import numpy as np

from ..errors import PrunelabError
from ..tasks.roc import EFFICIENCIES, rejection, roc_auc  # noqa: F401 (generic two-class metrics, re-exported)

ENERGY_BINS = (1.0, 10.0, 30.0, 60.0, 100.0)  # GeV: bin edges for per-energy views


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


def default_energy_edges(*energies: np.ndarray) -> tuple[float, ...]:
    """The per-energy bins of this repo (1–10–30–60–100 GeV) when the showers lie within them; otherwise one
    range per decade of GeV covering them."""
    pooled = np.concatenate([np.asarray(e, dtype=np.float64).reshape(-1) for e in energies])
    low, high = float(pooled.min()), float(pooled.max())
    if ENERGY_BINS[0] <= low and high <= ENERGY_BINS[-1]:
        return tuple(ENERGY_BINS)
    start, stop = np.floor(np.log10(low)), np.ceil(np.log10(high))
    if stop <= start:
        stop = start + 1
    return tuple(float(10.0**k) for k in np.arange(start, stop + 1))


def energy_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g} GeV"


def energy_masks(energy: np.ndarray, edges) -> list[tuple[str, np.ndarray]]:
    """``[("all", everything), ("1-10 GeV", mask), ...]``: each range holds low ≤ E < high, the last also E = high."""
    energy = np.asarray(energy, dtype=np.float64)
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:])) or edges[0] <= 0:
        raise PrunelabError(f"energy bins {edges}: need at least two increasing, positive edges (GeV)")
    out = [("all", np.ones(len(energy), dtype=bool))]
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        upper = energy <= high if k == len(edges) - 2 else energy < high
        out.append((energy_label(low, high), (energy >= low) & upper))
    return out
