"""Evaluation: loss, accuracy, confusion matrix, per-class metrics, top-k; for a two-class task
ROC AUC and background rejection; for a regression target RMSE, R², bias and resolution."""

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


from ..headline import SHORT, headline, short_headline  # noqa: E402,F401  (re-exported)


def task_loss(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for class labels (per position for a language model's (B, T) targets: the mean
    over every predicted token); mean squared error for (standardised) real targets."""
    if target.is_floating_point():
        return F.mse_loss(output.reshape(len(target), -1)[:, 0], target, reduction=reduction)
    if target.dim() == 2:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction=reduction)
    return F.cross_entropy(output, target, reduction=reduction)


PER_CLASS_LIMIT = 4096  # vocabularies up to this size store a row per token (characters, bytes)


@dataclass(frozen=True)
class LanguageEvaluation:
    """Next-token metrics of a language model on a split of token blocks. ``loss`` is the mean
    cross-entropy in nats per token (per character for a character-level task); perplexity is
    exp(loss). Per class (the token predicted *at*): how often it is predicted correctly (recall),
    how often a prediction of it is right (precision), and its mean loss — which characters pay."""

    loss: float
    accuracy: float  # top-1 next-token accuracy
    class_names: tuple[str, ...]
    support: np.ndarray  # targets per class
    hits: np.ndarray  # correct top-1 predictions per class
    predicted: np.ndarray  # top-1 predictions per class
    class_loss: np.ndarray  # mean loss (nats) of the targets of each class (NaN where absent)
    top_k: dict[int, float] = field(default_factory=dict)

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.loss))

    @property
    def bits_per_token(self) -> float:
        return float(self.loss / np.log(2.0))

    @property
    def recall(self) -> np.ndarray:
        return _safe_div(self.hits, self.support)

    @property
    def precision(self) -> np.ndarray:
        return _safe_div(self.hits, self.predicted)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return _safe_div(2 * p * r, p + r)

    def per_class(self) -> list[dict]:
        return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
                 "loss": None if s == 0 else float(lo)}
                for name, p, r, f, s, lo in zip(self.class_names, self.precision, self.recall, self.f1, self.support,
                                                self.class_loss)]

    def to_dict(self) -> dict:
        present = self.support > 0
        # a word-piece vocabulary of 50,000 tokens would make every stored state megabytes of per-class rows
        per_class = self.per_class() if len(self.class_names) <= PER_CLASS_LIMIT else []
        return {"task": "language", "loss": self.loss, "perplexity": self.perplexity,
                "bits_per_token": self.bits_per_token, "accuracy": self.accuracy,
                "balanced_accuracy": float(self.recall[present].mean()) if present.any() else 0.0,
                "macro_f1": float(self.f1.mean()), "tokens": int(self.support.sum()),
                "top_k": {str(k): v for k, v in self.top_k.items()},
                "class_names": list(self.class_names) if per_class else [], "per_class": per_class}


LOGITS_PER_BATCH = 1 << 25  # 128 MB of float32 logits: a batch of blocks is sized to stay below it


@torch.no_grad()
def evaluate_language(model: nn.Module, split: Split, class_names: tuple[str, ...],
                      batch_size: int | None = None) -> LanguageEvaluation:
    """Streamed over batches of blocks: memory stays at one batch's logits whatever the vocabulary
    (64 blocks of 64 characters, or 1 block of 2048 tokens of a 50,000-token vocabulary)."""
    if batch_size is None:
        per_block = max(1, split.x.shape[1] * len(class_names))
        batch_size = max(1, min(64, LOGITS_PER_BATCH // per_block))
    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else split.x.device
    v = len(class_names)
    support, hits, predicted = (torch.zeros(v, dtype=torch.float64) for _ in range(3))
    loss_sum = torch.zeros(v, dtype=torch.float64)
    top5 = 0.0
    try:
        for i in range(0, len(split), batch_size):
            logits = model(split.x[i:i + batch_size].to(device)).cpu()
            logits = logits.reshape(-1, logits.shape[-1]).float()
            target = split.y[i:i + batch_size].reshape(-1)
            losses = F.cross_entropy(logits, target, reduction="none").double()
            pred = logits.argmax(dim=1)
            support += torch.bincount(target, minlength=v).double()
            hits += torch.bincount(target[pred == target], minlength=v).double()
            predicted += torch.bincount(pred, minlength=v).double()
            loss_sum += torch.bincount(target, weights=losses, minlength=v)
            if v > 10:
                top5 += float((logits.topk(5, dim=1).indices == target[:, None]).any(dim=1).sum())
    finally:
        model.train(was_training)
    tokens = float(support.sum())
    if tokens == 0:
        raise ValueError("an empty split has no next-token metrics")
    return LanguageEvaluation(
        loss=float(loss_sum.sum() / tokens), accuracy=float(hits.sum() / tokens), class_names=tuple(class_names),
        support=support.numpy().astype(np.int64), hits=hits.numpy().astype(np.int64),
        predicted=predicted.numpy().astype(np.int64),
        class_loss=np.where(support.numpy() > 0, loss_sum.numpy() / np.maximum(support.numpy(), 1), np.nan),
        top_k={5: top5 / tokens} if v > 10 else {})


@dataclass(frozen=True)
class RegressionEvaluation:
    """Metrics of a one-output regression model, in the target's own units.

    ``bias`` and ``resolution`` are the mean − 1 and the standard deviation of
    ``prediction / target`` (the energy-resolution convention; NaN when a target
    is not positive), overall and per quintile of the target (``per_bin``).
    """

    loss: float  # mean squared error of the standardised target (what training minimises)
    rmse: float
    mae: float
    r2: float
    bias: float
    resolution: float
    per_bin: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"task": "regression", "loss": self.loss, "rmse": self.rmse, "mae": self.mae, "r2": self.r2,
                "bias": self.bias, "resolution": self.resolution, "per_bin": self.per_bin}


def evaluate_regression(model: nn.Module, split: Split, batch_size: int = 1024, bins: int = 5) -> RegressionEvaluation:
    out = predict(model, split.x, batch_size).reshape(len(split), -1)[:, 0]
    loss = float(F.mse_loss(out, split.y))
    pred = out.double().numpy() * split.target_std + split.target_mean
    true = split.y.double().numpy() * split.target_std + split.target_mean
    err = pred - true
    total = float(((true - true.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / total if total > 0 else float("nan")
    positive = bool((true > 0).all())

    def ratio_stats(index) -> tuple[float, float]:
        if not positive or index.sum() < 2:
            return float("nan"), float("nan")
        r = pred[index] / true[index]
        return float(r.mean() - 1), float(r.std(ddof=1))

    edges = np.quantile(true, np.linspace(0, 1, bins + 1)) if len(true) else np.zeros(bins + 1)
    per_bin = []
    for i in range(bins):
        index = (true >= edges[i]) & ((true < edges[i + 1]) if i < bins - 1 else (true <= edges[i + 1]))
        b, res = ratio_stats(index)
        per_bin.append({"bin": f"{edges[i]:.4g}-{edges[i + 1]:.4g}", "events": int(index.sum()), "bias": b,
                        "resolution": res})
    bias, resolution = ratio_stats(np.ones(len(true), dtype=bool))
    return RegressionEvaluation(loss, float(np.sqrt((err**2).mean())), float(np.abs(err).mean()), r2, bias,
                                resolution, per_bin)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, on the CPU; the model's mode is restored.

    A model on an accelerator gets ``x`` one batch at a time on its device.
    """
    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else x.device
    try:
        return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, class_names: tuple[str, ...],
             batch_size: int = 1024) -> "Evaluation | RegressionEvaluation | LanguageEvaluation":
    if split.regression:
        return evaluate_regression(model, split, batch_size)
    if split.y.dim() == 2:  # blocks of next tokens: a language model
        return evaluate_language(model, split, class_names)
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
        from .roc import rejection as background_rejection, roc_auc

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
