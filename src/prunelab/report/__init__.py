"""Plots (matplotlib figures) and the self-contained HTML report of a study store."""

from .html import build_report
from .plots import (accuracy_vs_remaining, disparity_vs_remaining, mask_similarity, pareto_plot, per_class_heatmap,
                    stability_plot, structure_plot)

__all__ = ["accuracy_vs_remaining", "build_report", "disparity_vs_remaining", "mask_similarity", "pareto_plot",
           "per_class_heatmap", "stability_plot", "structure_plot"]
