"""The one number that sums up a stored evaluation, and which way is better for each metric
(light: no torch, for listings and trees).

Every command that ranks, compares or tests a metric asks :func:`metric_info` which way is
better, so a lower-is-better metric (perplexity, RMSE, a loss) is handled here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str  # as stored in an evaluation: "accuracy", "perplexity", ...
    short: str  # for trees and listings: "acc", "ppl"
    label: str  # for axes and table titles: "accuracy", "perplexity (per character)"
    higher_is_better: bool
    bounds: tuple[float, float] | None = None  # the metric's range (intervals are clipped to it)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    @property
    def sign(self) -> float:
        """+1 where higher is better, −1 where lower is: ``sign * (a − b) > 0`` means a is better."""
        return 1.0 if self.higher_is_better else -1.0


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("accuracy", "acc", "accuracy", True, (0.0, 1.0)),
    MetricInfo("balanced_accuracy", "bacc", "balanced accuracy", True, (0.0, 1.0)),
    MetricInfo("macro_f1", "f1", "macro F1", True, (0.0, 1.0)),
    MetricInfo("roc_auc", "auc", "ROC AUC", True, (0.0, 1.0)),
    MetricInfo("recall", "rec", "recall", True, (0.0, 1.0)),
    MetricInfo("r2", "r2", "R²", True, (-math.inf, 1.0)),
    MetricInfo("loss", "loss", "loss", False, (0.0, math.inf)),
    MetricInfo("rmse", "rmse", "RMSE", False, (0.0, math.inf)),
    MetricInfo("mae", "mae", "MAE", False, (0.0, math.inf)),
    MetricInfo("resolution", "res", "resolution σ(pred/target)", False, (0.0, math.inf)),
    MetricInfo("perplexity", "ppl", "perplexity", False, (1.0, math.inf)),
    MetricInfo("bits_per_token", "bpt", "bits per token", False, (0.0, math.inf)),
)}

SHORT = {name: m.short for name, m in METRICS.items()}


def metric_info(name: str) -> MetricInfo:
    """What ``name`` measures and which way is better. A dotted name (``test.perplexity``) is looked
    up by its last part; an unknown metric counts as higher-is-better, unbounded."""
    last = name.rpartition(".")[2]
    return METRICS.get(last) or MetricInfo(last, last, last.replace("_", " "), True)


def headline(evaluation: dict) -> tuple[str, float]:
    """The one number that sums up a stored evaluation: accuracy for classification; perplexity for
    a language model; for a regression target its resolution σ(prediction/target) where defined
    (positive targets), else its RMSE."""
    task = evaluation.get("task")
    if task == "language":
        return "perplexity", evaluation["perplexity"]
    if task != "regression":
        return "accuracy", evaluation["accuracy"]
    resolution = evaluation.get("resolution")
    if resolution is not None and math.isfinite(resolution):
        return "resolution", resolution
    return "rmse", evaluation["rmse"]


def short_headline(evaluation: dict, digits: int = 4) -> str:
    """``"acc 0.9712"`` / ``"res 0.0831"`` / ``"ppl 4.512"``: a headline for trees and listings."""
    name, value = headline(evaluation)
    return f"{metric_info(name).short} {value:.{digits}f}"
