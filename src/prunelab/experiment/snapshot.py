"""A model state in memory: weights, masks, optimizer state, iteration, metrics.

Weights are kept in *canonical* form — the state dict of the unpruned model
(torch's ``weight_orig`` saved under ``weight``) — and masks separately, so
the same tensors describe a model whether or not torch's pruning hooks are
attached, and identical weights hash to identical blobs.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..caches import CACHES
from ..errors import PrunelabError
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

    def model(self, attach_masks: bool = True) -> nn.Module:
        """A fresh module holding these weights, with the masks attached via torch's pruning (or, with
        ``attach_masks=False``, without them: for a caller that applies ``masks`` its own way)."""
        module, loaded = _fresh_module(self.spec, self.weights)
        if not loaded:
            try:
                missing, unexpected = module.load_state_dict(self.weights, strict=False)
            except RuntimeError as error:  # a shape that differs: the model's code changed since the state was stored
                detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
                raise PrunelabError(f"the stored weights do not fit model {self.spec.model!r} with options "
                                    f"{dict(self.spec.options)} as this prunelab builds it ({detail}); the state was "
                                    "stored by a version whose model differs: train it again in a new store") from None
            if missing or unexpected:
                raise ValueError(f"weights do not fit {self.spec.model}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if self.masks and attach_masks:
            apply_masks(module, in_module_order(module, self.masks))
        return module

    def evolve(self, **changes) -> "Snapshot":
        return replace(self, **changes)

    @classmethod
    def capture(cls, model: nn.Module, spec: ModelSpec, dataset: str, *, optimizer: dict | None = None,
                iteration: int = 0, metrics: dict | None = None, previous: "Snapshot | None" = None,
                masks: Masks | None = None) -> "Snapshot":
        """The state of ``model``. ``previous``: the state it started from; a weight or mask equal to
        that state's is that state's tensor, so the two share it, what the store computed from it (its
        hash, a mask's packed form) and the memory it takes (a prune keeps every weight, a training
        every mask). ``masks``: the masks of a model that holds them outside torch's pruning (trained
        under them with its pruned entries at zero); default: the ones attached to it."""
        masks = get_masks(model) if masks is None else dict(masks)
        for name, mask in masks.items():
            masks[name] = _same_or(previous.masks.get(name) if previous else None, mask, copy=False)
        return cls(spec, dataset, canonical_weights(model, previous.weights if previous else None), masks,
                   optimizer, iteration, metrics or {})


def in_module_order(module: nn.Module, masks: Masks) -> Masks:
    """``masks`` in the order ``module`` (unpruned) holds its parameters.

    torch's pruning re-registers a tensor it prunes after the module's other parameters, and runs
    (and lists) the pruned tensors of a module in the order it was given them; a mask dict comes in
    module order when made in memory and in text order when loaded from the store ('1.bias' before
    '1.weight'). Attached in one order, a module's parameters and masks come out alike either way."""
    position = {name: i for i, (name, _) in enumerate(module.named_parameters())}
    ordered = sorted(masks, key=lambda name: position.get(name, len(position)))
    return masks if ordered == list(masks) else {name: masks[name] for name in ordered}


def parameter_names(spec: ModelSpec) -> tuple[str, ...]:
    """The parameter names of ``spec``'s architecture in the order its unpruned module registers
    them: an order that pruning a model, and how its masks were ordered, do not change."""
    try:
        hash(spec)
    except TypeError:  # options that cannot be hashed: found each time
        return _parameter_names(spec)
    return _cached_parameter_names(spec)


def _parameter_names(spec: ModelSpec) -> tuple[str, ...]:
    module, _ = _fresh_module(spec)
    return tuple(name for name, _ in module.named_parameters())


_cached_parameter_names = functools.lru_cache(maxsize=64)(_parameter_names)


_TEMPLATE_COUNT = 4


def _fresh_module(spec: ModelSpec, weights: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, bool]:
    """``spec.build()``, as a copy of a module built once per process, and whether the copy already
    holds ``weights`` (what ``load_state_dict`` would have put in it).

    Every stored weight is loaded over it, so its random initialisation is wasted work: for a
    small model, building (seeding, initialising, the shape check) cost more than the training
    step it precedes in a short study. A deep copy of the same seed-0 build is the same module,
    and a copy whose tensors start as the weights (see :class:`_Plan`) skips both the template's
    values and ``load_state_dict``.
    """
    try:
        cached = CACHES.module_templates.get(spec)  # spec → (template, its copy plan)
    except TypeError:  # options that cannot be hashed: no cache
        return spec.build(), False
    first = None
    if cached is None:
        template = spec.build()
        plan = _plan(template, {})
        if plan is None:
            try:
                first = copy.deepcopy(template)
            except Exception:  # a user model that cannot be copied is built every time
                return template, False
        cached = CACHES.module_templates[spec] = (template, plan)
        while len(CACHES.module_templates) > _TEMPLATE_COUNT:
            CACHES.module_templates.popitem(last=False)
    CACHES.module_templates.move_to_end(spec)
    template, plan = cached
    if plan is None:
        return (copy.deepcopy(template) if first is None else first), False
    if weights is not None:
        loaded = plan.copy({}, _Loading(weights))
        if loaded is not None:
            return loaded, True
    return plan.copy({}), False


class _Loading:
    """What a copy is filled with: the tensors of a state dict, by key, and which were used."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        self.weights, self.used = weights, set()

    def take(self, key: str, like: torch.Tensor) -> torch.Tensor | None:
        """A tensor laid out like ``like`` holding ``weights[key]`` (as ``load_state_dict`` copies it
        into ``like``); None when the key is missing or its shape or dtype differs (then the load's
        own checks and messages apply)."""
        value = self.weights.get(key)
        if value is None or value.shape != like.shape or value.dtype != like.dtype:
            return None
        self.used.add(key)
        return torch.empty_like(like, memory_format=torch.preserve_format).copy_(value.detach())  # no graph


_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_SCALAR_TYPES = frozenset(_SCALARS)
_COPY_PROTOCOL = ("__deepcopy__", "__copy__", "__reduce_ex__", "__reduce__", "__getstate__")
# Classes whose state-dict loading is the plain copy of every parameter and persistent buffer (the
# batch norms' own only adds a counter that older state dicts lacked, which the copy never meets:
# every key must be present).
_PLAIN_LOADING = (nn.modules.batchnorm._NormBase,)


@functools.lru_cache(maxsize=None)
def _class_kind(cls: type) -> tuple[bool, bool]:
    """(can its modules be copied plainly, loaded plainly): no when the class says how it copies
    or keeps state outside ``__dict__``, or loads a state dict its own way. (Asked once a class:
    asked on every module of every copy, it would be a large share of the copy's time.)"""
    copies = not any(getattr(cls, name, None) is not getattr(nn.Module, name, None) for name in _COPY_PROTOCOL) and not any(
        "__slots__" in vars(c) for c in cls.__mro__[:-1])
    loads = cls.get_extra_state is nn.Module.get_extra_state and (
        cls._load_from_state_dict is nn.Module._load_from_state_dict or issubclass(cls, _PLAIN_LOADING))
    return copies, loads


_SHARED, _EMPTY, _SEQUENCE, _PARAMETERS, _BUFFERS, _CHILDREN = range(6)


class _Plan:
    """How to copy one plain module (and, through its children's plans, the tree under it) as
    ``copy.deepcopy`` would, in a fraction of the time for the modules models are made of (the deep
    copy rebuilds each by reduction; docs/benchmarks/study_overhead.md): what ``_plan`` found once,
    replayed by ``copy``. Worked out on every copy, the checks of each ``__dict__`` entry of each
    submodule cost more than copying the tensors of a small model. With ``loading``, the copy's
    parameters and persistent buffers hold its tensors instead of the module's, exactly as
    ``load_state_dict`` would leave them (None when it could not be sure it does).

    A plan is only valid while its module is unchanged: it is made for a template, which nothing
    but ``_fresh_module`` sees and nothing changes."""

    def __init__(self, module: nn.Module, loads: bool) -> None:
        self.module, self.loads = module, loads
        self.entries: list[tuple[str, int, Any]] = []

    def copy(self, memo: dict, loading: _Loading | None = None, prefix: str = "") -> nn.Module | None:
        if id(self.module) in memo:  # a submodule used twice stays one module
            return memo[id(self.module)]
        if loading is not None and not self.loads:
            return None  # the class loads its own way
        new = object.__new__(type(self.module))
        memo[id(self.module)] = new
        state = {}
        for key, kind, value in self.entries:
            if kind == _SHARED:
                state[key] = value
            elif kind == _EMPTY:
                state[key] = value()
            elif kind == _SEQUENCE:
                state[key] = value(self.module.__dict__[key])
            elif kind == _CHILDREN:
                children = state[key] = type(self.module.__dict__[key])()
                for name, plan in value:
                    children[name] = None if plan is None else plan.copy(memo, loading, f"{prefix}{name}.")
                    if plan is not None and children[name] is None:
                        return None
            else:
                tensors = state[key] = type(self.module.__dict__[key])()
                for name, t, persistent in value:
                    if t is not None and id(t) not in memo:
                        if loading is None or not persistent:
                            data = t.detach().clone(memory_format=torch.preserve_format)
                        else:
                            data = loading.take(prefix + name, t.detach())
                            if data is None:
                                return None
                        memo[id(t)] = nn.Parameter(data, t.requires_grad) if kind == _PARAMETERS else data
                    elif t is not None and loading is not None and persistent and loading.take(prefix + name, t.detach()) is None:
                        return None  # a tied tensor's second name: load_state_dict would load it too
                    tensors[name] = None if t is None else memo[id(t)]
        new.__setstate__(state)  # as the deep copy ends (Conv fills in settings older pickles lacked)
        if loading is not None and not prefix and loading.used != loading.weights.keys():
            return None  # keys the module does not have: load_state_dict says which
        return new


def _plan(module: nn.Module, plans: dict) -> _Plan | None:
    """The copy plan of ``module``, or None when it is not plain: only parameters (plain, without
    gradients), tensor buffers, submodules, empty hook tables and plain settings."""
    if id(module) in plans:
        return plans[id(module)]
    cls = type(module)
    copies, loads = _class_kind(cls)
    if not copies:
        return None
    plan = plans[id(module)] = _Plan(module, loads)
    for key, value in module.__dict__.items():
        if key == "_parameters":
            for p in value.values():
                if p is not None and (type(p) is not nn.Parameter or p.__dict__ or p.grad is not None):
                    return None
            plan.entries.append((key, _PARAMETERS, [(name, p, True) for name, p in value.items()]))
        elif key == "_buffers":
            for b in value.values():
                if b is not None and (type(b) is not torch.Tensor or b.__dict__ or b.requires_grad):
                    return None
            plan.entries.append((key, _BUFFERS, [(name, b, name not in module._non_persistent_buffers_set)
                                                 for name, b in value.items()]))
        elif key == "_modules":
            children = []
            for name, child in value.items():
                children.append((name, None if child is None else _plan(child, plans)))
                if child is not None and children[-1][1] is None:
                    return None
            plan.entries.append((key, _CHILDREN, children))
        elif type(value) in _SCALAR_TYPES or isinstance(value, _SCALARS):
            plan.entries.append((key, _SHARED, value))
        elif isinstance(value, dict):  # hook tables: only empty ones (a hook may hold anything)
            if value:
                return None
            plan.entries.append((key, _EMPTY, type(value)))
        elif isinstance(value, (set, list, tuple)):
            if not all(isinstance(v, _SCALARS) for v in value):
                return None
            plan.entries.append((key, _SHARED, value) if isinstance(value, tuple) else (key, _SEQUENCE, type(value)))
        else:
            return None
    return plan


def canonical_weights(model: nn.Module, previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict in canonical form, each tensor a copy of its own — or ``previous``'s
    tensor of that name where the two are equal."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("_mask"):
            continue
        key = name.removesuffix("_orig")
        out[key] = _same_or(previous.get(key) if previous else None, tensor)
    return out


def _same_or(before: torch.Tensor | None, now: torch.Tensor, copy: bool = True) -> torch.Tensor:
    """``before`` when it holds what ``now`` holds (``torch.equal`` stops at the first difference,
    so a changed tensor costs next to nothing), else ``now`` (a copy of it with ``copy``)."""
    now = now.detach()
    if before is not None and before.dtype == now.dtype and before.shape == now.shape and before.device == now.device \
            and torch.equal(before, now):
        return before
    return now.clone() if copy else now
