"""The masks torch's pruning attaches to a model, as the training layer sees them.

A pruned tensor is torch.nn.utils.prune's: ``weight_orig`` is trained and a forward pre-hook multiplies
``weight_mask`` in. The vectorised trainer stacks plain tensors instead, so it takes the masks off
(made permanent) before training and attaches them again afterwards. The pruning layer above builds
its selection, checks and accounting on the same reading (``pruning.masks.get_masks`` is
:func:`attached_masks`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def _pruned(model: nn.Module):
    """(name in the model, module, parameter name) of every tensor torch's pruning is attached to."""
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                param = hook._tensor_name
                yield (f"{module_name}.{param}" if module_name else param), module, param


def attached_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current mask of every pruned tensor of ``model`` (bool, True = kept)."""
    return {name: getattr(module, param + "_mask").detach() != 0 for name, module, param in _pruned(model)}


def detach_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Take ``model``'s masks off, its pruned weights made permanent (zeros stay zeros); returns them."""
    masks = attached_masks(model)
    for _, module, param in list(_pruned(model)):
        prune.remove(module, param)
    return masks


def attach_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` (as :func:`detach_masks` returned them) to ``model`` again."""
    for name, keep in masks.items():
        module_name, _, param = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(module_name), param, keep.to(torch.bool))
    return model
