"""Masks as data: extract, apply, bit-pack, and account for sparsity.

A mask dict maps a tensor name (``"features.0.weight"``) to a bool tensor
(True = kept). Masks are applied with ``torch.nn.utils.prune.custom_from_mask``
so torch's own machinery (``PruningContainer``, ``prune.remove``,
``prune.is_pruned``) keeps working on the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import PrunelabError
from .targets import PRUNABLE_TYPES, Target, pruned_targets

Masks = dict[str, torch.Tensor]


def get_masks(model: nn.Module) -> Masks:
    """The current mask of every pruned tensor of ``model`` (bool, True = kept)."""
    from ..tasks.masking import attached_masks

    return attached_masks(model)


def _locate(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, param = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise PrunelabError(f"mask {name!r}: the model has no module {module_name!r}") from None
    if getattr(module, param, None) is None and not hasattr(module, param + "_orig"):
        raise PrunelabError(f"mask {name!r}: module {module_name!r} has no parameter {param!r}")
    return module, param


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Apply ``masks`` on top of any existing pruning (kept = kept by both)."""
    for name, keep in masks.items():
        module, param = _locate(model, name)
        current = getattr(module, param + "_orig", None)
        current = getattr(module, param) if current is None else current
        if tuple(keep.shape) != tuple(current.shape):
            raise PrunelabError(f"mask {name!r} has shape {tuple(keep.shape)}, the model's tensor {tuple(current.shape)}")
        prune.custom_from_mask(module, param, keep.to(torch.bool))
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on torch-pruned models.

    A pruned module's ``weight`` attribute is ``weight_orig * weight_mask``, a
    non-leaf tensor that deepcopy refuses; it is replaced by a detached copy
    (the forward pre-hook recomputes it on the next call anyway).
    """
    import copy

    for t in pruned_targets(model):
        setattr(t.module, t.param, getattr(t.module, t.param).detach())
    return copy.deepcopy(model)


def remove_pruning(model: nn.Module) -> nn.Module:
    """Make every mask permanent (torch's ``prune.remove`` on each pruned tensor)."""
    for t in pruned_targets(model):
        prune.remove(t.module, t.param)
    return model


# ---------------------------------------------------------------- bit packing


def pack(mask: torch.Tensor) -> np.ndarray:
    """1 bit per entry (uint8 array, big-endian bit order within a byte)."""
    return np.packbits(mask.detach().reshape(-1).numpy().astype(bool))


def unpack(packed: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    n = int(np.prod(shape)) if len(shape) else 1
    if packed.size != (n + 7) // 8:
        raise PrunelabError(f"packed mask has {packed.size} bytes; shape {tuple(shape)} needs {(n + 7) // 8}")
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(tuple(shape))


# ---------------------------------------------------------------- accounting


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    total: int
    kept: int
    flops: int | None = None  # dense multiply-accumulates for one example
    kept_flops: int | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    layers: tuple[LayerSparsity, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0

    @property
    def remaining_fraction(self) -> float:
        return 1.0 - self.sparsity

    @property
    def flops(self) -> int | None:
        return None if self.layers and self.layers[0].flops is None else sum(l.flops for l in self.layers)

    @property
    def kept_flops(self) -> int | None:
        return None if self.layers and self.layers[0].kept_flops is None else sum(l.kept_flops for l in self.layers)

    def to_dict(self) -> dict:
        return {
            "total": self.total, "kept": self.kept, "sparsity": self.sparsity,
            "flops": self.flops, "kept_flops": self.kept_flops,
            "layers": [
                {"name": l.name, "total": l.total, "kept": l.kept, "sparsity": l.sparsity,
                 "flops": l.flops, "kept_flops": l.kept_flops}
                for l in self.layers
            ],
        }


def sparsity_report(model: nn.Module, input_shape: Sequence[int] | None = None,
                    types: Sequence[type[nn.Module]] = PRUNABLE_TYPES, kept: dict[str, int] | None = None,
                    scope: str | None = None, positions: dict[str, int] | None = None) -> SparsityReport:
    """Per-layer and overall sparsity of every Linear/Conv weight of ``model``.

    With ``input_shape`` (no batch dim), also dense and remaining FLOPs
    (multiply-accumulates for one example): a weight entry costs one MAC per
    output position, so remaining FLOPs = kept weights × output positions.
    ``kept``: kept counts the caller already knows (``prune`` does), by tensor name.
    ``scope``: count only modules under this name (default: the model's ``sparsity_scope`` attribute,
    which a model with an auxiliary network sets — a GAN reports its generator, not its critic).
    ``positions``: what :func:`output_positions` gives for this architecture and ``input_shape``, when
    the caller has it (a forward pass less).
    """
    targets = _report_targets(model, types, scope)
    if positions is None:
        positions = _output_positions(model, targets, input_shape) if input_shape is not None else {}
    layers = []
    known = kept or {}
    for t in targets:
        total = t.numel()
        kept = known[t.name] if t.name in known else (int(torch.count_nonzero(t.mask)) if t.is_pruned else total)
        pos = positions.get(t.name)
        layers.append(LayerSparsity(
            t.name, total, kept,
            None if pos is None else total * pos,
            None if pos is None else kept * pos,
        ))
    return SparsityReport(tuple(layers))


def _report_targets(model: nn.Module, types: Sequence[type[nn.Module]], scope: str | None) -> list[Target]:
    scope = getattr(model, "sparsity_scope", None) if scope is None else scope
    return [Target(f"{n}.weight" if n else "weight", n, m) for n, m in model.named_modules()
            if isinstance(m, tuple(types)) and (not scope or n == scope or n.startswith(scope + "."))]


def output_positions(model: nn.Module, input_shape: Sequence[int], types: Sequence[type[nn.Module]] = PRUNABLE_TYPES,
                     scope: str | None = None) -> dict[str, int]:
    """Output positions of each weight :func:`sparsity_report` counts (one forward pass of one
    example of ``input_shape``): they depend on the architecture only, so a caller reporting on many
    models of one architecture finds them once."""
    return _output_positions(model, _report_targets(model, types, scope), input_shape)


def _output_positions(model: nn.Module, targets: Sequence[Target], input_shape: Sequence[int]) -> dict[str, int]:
    """Number of output positions per layer (1 for Linear, H*W for Conv2d…; T for a Linear of a
    language model's (T, width) activations).

    A conv weight's numel already divides by ``groups``, so MACs = numel × positions.
    """
    from ..tasks.models import example_input

    found: dict[str, int] = {}
    hooks = []
    for t in targets:
        def hook(module, inputs, output, name=t.name):
            if isinstance(module, nn.Linear):
                found[name] = int(output[0].numel() // output.shape[-1]) if output.dim() > 1 else 1
            else:
                found[name] = int(output[0, 0].numel())
        hooks.append(t.module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input(model, input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return found
