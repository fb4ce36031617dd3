"""Analyses over masks, predictions and study tables.

Names are imported on first use (PEP 562): a run's summary needs only a few of them, and
scipy.stats, scikit-learn and Fairlearn cost seconds to import.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ClassImpact": "fairness", "group_metrics": "fairness", "per_class_impact": "fairness",
    "chance_jaccard": "masks", "chance_overlap": "masks", "emergent_structure": "masks", "jaccard": "masks",
    "similarity_matrix": "masks", "pareto_front": "pareto", "select_operating_point": "pareto",
    "Barrier": "stability", "error_barrier": "stability", "interpolate": "stability", "weight_stability": "stability",
    "bootstrap_ci": "stats", "holm": "stats", "paired_test": "stats",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
