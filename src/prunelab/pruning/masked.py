"""Training a pruned model: torch's forward hooks, or masks re-applied after each step.

* ``mode="hook"``: torch's reparametrisation as is — every forward computes
  ``weight = weight_orig * weight_mask``.
* ``mode="reapply"`` (OpenLTH's approach): the masks are made permanent for
  the duration of training, so the forward pass is the dense one with zeros in
  place, and after every optimizer step the pruned entries are zeroed again.
  No per-forward multiplication; afterwards torch's pruning is re-attached,
  so the model leaves exactly as pruned as it came.

Both give the same effective weights: a kept entry sees the same gradient in
both, and a pruned entry is zero in both.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from ..tasks.datasets import Dataset
from ..tasks.training import StepHook, TrainConfig, TrainResult, train, training_device
from .masks import Masks, apply_masks, get_masks, remove_pruning
from .targets import pruned_targets


class MaskReapplier:
    """An ``after_step`` hook zeroing pruned entries in place."""

    graph_safe = True  # the same kernels every step, whatever the iteration: CUDA graphs may replay it

    def __init__(self, model: nn.Module, masks: Masks):
        self.tensors, self.masks = [], []
        for name, keep in masks.items():
            module_name, _, param = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            tensor = getattr(module, param)
            self.tensors.append(tensor)
            self.masks.append(keep.to(tensor.device, tensor.dtype))

    @torch.no_grad()
    def __call__(self, model: nn.Module, iteration: int) -> None:
        torch._foreach_mul_(self.tensors, self.masks)  # one fused call for all tensors


def train_masked(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    mode: Literal["reapply", "hook"] = "reapply",
    after_step: Sequence[StepHook] = (),
    masks: Masks | None = None,
    **kwargs,
) -> TrainResult:
    """Train a (possibly) pruned model so that pruned weights stay zero.

    ``masks`` (``mode="reapply"`` only): the masks of a model that comes *without* torch's pruning
    attached. Its pruned entries are zeroed first (the same product torch's pruning would give),
    stay zero through training, and the model leaves as it came, unpruned: the same weights as
    attaching the masks, training, and reading ``weight_orig`` back, without attaching torch's
    pruning only for this function to take it off again.
    """
    if masks is not None:
        if mode != "reapply":
            raise ValueError("train_masked: masks= is for mode='reapply' (mode='hook' trains through torch's pruning)")
        if pruned_targets(model):
            raise ValueError("train_masked: masks= is for a model without torch's pruning attached; this one has it")
        model.to(training_device(config))
        hook = MaskReapplier(model, masks)
        hook(model, 0)  # weight * mask, as torch's pruning computes the pruned weight
        return train(model, dataset, config, seed=seed, after_step=(hook, *after_step), **kwargs)
    if mode == "hook":
        return train(model, dataset, config, seed=seed, after_step=after_step, **kwargs)
    if mode != "reapply":
        raise ValueError(f"mode must be 'reapply' or 'hook', got {mode!r}")
    model.to(training_device(config))  # masks and weights on the training device before the hook holds them
    masks = get_masks(model)
    if not masks:
        return train(model, dataset, config, seed=seed, after_step=after_step, **kwargs)
    remove_pruning(model)
    try:
        hook = MaskReapplier(model, masks)
        return train(model, dataset, config, seed=seed, after_step=(hook, *after_step), **kwargs)
    finally:
        apply_masks(model, masks)
