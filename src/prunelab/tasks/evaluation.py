"""Evaluation: loss, accuracy, confusion matrix, per-class metrics, top-k."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import Split


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one split. Arrays are indexed by class."""

    loss: float
    accuracy: float
    confusion: np.ndarray  # [true, predicted] counts
    class_names: tuple[str, ...]
    top_k: dict[int, float] = field(default_factory=dict)
    # Two-class problems (class 1 = signal): ROC AUC and background rejection 1/FPR at
    # fixed signal efficiencies, the figures of merit of particle physics.
    roc_auc: float | None = None
    rejection: dict[float, float] = field(default_factory=dict)

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    @property
    def recall(self) -> np.ndarray:
        return _safe_div(np.diag(self.confusion), self.support)

    @property
    def precision(self) -> np.ndarray:
        return _safe_div(np.diag(self.confusion), self.confusion.sum(axis=0))

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return _safe_div(2 * p * r, p + r)

    @property
    def balanced_accuracy(self) -> float:
        present = self.support > 0
        return float(self.recall[present].mean()) if present.any() else 0.0

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    def per_class(self) -> list[dict]:
        return [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.support)
        ]

    def to_dict(self) -> dict:
        """JSON-ready summary (the state tree stores this as metrics)."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
            "top_k": {str(k): v for k, v in self.top_k.items()},
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "per_class": self.per_class(),
            **({"roc_auc": self.roc_auc,
                "rejection": {f"{e:g}": (None if r == float("inf") else r) for e, r in self.rejection.items()}}
               if self.roc_auc is not None else {}),
        }


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num/den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, class_names: tuple[str, ...], batch_size: int = 1024) -> Evaluation:
    num_classes = len(class_names)
    logits = predict(model, split.x, batch_size)
    loss = float(F.cross_entropy(logits, split.y, reduction="mean"))
    pred = logits.argmax(dim=1)
    top_k = {}
    if num_classes > 10:
        k = 5
        hits = (logits.topk(k, dim=1).indices == split.y[:, None]).any(dim=1)
        top_k[k] = float(hits.float().mean())
    auc, rejection = None, {}
    if num_classes == 2:
        from ..hep.metrics import rejection as background_rejection, roc_auc

        score = (logits[:, 1] - logits[:, 0]).numpy()  # monotone in P(class 1)
        auc, rejection = roc_auc(split.y.numpy(), score), background_rejection(split.y.numpy(), score)
    return Evaluation(
        loss=loss,
        accuracy=float((pred == split.y).float().mean()),
        confusion=confusion_matrix(split.y.numpy(), pred.numpy(), num_classes),
        class_names=tuple(class_names),
        top_k=top_k,
        roc_auc=auc,
        rejection=rejection,
    )
