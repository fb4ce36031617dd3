"""Pruning methods as classes, registered by name: what a method scores, what it needs, what it supports.

A method answers one question — how important is each weight — and may, once the layer's mask is
chosen, change the weights it keeps (SparseGPT's reconstruction). *Which* weights go is decided by
the selection the user asks for, the same for every method, as ``torch.nn.utils.prune``'s
``importance_scores`` separates scoring from selection: layer-wise or global, unstructured,
structured along a dimension, or an N:M pattern (``PruningConfig``). A method declares:

* ``needs``: nothing, a ``"batch"`` (one batch of training data: SNIP, GraSP), ``"calibration"``
  (N examples whose layer inputs it reads: Wanda, SparseGPT) or the ``"input_shape"`` (SynFlow);
* ``structures``: which of ``unstructured``, ``structured`` and ``nm`` it supports;
* ``rowwise``: its scores compare within each output row only (Wanda), so unstructured selection
  prunes the same fraction of every row instead of one threshold per tensor;
* ``signed``: its scores may be negative (GraSP), so selection shifts them first;
* ``Params``: a pydantic model of its parameters (part of a state's identity when not default).

A calibration method is *sequential*: in one forward pass over the calibration examples, each
layer's inputs are read just before that layer runs — after every layer before it was pruned (and
reconstructed) — and the layer is pruned there, as both papers do. It implements ``score_layer``
(scores from the layer's input statistics, then the common selection) or ``prune_layer`` (its own
selection and weight update, SparseGPT).

Your own method: subclass :class:`Method`, and name it by import path (``technique =
"mylab.methods:Taylor"`` in a spec, ``--technique`` on the CLI; trusted because you named it) or
install it under the entry-point group ``prunelab.methods``. docs/pruning.md, "Write your own
pruning method".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
from pydantic import BaseModel, ConfigDict

from ..errors import PrunelabError, validated
from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from .targets import Target

NEEDS = ("batch", "calibration", "input_shape")
STRUCTURES = ("unstructured", "structured", "nm")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Context:
    """What a method may look at besides the model: the user's settings and the data it needs."""

    config: Any  # the PruningConfig being applied
    seed: int
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    calibration: torch.Tensor | None = None
    input_shape: Sequence[int] | None = None
    extra: dict = field(default_factory=dict)  # room for a method's own bookkeeping within one prune


class Method:
    """Base class of pruning methods. Subclasses set the class attributes below and override
    :meth:`score` (the whole model at once), :meth:`score_layer` (a calibration method, one layer
    from its input statistics) or :meth:`prune_layer` (a calibration method that chooses its own
    mask and updates the kept weights)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    structures: ClassVar[frozenset[str]] = frozenset({"unstructured", "structured", "nm"})
    scopes: ClassVar[frozenset[str]] = frozenset({"layer", "global"})
    rowwise: ClassVar[bool] = False
    signed: ClassVar[bool] = False
    hessian: ClassVar[bool] = False  # a calibration method that needs each layer's X Xᵀ (not only its column norms)
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, **params) -> None:
        where = f"pruning method {self.name or type(self).__qualname__}"
        known = set(self.Params.model_fields)
        unknown = sorted(set(params) - known)
        if unknown and self.Params.model_config.get("extra") != "allow":  # a typo would be stored, never read
            raise PrunelabError(f"{where}: no parameter {unknown[0]!r} (its parameters: "
                                f"{', '.join(sorted(known)) or 'none'})")
        self.params = validated(self.Params, params, where)

    @property
    def calibrated(self) -> bool:
        return "calibration" in self.needs

    def score(self, model: "nn.Module", targets: list["Target"], context: Context) -> dict[str, torch.Tensor] | None:
        """Scores by target name (higher: kept longer), or None for |w| computed lazily by the selection.
        Already-pruned entries are never selected again, whatever their score."""
        raise NotImplementedError(f"{type(self).__qualname__} must define score() (or score_layer for a calibration "
                                  "method)")

    def select(self, model: "nn.Module", targets: list["Target"], groups: list[list["Target"]], counts,
               context: Context) -> dict[str, torch.Tensor] | None:
        """A method with its own selection over the whole model (SynFlow prunes in exponential steps,
        rescoring between them) returns every target's keep mask; ``counts(group, eligible, total)``
        is how many entries a group loses in all. None (default): the common selection of scores."""
        return None

    def score_layer(self, target: "Target", statistics, context: Context) -> torch.Tensor:
        """A calibration method's scores for one layer, of the weight's shape, from ``statistics``
        (:class:`~prunelab.pruning.calibrated.InputStatistics` of its inputs)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define score_layer() or prune_layer()")

    def prune_layer(self, target: "Target", statistics, keep_fraction: float | None, pattern: tuple[int, int] | None,
                    eligible: torch.Tensor | None, context: Context) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """A calibration method that selects its own mask: (keep mask, new weight or None), or None to
        use :meth:`score_layer` and the common selection."""
        return None


# Installed packages add methods under the entry-point group prunelab.methods (the user installed them:
# trusted like a module they import).
METHODS: Registry[type[Method]] = Registry("pruning method", group="prunelab.methods")


def register(name: str, summary: str = ""):
    """Register a :class:`Method` subclass under ``name`` (``@register("wanda", "...")``)."""
    def decorator(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"pruning method {name!r} must be a subclass of prunelab.pruning.Method")
        cls.name = name
        cls.summary = summary or (cls.__doc__ or "").strip().split("\n")[0]
        return METHODS.register(name, cls.summary)(cls)

    return decorator


def method_class(name: str) -> type[Method]:
    """The class a method name stands for: registered (built in or installed) or ``pkg.mod:Class``."""
    _builtins()
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PrunelabError(f"pruning method {name!r} is {type(cls).__name__}, not a subclass of "
                            "prunelab.pruning.Method")
    return cls


def make_method(name: str, params: dict | None = None) -> Method:
    return method_class(name)(**(params or {}))


def check_method(method: Method, structure: str, scope: str, pattern) -> Method:
    """``method``, when it can do what a configuration asks (else one line naming what it supports)."""
    name = method.name or type(method).__qualname__
    granularity = "nm" if pattern is not None else structure
    if granularity not in method.structures:
        supported = ", ".join("N:M patterns" if s == "nm" else s for s in sorted(method.structures))
        raise PrunelabError(f"pruning method {name!r} supports {supported}, not "
                            f"{'an N:M pattern' if granularity == 'nm' else granularity} pruning")
    if scope not in method.scopes:
        raise PrunelabError(f"pruning method {name!r} prunes with scope {' or '.join(sorted(method.scopes))}, not "
                            f"{scope} (it compares weights {'within each output row' if method.rowwise else 'per layer'})")
    return method


def _builtins() -> None:
    from . import builtin_methods  # noqa: F401 (registers prunelab's own methods)


def methods_table() -> list[tuple[str, str, str]]:
    """(name, what it needs and supports, summary) for every available method."""
    _builtins()
    rows = []
    for entry in METHODS:
        try:
            cls = METHODS.get(entry.name)
        except PrunelabError as exc:
            rows.append((entry.name, "", f"cannot be loaded: {exc}"))
            continue
        needs = ", ".join(sorted(cls.needs)) or "nothing"
        supports = ", ".join("N:M" if s == "nm" else s for s in sorted(cls.structures))
        rows.append((entry.name, f"needs {needs}; {supports}", entry.summary))
    return rows
