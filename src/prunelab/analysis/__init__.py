"""Analyses over masks, predictions and study tables.

Names are imported on first use (PEP 562): a run's summary needs only a few of them, and
scipy.stats, scikit-learn and Fairlearn cost seconds to import.
"""

from __future__ import annotations

from .._lazy import lazy_names

_WHERE = {
    "ClassImpact": "fairness", "group_metrics": "fairness", "per_class_impact": "fairness",
    "chance_jaccard": "masks", "chance_overlap": "masks", "emergent_structure": "masks", "jaccard": "masks",
    "similarity_matrix": "masks", "pareto_front": "pareto", "select_operating_point": "pareto",
    "Barrier": "stability", "error_barrier": "stability", "interpolate": "stability", "weight_stability": "stability",
    "bootstrap_ci": "stats", "holm": "stats", "paired_test": "stats",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
