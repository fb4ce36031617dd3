"""Training steps replayed as CUDA graphs (used by ``train`` and ``train_group`` on CUDA).

Off with ``PRUNELAB_CUDA_GRAPHS=0`` in the environment (or ``cuda_graphs.ENABLED = False``): needed
only for a model whose forward pass changes with Python-side state between steps (a capture
records one step's kernels and replays exactly those), never for the bits, which are the same.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

ENABLED = True  # tests switch it off to compare replays with the eager loop

WARMUP = 3  # eager steps before the first capture, so lazy state (optimizer moments, cuBLAS handles) exists
MIN_RUN = 16  # a stretch of constant lr shorter than this runs eagerly: a capture costs a few steps' time


class StepGraphs:
    """A training step on CUDA, captured once as a CUDA graph and replayed.

    A LeNet-size step is a few hundred small kernels; on a GPU their launches, not the arithmetic,
    set the pace (eagerly, a vectorised step takes about as long whether it carries 1 model or 32:
    docs/benchmarks/many_models.md). A replay launches them all at once. What is replayed is the
    very step the eager loop runs — same kernels, same arguments, same buffers — so the bits equal
    the eager loop's (tested on a GPU); a replay is an execution detail, not part of a state's
    identity.

    The learning rate is a plain number baked into the captured optimizer kernel, so a new graph
    is captured whenever it changes; stretches of constant lr shorter than ``MIN_RUN`` steps
    (warm-up, cosine decay) run eagerly instead. The batch indices are the only input that
    changes between replays: they are copied into a fixed buffer first. Everything — eager steps,
    captures, replays, evaluations in between — runs on one side stream (capture cannot use the
    default stream), so no tensor crosses streams while training.
    """

    def __init__(self, step, optimizer: torch.optim.Optimizer, lrs: list[float], idx_shape, device: torch.device):
        self.run, self.optimizer = step, optimizer
        self.plan = replay_plan(lrs)
        self.idx = torch.zeros(idx_shape, dtype=torch.long, device=device)
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None
        self.replayed, self.captures, self.failure = 0, 0, None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Train inside this: the side stream, and torch's graph check satisfied while capturing."""
        previous = [group.get("capturable") for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            if "capturable" in group:  # Adam refuses capture without it; the fused kernel ignores it
                group["capturable"] = True
        outer = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(outer)
        try:
            with torch.cuda.stream(self.stream):
                yield
        finally:
            outer.wait_stream(self.stream)
            self.stream.synchronize()  # the graph's memory goes back to the allocator only once idle
            self.graph = self.loss = None
            for group, value in zip(self.optimizer.param_groups, previous):
                if value is not None:
                    group["capturable"] = value  # stored optimizer states keep the one-at-a-time flags

    def record(self) -> dict:
        """What provenance keeps about the replays."""
        return {"replayed_steps": self.replayed, "captures": self.captures,
                **({"failed": self.failure} if self.failure else {})}

    def step(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        """Step ``k`` of the window on batch indices ``idx`` (the optimizer's lr is already set)."""
        action = self.plan[k]
        if self.failure or action == EAGER or (action == CAPTURE and not self._capture()):
            return self.run(idx)
        self.idx.copy_(idx)
        self.graph.replay()
        self.replayed += 1
        return self.loss

    def _capture(self) -> bool:
        self.stream.synchronize()
        self.graph = self.loss = None  # the old graph's memory goes before the new one is taken
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                loss = self.run(self.idx)  # recorded, not executed: no state changes here
        except RuntimeError as exc:  # an op that cannot be captured: train on eagerly, and say so
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"CUDA graph capture of a training step failed ({self.failure}); "
                          "training continues without graphs (same bits, slower)", stacklevel=3)
            return False
        self.graph, self.loss = graph, loss
        self.captures += 1
        return True


EAGER, CAPTURE, REPLAY = "eager", "capture", "replay"


def replay_plan(lrs: list[float], warmup: int = WARMUP, min_run: int = MIN_RUN) -> list[str]:
    """How each step of a window with learning rates ``lrs`` runs: EAGER, CAPTURE (a new graph for
    this lr, then its first replay) or REPLAY. The first ``warmup`` steps are eager; after them, a
    stretch of equal lr gets a graph when at least ``min_run`` of its steps remain, else runs eagerly."""
    plan, graph_lr = [], None
    ahead = [1] * len(lrs)  # steps from k on that share lrs[k]
    for k in range(len(lrs) - 2, -1, -1):
        if lrs[k + 1] == lrs[k]:
            ahead[k] = ahead[k + 1] + 1
    for k, lr in enumerate(lrs):
        if k >= warmup and graph_lr is not None and lr == graph_lr:
            plan.append(REPLAY)
        elif k >= warmup and ahead[k] >= min_run:
            plan.append(CAPTURE)
            graph_lr = lr
        else:
            plan.append(EAGER)
    return plan


def enabled() -> bool:
    return ENABLED and os.environ.get("PRUNELAB_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")


def for_training(step: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, config,
                 total: int, start: int, stop: int, idx_shape: tuple[int, ...],
                 device: torch.device) -> StepGraphs | None:
    """Graphs for the steps ``start``..``stop`` of a training of ``total`` iterations under ``config``
    (a TrainConfig) on ``device``: None on a CPU, when switched off, or for an empty window.
    ``step(idx)`` runs one step on batch indices ``idx`` and returns its loss."""
    if device.type != "cuda" or stop <= start or not enabled():
        return None
    lrs = [config.lr_at(it, total) for it in range(start, stop)]  # only here: a CPU run keeps no list
    return StepGraphs(step, optimizer, lrs, idx_shape, device)
