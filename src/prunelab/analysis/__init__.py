"""Analyses over masks, predictions and study tables (issue #6; the report comes later)."""

from .fairness import ClassImpact, group_metrics, per_class_impact
from .masks import chance_jaccard, emergent_structure, jaccard, similarity_matrix
from .pareto import pareto_front, select_operating_point
from .stability import Barrier, error_barrier, interpolate, weight_stability
from .stats import bootstrap_ci, holm, paired_test

__all__ = [
    "ClassImpact", "bootstrap_ci", "chance_jaccard", "emergent_structure", "group_metrics", "holm", "jaccard",
    "paired_test", "pareto_front", "per_class_impact", "select_operating_point", "similarity_matrix", "weight_stability",
    "Barrier", "error_barrier", "interpolate",
]
