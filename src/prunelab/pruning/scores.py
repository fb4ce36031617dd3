"""Importance scores: higher means more important (kept longer).

Unstructured scores have the shape of the weight; structured scores have one
value per slice along ``dim`` (a neuron, an output or an input channel).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import PrunelabError
from .targets import Target
from ..tasks.evaluation import task_loss


def random_scores(targets: Sequence[Target], seed: int) -> dict[str, torch.Tensor]:
    """Uniform random scores from a generator seeded per call (not the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=g) for t in targets}


@contextmanager
def gradients_of(model: nn.Module, originals: Sequence[torch.Tensor]) -> Iterator[None]:
    """Where a score takes gradients of the model (SNIP, GraSP): eval mode, gradients enabled and the
    tensors' ``.grad`` cleared; the mode and the ``.grad`` the caller had are restored after."""
    was_training = model.training
    model.eval()
    saved = [p.grad for p in originals]
    try:
        for p in originals:
            p.grad = None
        with torch.enable_grad():
            yield
    finally:
        for p, grad in zip(originals, saved):
            p.grad = grad
        model.train(was_training)


def snip_scores(model: nn.Module, targets: Sequence[Target], batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity |dL/dw * w| on one batch (Lee et al. 2019).

    The gradient is taken with respect to the effective (masked) weight, so
    already pruned weights score zero.
    """
    x, y = batch
    originals = [t.original for t in targets]
    with gradients_of(model, originals):
        loss = task_loss(model(x), y)
        grads = torch.autograd.grad(loss, originals, allow_unused=True)
    scores = {}
    for t, g in zip(targets, grads):
        g = torch.zeros_like(t.original) if g is None else g
        # dL/d(orig) = dL/dw * mask, so for kept weights this is |dL/dw * w|.
        scores[t.name] = (g * t.effective).abs().detach()
    return scores


def synflow_scores(model: nn.Module, targets: Sequence[Target], input_shape: Sequence[int],
                   masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """SynFlow scores (Tanaka et al. 2020): |w * dR/dw| with R = 1ᵀ f_|θ|(1).

    Computed on a float64 copy of the model with all parameters made
    non-negative and batch norm in eval mode, so the data-free objective does
    not depend on data or on the sign of weights. ``masks`` (by target name,
    bool) override the model's current masks, as the iterative schedule needs.
    """
    from .masks import clone_model

    clone = clone_model(model).double().eval()
    clone_targets = {}
    for name, module in clone.named_modules():
        for t in targets:
            if t.module_name == name:
                clone_targets[t.name] = Target(t.name, name, module, t.param)
    with torch.no_grad():
        for p in clone.parameters():
            p.abs_()
        for name, buffer in clone.named_buffers():
            if buffer.is_floating_point() and not name.endswith("_mask"):
                buffer.abs_()
        if masks is not None:
            for tname, keep in masks.items():
                tt = clone_targets[tname]
                if tt.is_pruned:
                    tt.mask.copy_(keep.to(tt.mask.dtype))
                else:
                    tt.original.mul_(keep.to(tt.original.dtype))
    originals = [clone_targets[t.name].original for t in targets]
    ones = torch.ones(1, *input_shape, dtype=torch.float64)
    with torch.enable_grad():
        out = clone(ones).sum()
        grads = torch.autograd.grad(out, originals, allow_unused=True)
    scores = {}
    for t, g, p in zip(targets, grads, originals):
        ct = clone_targets[t.name]
        g = torch.zeros_like(p) if g is None else g
        scores[t.name] = (g * ct.effective).abs().float().detach()
    return scores


def slice_scores(scores: torch.Tensor, dim: int, norm: float | str) -> torch.Tensor:
    """Ln norm of ``scores`` over every dim except ``dim``: one value per slice."""
    if not -scores.dim() <= dim < scores.dim():
        raise PrunelabError(f"dim {dim} is out of range for a tensor of shape {tuple(scores.shape)}")
    dim = dim % scores.dim()
    moved = scores.movedim(dim, 0).reshape(scores.shape[dim], -1)
    p = float("inf") if norm in ("inf", "linf", float("inf")) else float(norm)
    return torch.linalg.vector_norm(moved, ord=p, dim=1)


def expand_slices(keep_slices: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """Broadcast a per-slice keep vector back to a full tensor mask."""
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return keep_slices.reshape(view).expand(shape).clone()
