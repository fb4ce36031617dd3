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


def load_groups(path, column: str | None = None) -> tuple[str, np.ndarray]:
    """A sensitive attribute per test example from a CSV file with a header row.

    ``column`` names the attribute (default: the file's only column, else its
    first). Rows are in the order of the dataset's test split. Returns
    ``(column, values as strings)``.
    """
    import pandas as pd
    from pathlib import Path

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PrunelabError(f"{path}: no such group file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PrunelabError(f"{path}: not a CSV file with a header row ({exc})") from None
    if frame.shape[1] == 0:
        raise PrunelabError(f"{path}: no columns")
    if column is None:
        column = str(frame.columns[0])
    elif column not in frame.columns:
        raise PrunelabError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    values = frame[column].to_numpy(dtype=str)
    empty = np.flatnonzero(values == "")
    if len(empty):
        raise PrunelabError(f"{path}: column {column!r} is empty at data row {int(empty[0]) + 1}")
    if len(set(values)) < 2:
        raise PrunelabError(f"{path}: column {column!r} has a single group; a comparison needs two or more")
    return column, values


def state_predictions(results, state_hash: str, split: str = "test") -> tuple[np.ndarray, np.ndarray, str]:
    """``(labels, predicted classes, dataset)`` of a stored state on a split, recomputed from its weights."""
    import torch

    from ..experiment.context import dataset_cache
    from ..tasks.evaluation import predict

    snapshot = results.snapshot(state_hash)
    data = dataset_cache(snapshot.dataset, download=False).split(split)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count the stored metrics were computed at
    try:
        predicted = predict(snapshot.model(), data.x).argmax(dim=1).numpy()
    finally:
        torch.set_num_threads(threads)
    return data.y.numpy(), predicted, snapshot.dataset


def group_impact(results, points, groups: Sequence, split: str = "test"):
    """Per trained state and group: accuracy, its change against the dense model of the same seed
    (and configuration), and the between-group accuracy difference (Fairlearn ``MetricFrame``).

    ``points`` is a :func:`~prunelab.analysis.tables.study_points` table;
    states on another dataset than the groups describe (a transfer) are left out.
    """
    import pandas as pd

    groups = np.asarray(groups)
    rows, skipped, by_state = [], 0, {}
    for p in points.itertuples():
        if p.hash not in by_state:  # a state shared by configurations is evaluated once
            y, predicted, _ = state_predictions(results, p.hash, split)
            by_state[p.hash] = group_metrics(y, predicted, groups) if len(y) == len(groups) else None
        g = by_state[p.hash]
        if g is None:
            skipped += 1
            continue
        for name, metrics in g["by_group"].items():
            rows.append({"config": p.config, "branch": p.branch, "seed": p.seed, "round": p.round,
                         "remaining": p.remaining, "group": name, "accuracy": metrics["accuracy"],
                         "overall": g["overall"]["accuracy"], "difference": g["difference"]["accuracy"],
                         "ratio": g["ratio"]["accuracy"]})
    if not rows:
        raise PrunelabError(f"the group values ({len(groups)}) match the {split} split of no state "
                            f"({skipped} states checked): one value per {split} example, in order")
    table = pd.DataFrame(rows)
    keys = list(zip(table["config"].fillna(""), table["seed"], table["group"]))
    dense = {k: a for k, a, b in zip(keys, table["accuracy"], table["branch"]) if b == "dense"}
    table["delta"] = [a - dense.get(k, np.nan) for k, a in zip(keys, table["accuracy"])]
    return table
