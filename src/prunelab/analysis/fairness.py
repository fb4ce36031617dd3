"""Who pays for sparsity: per-class impact (arXiv 2009.09936) and user-defined groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PrunelabError
from ..tasks.evaluation import Evaluation


@dataclass(frozen=True)
class ClassImpact:
    """Per-class change of a pruned model against its dense reference (same seed)."""

    class_names: tuple[str, ...]
    dense_recall: np.ndarray
    pruned_recall: np.ndarray
    overall_delta: float  # accuracy(pruned) − accuracy(dense)
    threshold: float

    @property
    def delta(self) -> np.ndarray:
        """Δ_c = r_c(pruned) − r_c(dense)."""
        return self.pruned_recall - self.dense_recall

    @property
    def relative(self) -> np.ndarray:
        """Δ_c − Δ: how much worse than average each class fared."""
        return self.delta - self.overall_delta

    @property
    def hurt(self) -> list[str]:
        """Classes with Δ_c − Δ below −threshold (disproportionately hurt)."""
        return [n for n, r in zip(self.class_names, self.relative) if r < -self.threshold]

    def disparity(self, which: str = "pruned") -> dict[str, float]:
        r = self.pruned_recall if which == "pruned" else self.dense_recall
        return {"max_min_gap": float(r.max() - r.min()), "std": float(r.std()), "worst": float(r.min()),
                "min_max_ratio": float(r.min() / r.max()) if r.max() > 0 else 0.0}


def per_class_impact(dense: Evaluation, pruned: Evaluation, threshold: float = 0.01) -> ClassImpact:
    """Compare two evaluations on the same split (recall per class, overall accuracy)."""
    if dense.class_names != pruned.class_names:
        raise PrunelabError("the two evaluations are on different classes")
    if not np.array_equal(dense.support, pruned.support):
        raise PrunelabError("the two evaluations are on different examples (supports differ)")
    return ClassImpact(dense.class_names, dense.recall, pruned.recall, pruned.accuracy - dense.accuracy, threshold)


def group_metrics(y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence) -> dict:
    """Accuracy and per-group recall/accuracy for a user grouping (a sensitive attribute per example).

    Uses Fairlearn's ``MetricFrame``; returns overall, by-group values and the
    between-group difference and ratio of each metric.
    """
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if not len(y_true) == len(y_pred) == len(groups):
        raise PrunelabError(f"lengths differ: {len(y_true)} labels, {len(y_pred)} predictions, {len(groups)} group values")
    frame = MetricFrame(metrics={"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score},
                        y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    return {
        "overall": {k: float(v) for k, v in frame.overall.items()},
        "by_group": {str(g): {k: float(v) for k, v in row.items()} for g, row in frame.by_group.iterrows()},
        "difference": {k: float(v) for k, v in frame.difference().items()},
        "ratio": {k: float(v) for k, v in frame.ratio().items()},
    }
