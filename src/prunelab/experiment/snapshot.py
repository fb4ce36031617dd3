"""A model state in memory: weights, masks, optimizer state, iteration, metrics.

Weights are kept in *canonical* form — the state dict of the unpruned model
(torch's ``weight_orig`` saved under ``weight``) — and masks separately, so
the same tensors describe a model whether or not torch's pruning hooks are
attached, and identical weights hash to identical blobs.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..pruning.masks import Masks, apply_masks, get_masks


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the architecture without loading data."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    init: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, seed: int = 0) -> nn.Module:
        from ..tasks.models import build_model

        return build_model(self.model, self.input_shape, self.num_classes, seed=seed, init=self.init,
                           trust_import=False, **dict(self.options))  # the name may come from a store

    def to_json(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "init": self.init, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict) -> "ModelSpec":
        return cls(data["model"], tuple(data["input_shape"]), int(data["num_classes"]), data.get("init"),
                   frozen_options(data.get("options", {})))


def frozen_options(options: dict | None) -> tuple[tuple[str, Any], ...]:
    """Model options as a hashable, ordered tuple: list values (``hidden = [16, 8]``) become tuples,
    which the identity dumps as the same JSON list, so freezing never changes a hash."""
    def freeze(value):
        if isinstance(value, (list, tuple)):
            return tuple(freeze(v) for v in value)
        return value

    return tuple(sorted((k, freeze(v)) for k, v in (options or {}).items()))


@dataclass(frozen=True)
class Snapshot:
    spec: ModelSpec
    dataset: str  # the task this state's model belongs to
    weights: dict[str, torch.Tensor]  # canonical state dict (no _orig / _mask entries)
    masks: Masks = field(default_factory=dict)
    optimizer: dict | None = None  # torch optimizer state_dict, or None
    iteration: int = 0
    metrics: dict = field(default_factory=dict)

    def model(self) -> nn.Module:
        """A fresh module holding these weights, with the masks attached via torch's pruning."""
        module = _fresh_module(self.spec)
        missing, unexpected = module.load_state_dict(self.weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not fit {self.spec.model}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if self.masks:
            apply_masks(module, self.masks)
        return module

    def evolve(self, **changes) -> "Snapshot":
        return replace(self, **changes)

    @classmethod
    def capture(cls, model: nn.Module, spec: ModelSpec, dataset: str, *, optimizer: dict | None = None,
                iteration: int = 0, metrics: dict | None = None) -> "Snapshot":
        return cls(spec, dataset, canonical_weights(model), get_masks(model), optimizer, iteration, metrics or {})


_TEMPLATES: "OrderedDict[ModelSpec, nn.Module]" = OrderedDict()
_TEMPLATE_COUNT = 4


def _fresh_module(spec: ModelSpec) -> nn.Module:
    """``spec.build()``, as a copy of a module built once per process.

    Every stored weight is loaded over it, so its random initialisation is wasted work: for a
    small model, building (seeding, initialising, the shape check) cost more than the training
    step it precedes in a short study. A deep copy of the same seed-0 build is the same module.
    """
    try:
        template = _TEMPLATES.get(spec)
    except TypeError:  # options that cannot be hashed: no cache
        return spec.build()
    if template is not None:
        _TEMPLATES.move_to_end(spec)
        return _copy_module(template)
    template = spec.build()
    try:
        module = _copy_module(template)
    except Exception:  # a user model that cannot be copied is built every time
        return template
    _TEMPLATES[spec] = template
    while len(_TEMPLATES) > _TEMPLATE_COUNT:
        _TEMPLATES.popitem(last=False)
    return module


_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_COPY_PROTOCOL = ("__deepcopy__", "__copy__", "__reduce_ex__", "__reduce__", "__getstate__")


def _copy_module(module: nn.Module) -> nn.Module:
    """``copy.deepcopy(module)``, in a third of the time for the modules models are made of.

    A module built from layers (Linear, Conv, BatchNorm, Sequential, ...) holds parameters,
    buffers, submodules, empty hook tables and plain settings; those are copied here directly
    (the deep copy rebuilt each by reduction: ~0.8 ms for a three-layer MLP, a tenth of a small
    state's cost besides training). Anything else in it — a hook, a tensor attribute, an object —
    sends the whole copy to ``copy.deepcopy``.
    """
    copied = _copy_plain(module, {})
    return copy.deepcopy(module) if copied is None else copied


def _copy_plain(module: nn.Module, memo: dict) -> nn.Module | None:
    if id(module) in memo:  # a submodule used twice stays one module
        return memo[id(module)]
    cls = type(module)
    if any(getattr(cls, name, None) is not getattr(nn.Module, name, None) for name in _COPY_PROTOCOL) or any(
            "__slots__" in vars(c) for c in cls.__mro__[:-1]):
        return None  # the class says how it copies, or keeps state outside __dict__
    new = object.__new__(cls)
    memo[id(module)] = new
    state = {}
    for key, value in module.__dict__.items():
        if key == "_parameters":
            params = type(value)()
            for name, p in value.items():
                if p is not None and id(p) not in memo:
                    if type(p) is not nn.Parameter or p.__dict__ or p.grad is not None:
                        return None
                    memo[id(p)] = nn.Parameter(p.detach().clone(memory_format=torch.preserve_format), p.requires_grad)
                params[name] = None if p is None else memo[id(p)]
            state[key] = params
        elif key == "_buffers":
            buffers = type(value)()
            for name, b in value.items():
                if b is not None and id(b) not in memo:
                    if type(b) is not torch.Tensor or b.__dict__ or b.requires_grad:
                        return None
                    memo[id(b)] = b.clone(memory_format=torch.preserve_format)
                buffers[name] = None if b is None else memo[id(b)]
            state[key] = buffers
        elif key == "_modules":
            children = type(value)()
            for name, child in value.items():
                children[name] = None if child is None else _copy_plain(child, memo)
                if child is not None and children[name] is None:
                    return None
            state[key] = children
        elif isinstance(value, dict):  # hook tables: only empty ones (a hook may hold anything)
            if value:
                return None
            state[key] = type(value)()
        elif isinstance(value, (set, list, tuple)):
            if not all(isinstance(v, _SCALARS) for v in value):
                return None
            state[key] = value if isinstance(value, tuple) else type(value)(value)
        elif isinstance(value, _SCALARS):
            state[key] = value
        else:
            return None
    new.__setstate__(state)  # as the deep copy ends (Conv fills in settings older pickles lacked)
    return new


def canonical_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("_mask"):
            continue
        out[name.removesuffix("_orig")] = tensor.detach().clone()
    return out
