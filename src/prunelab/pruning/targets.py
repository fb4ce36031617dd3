"""Which parameters are pruned: selection by module type and name pattern."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import PrunelabError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Target:
    """One prunable tensor: ``module.<param>`` known as ``name`` in the model."""

    name: str  # "<module name>.<param>", e.g. "features.0.weight"
    module_name: str
    module: nn.Module
    param: str = "weight"

    @property
    def original(self) -> torch.Tensor:
        """The trainable tensor (``<param>_orig`` once torch's pruning is attached)."""
        return getattr(self.module, self.param + "_orig", None) if self.is_pruned else getattr(self.module, self.param)

    @property
    def is_pruned(self) -> bool:
        return hasattr(self.module, self.param + "_mask")

    @property
    def mask(self) -> torch.Tensor | None:
        """The current float mask buffer, or None when unpruned."""
        return getattr(self.module, self.param + "_mask", None)

    @property
    def effective(self) -> torch.Tensor:
        """The weight as the forward pass sees it (masked)."""
        if self.is_pruned:
            return self.original * self.mask
        return getattr(self.module, self.param)

    @property
    def shape(self) -> torch.Size:
        return self.original.shape

    def numel(self) -> int:
        return self.original.numel()


def select(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    types: Iterable[type[nn.Module]] = PRUNABLE_TYPES,
    param: str = "weight",
) -> list[Target]:
    """Prunable tensors of ``model`` in module order.

    By default all Linear/Conv weights; biases and batch norm are not selected.
    ``include``/``exclude`` are glob patterns on module names (``"features.*"``);
    the special name ``"<output>"`` means the last selected module.
    """
    types = tuple(types)
    found = [
        Target(f"{name}.{param}" if name else param, name, module, param)
        for name, module in model.named_modules()
        if isinstance(module, types) and _has_param(module, param)
    ]
    if not found:
        raise PrunelabError(f"model {type(model).__name__} has no prunable '{param}' in modules of type {[t.__name__ for t in types]}")
    output = found[-1].module_name

    def matches(target: Target, pattern: str) -> bool:
        return (pattern == "<output>" and target.module_name == output) or fnmatch.fnmatchcase(target.module_name, pattern)

    for pattern in list(include or ()) + list(exclude):
        if not any(matches(t, pattern) for t in found):
            names = ", ".join(t.module_name for t in found)
            raise PrunelabError(f"pattern {pattern!r} matches no prunable module (modules: {names})")
    chosen = [t for t in found if (include is None or any(matches(t, p) for p in include))]
    chosen = [t for t in chosen if not any(matches(t, p) for p in exclude)]
    if not chosen:
        raise PrunelabError("the include/exclude patterns leave no parameter to prune")
    return chosen


def _has_param(module: nn.Module, param: str) -> bool:
    return getattr(module, param, None) is not None or hasattr(module, param + "_orig")


def output_module_name(targets: Sequence[Target]) -> str:
    return targets[-1].module_name


#: Override keys that select tensors by module type rather than by name.
TYPE_KEYS: dict[str, tuple[type[nn.Module], ...]] = {
    "<linear>": (nn.Linear,),
    "<conv>": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}


def _override_rank(pattern: str) -> int:
    """Precedence of override keys: module type < name pattern < ``<output>``."""
    return 0 if pattern in TYPE_KEYS else (2 if pattern == "<output>" else 1)


def resolve_overrides(targets: Sequence[Target], overrides: dict[str, float] | None) -> dict[str, float]:
    """Map override keys to target names.

    Keys are module-name globs (``"features.0"``, ``"fc*"``), ``"<output>"``
    (the last selected module) or a module type (``"<conv>"``, ``"<linear>"``).
    Where several keys match a tensor the most specific wins: ``<output>``,
    then a name pattern, then a type (Frankle & Carbin: conv 0.1, fc 0.2,
    output 0.1).
    """
    if not overrides:
        return {}
    output = output_module_name(targets)
    resolved: dict[str, float] = {}
    for pattern in sorted(overrides, key=_override_rank):
        value = overrides[pattern]
        if pattern in TYPE_KEYS:
            hit = [t.name for t in targets if isinstance(t.module, TYPE_KEYS[pattern])]
        else:
            hit = [
                t.name for t in targets
                if (pattern == "<output>" and t.module_name == output) or fnmatch.fnmatchcase(t.module_name, pattern)
            ]
        if not hit:
            raise PrunelabError(f"override {pattern!r} matches no selected module ({', '.join(t.module_name for t in targets)})")
        for name in hit:
            resolved[name] = value
    return resolved


def pruned_targets(model: nn.Module) -> list[Target]:
    """Every tensor of ``model`` that torch's pruning is attached to."""
    out = []
    for name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, (prune.BasePruningMethod,)):
                tensor = hook._tensor_name
                out.append(Target(f"{name}.{tensor}" if name else tensor, name, module, tensor))
    return out
