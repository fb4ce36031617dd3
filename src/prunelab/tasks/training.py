"""Deterministic training on CPU.

Reproducibility comes from three choices:

* the order of examples is a pure function of ``(seed, iteration)``: epoch
  ``e`` uses the permutation drawn from ``seed`` and ``e``, so training from
  iteration 0 to T in one go equals 0 → k followed by k → T;
* the learning rate is a pure function of the iteration (no scheduler object
  with hidden state);
* ``torch.use_deterministic_algorithms(True)`` is on while training.

Same config + seed + start state therefore gives bitwise-identical weights.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..errors import PrunelabError, validated
from ..progress import progress_bar
from .datasets import Dataset
from .evaluation import evaluate, task_loss


class TrainConfig(BaseModel):
    """How to train. Exactly one of ``iterations`` / ``epochs`` sets the length."""

    # Non-finite numbers and absurd magnitudes are rejected here, not discovered as failed states
    # after a run (the bounds are far beyond any working setting).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    lr: float = Field(1.2e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(60, gt=0, le=2**20)
    iterations: int | None = Field(None, gt=0, le=10**9)
    epochs: float | None = Field(None, gt=0, le=10**6)
    schedule: Literal["constant", "step", "cosine"] = "constant"
    warmup_iterations: int = Field(0, ge=0)
    milestones: tuple[int, ...] = ()  # iterations at which "step" multiplies lr by gamma
    gamma: float = Field(0.1, gt=0, le=10)
    eval_every: int = Field(0, ge=0)  # 0: evaluate only at the end

    @model_validator(mode="after")
    def _one_length(self) -> "TrainConfig":
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'iterations' or 'epochs'")
        if any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive iterations")
        return self

    @classmethod
    def parse(cls, data: dict, where: str = "training") -> "TrainConfig":
        return validated(cls, data, where)

    def total_iterations(self, train_size: int) -> int:
        if self.iterations is not None:
            return self.iterations
        return max(1, math.ceil(self.epochs * batches_per_epoch(train_size, self.batch_size)))

    def lr_at(self, iteration: int, total: int) -> float:
        """Learning rate used for the optimizer step taken at ``iteration``."""
        factor = 1.0
        if self.schedule == "step":
            factor = self.gamma ** sum(iteration >= m for m in self.milestones)
        elif self.schedule == "cosine":
            span = max(1, total - self.warmup_iterations)
            progress = min(1.0, max(0.0, (iteration - self.warmup_iterations) / span))
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        if iteration < self.warmup_iterations:
            factor *= (iteration + 1) / self.warmup_iterations
        return self.lr * factor


def batches_per_epoch(train_size: int, batch_size: int) -> int:
    if batch_size > train_size:
        raise PrunelabError(f"batch_size {batch_size} is larger than the training set ({train_size} examples)")
    return train_size // batch_size  # the last incomplete batch is dropped


def batch_indices(seed: int, iteration: int, train_size: int, batch_size: int, _cache: dict = {}) -> torch.Tensor:
    """Example indices of the batch used at ``iteration`` (pure function)."""
    per_epoch = batches_per_epoch(train_size, batch_size)
    epoch, position = divmod(iteration, per_epoch)
    key = (seed, epoch, train_size)
    perm = _cache.get(key)
    if perm is None:
        generator = torch.Generator().manual_seed(hash_seed(seed, epoch))
        perm = torch.randperm(train_size, generator=generator)
        _cache.clear()  # keep one epoch's permutation: memory stays flat
        _cache[key] = perm
    return perm[position * batch_size : (position + 1) * batch_size]


def hash_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 steps; stable across runs)."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters in a canonical order that pruning does not change.

    torch's pruning re-registers ``weight`` as ``weight_orig`` (moving it after
    ``bias``); ordering by the name without ``_orig`` keeps an optimizer state
    saved before pruning loadable after it, and vice versa.
    """
    named = [(n.removesuffix("_orig"), p) for n, p in model.named_parameters() if p.requires_grad]
    return [p for _, p in sorted(named, key=lambda item: item[0])]


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    momentum = config.momentum if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(
        params, lr=config.lr, momentum=momentum, weight_decay=config.weight_decay,
        nesterov=config.nesterov and momentum > 0,
    )


@contextmanager
def deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


class TrainingDiverged(PrunelabError):
    """The loss became NaN or infinite."""


StepHook = Callable[[nn.Module, int], None]


@dataclass
class TrainResult:
    iterations: int  # the iteration reached (exclusive end)
    curve: list[dict] = field(default_factory=list)  # periodic validation metrics
    optimizer_state: dict | None = None
    seconds: float = 0.0

    @property
    def early_stopping_iteration(self) -> int | None:
        """Iteration of minimum validation loss (Frankle & Carbin)."""
        if not self.curve:
            return None
        return min(self.curve, key=lambda p: (p["val_loss"], p["iteration"]))["iteration"]


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    start: int = 0,
    stop: int | None = None,
    optimizer_state: dict | None = None,
    after_step: Sequence[StepHook] = (),
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place from iteration ``start`` to ``stop``.

    ``stop`` defaults to the configured length; training 0 → k, then k → T
    with the returned ``optimizer_state`` equals 0 → T. ``after_step`` hooks
    run after every optimizer step (pruning uses one to re-apply masks).
    """
    train_split = dataset.train
    total = config.total_iterations(len(train_split))
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise PrunelabError(f"training window {start}..{stop} is outside 0..{total} iterations")
    batches_per_epoch(len(train_split), config.batch_size)

    optimizer = make_optimizer(config, trainable_parameters(model))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    result = TrainResult(iterations=start)
    began = time.perf_counter()
    model.train()
    with deterministic(), progress_bar(stop - start, f"training {type(model).__name__}", progress) as bar:
        for iteration in range(start, stop):
            lr = config.lr_at(iteration, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = batch_indices(seed, iteration, len(train_split), config.batch_size)
            loss = task_loss(model(train_split.x[idx]), train_split.y[idx])
            if not torch.isfinite(loss).item():
                raise TrainingDiverged(f"loss became {loss.item()} at iteration {iteration} (lr {lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            last_loss = loss.item()
            optimizer.step()
            for hook in after_step:
                hook(model, iteration)
            done = iteration + 1
            if config.eval_every and (done % config.eval_every == 0 or done == stop):
                result.curve.append(_curve_point(model, dataset, done, last_loss))
            bar.advance()
    if not config.eval_every and stop > start:
        result.curve.append(_curve_point(model, dataset, stop, last_loss))
    result.iterations = stop
    result.optimizer_state = optimizer.state_dict()
    result.seconds = time.perf_counter() - began
    return result


def _curve_point(model: nn.Module, dataset: Dataset, iteration: int, train_loss: float) -> dict:
    if len(dataset.validation):
        ev = evaluate(model, dataset.validation, dataset.class_names)
        if dataset.validation.regression:
            return {"iteration": iteration, "train_loss": train_loss, "val_loss": ev.loss, "val_rmse": ev.rmse}
        return {"iteration": iteration, "train_loss": train_loss, "val_loss": ev.loss, "val_accuracy": ev.accuracy}
    return {"iteration": iteration, "train_loss": train_loss, "val_loss": float("nan"), "val_accuracy": float("nan")}
