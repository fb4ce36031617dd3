"""The one number that sums up a stored evaluation (light: no torch, for listings and trees)."""

from __future__ import annotations

import math


SHORT = {"accuracy": "acc", "resolution": "res", "rmse": "rmse"}


def headline(evaluation: dict) -> tuple[str, float]:
    """The one number that sums up a stored evaluation: accuracy for classification; for a regression
    target its resolution σ(prediction/target) where defined (positive targets), else its RMSE."""
    if evaluation.get("task") != "regression":
        return "accuracy", evaluation["accuracy"]
    resolution = evaluation.get("resolution")
    if resolution is not None and math.isfinite(resolution):
        return "resolution", resolution
    return "rmse", evaluation["rmse"]


def short_headline(evaluation: dict, digits: int = 4) -> str:
    """``"acc 0.9712"`` / ``"res 0.0831"``: a headline for trees and listings."""
    name, value = headline(evaluation)
    return f"{SHORT[name]} {value:.{digits}f}"
