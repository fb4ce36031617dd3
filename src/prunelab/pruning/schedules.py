"""Pruning schedules: one-shot, iterative geometric, gradual polynomial."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..errors import PrunelabError
from .methods import PruningConfig, prune


def remaining_after(rounds: int, rate: float) -> float:
    """Fraction of weights left after ``rounds`` of pruning ``rate`` of the remaining."""
    return (1.0 - rate) ** rounds


def rounds_to_reach(remaining: float, rate: float) -> int:
    """Smallest number of geometric rounds that leaves at most ``remaining``."""
    if not 0 < remaining <= 1 or not 0 < rate < 1:
        raise PrunelabError(f"need 0 < remaining <= 1 and 0 < rate < 1, got {remaining}, {rate}")
    return max(0, math.ceil(math.log(remaining) / math.log(1.0 - rate) - 1e-12))


def polynomial_sparsity(step: int, *, initial: float, final: float, begin: int, end: int, power: float = 3.0) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(t_end − t₀))^power."""
    if end <= begin:
        raise PrunelabError(f"gradual pruning needs end > begin, got {begin}..{end}")
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - progress) ** power


@dataclass
class GradualPruning:
    """An ``after_step`` training hook pruning to the polynomial schedule.

    Every ``frequency`` steps between ``begin`` and ``end`` the selected
    tensors are pruned (with ``config``'s method and scope) to the scheduled
    overall sparsity.
    """

    config: PruningConfig
    final: float
    begin: int
    end: int
    frequency: int = 100
    initial: float = 0.0
    power: float = 3.0

    def __post_init__(self) -> None:
        if self.frequency <= 0:
            raise PrunelabError(f"frequency must be positive, got {self.frequency}")
        self.history: list[tuple[int, float]] = []

    def __call__(self, model: nn.Module, iteration: int) -> None:
        step = iteration + 1
        if step < self.begin or step > self.end or (step - self.begin) % self.frequency:
            return
        sparsity = polynomial_sparsity(step, initial=self.initial, final=self.final, begin=self.begin,
                                       end=self.end, power=self.power)
        settings = self.config.model_dump()
        settings.update(amount=None, target=sparsity)
        result = prune(model, PruningConfig.parse(settings))
        self.history.append((step, result.report.sparsity))
