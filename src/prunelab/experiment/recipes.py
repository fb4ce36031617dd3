"""Recipes: how a state is produced from its parent.

A recipe is a small frozen dataclass with a ``version`` and ``run(ctx,
parent) -> Snapshot``. Its fields are its parameters; fields holding a
:class:`~prunelab.experiment.tree.State` are *references* (e.g. the state to
rewind to): their hash enters the child's identity and the scheduler runs them
first. Bump ``version`` when a recipe's behaviour changes: every state it
produced gets a new identity.

A *probe* (``probe = True``) measures a state without producing a new one;
its result is attached to the state it measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import PrunelabError
from ..pruning.masks import sparsity_report
from ..pruning.masked import train_masked
from ..pruning.methods import PruningConfig, prune
from ..tasks.evaluation import evaluate
from ..tasks.training import TrainConfig
from .snapshot import ModelSpec, Snapshot

if TYPE_CHECKING:
    from .executors import RunContext


class StateLike:
    """Anything with a state ``hash``: a tree :class:`State` or a bare :class:`Ref`."""

    hash: str


@dataclass(frozen=True)
class Ref(StateLike):
    """A reference to a state by hash (what recipes carry to worker processes)."""

    hash: str


class Recipe:
    """Base class. Subclasses are ``@dataclass(frozen=True)``."""

    version: ClassVar[int] = 1
    probe: ClassVar[bool] = False

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def refs(self) -> dict[str, Any]:
        """Referenced states by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), StateLike)}

    def detached(self) -> "Recipe":
        """A copy whose state references are bare :class:`Ref` s (cheap to send to workers)."""
        refs = self.refs()
        return dataclasses.replace(self, **{k: Ref(v.hash) for k, v in refs.items()}) if refs else self

    def params(self) -> dict:
        """JSON parameters; referenced states appear as {"$state": hash}."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StateLike):
                value = {"$state": value.hash}
            elif hasattr(value, "model_dump"):
                value = value.model_dump(mode="json")
            out[f.name] = value
        return out

    def describe(self) -> str:
        """Short label for trees and tables."""
        return self.type_name

    def run(self, ctx: "RunContext", parent: Snapshot | None) -> Snapshot:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Init(Recipe):
    """The root: a freshly initialised model for a task."""

    dataset: str
    model: str
    seed: int = 0
    init: str | None = None
    model_options: tuple[tuple[str, Any], ...] = ()
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0

    def describe(self) -> str:
        return f"{self.model} on {self.dataset}, seed {self.seed}"

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, tuple(self.input_shape), self.num_classes, self.init, tuple(self.model_options))

    def run(self, ctx, parent):
        model = self.spec().build(seed=self.seed)
        return Snapshot.capture(model, self.spec(), self.dataset, iteration=0,
                                metrics={"parameters": sum(p.numel() for p in model.parameters())})


@dataclass(frozen=True)
class Train(Recipe):
    """Train from the parent's iteration up to ``stop`` (default: the configured end).

    The data order depends only on ``data_seed`` (default: the root's seed)
    and the iteration, and the learning rate only on the iteration, so
    Train(stop=k) followed by Train() equals one Train(). Masks stay applied.
    """

    config: TrainConfig
    stop: int | None = None
    data_seed: int | None = None
    evaluate: bool = True
    mode: str = "reapply"

    def describe(self) -> str:
        c = self.config
        end = self.stop if self.stop is not None else (c.iterations or f"{c.epochs} ep")
        return f"train→{end} ({c.optimizer} lr {c.lr:g})"

    def run(self, ctx, parent):
        data = ctx.dataset(parent.dataset)
        model = parent.model()
        seed = ctx.root_seed if self.data_seed is None else self.data_seed
        total = self.config.total_iterations(len(data.train))
        stop = total if self.stop is None else self.stop
        if stop < parent.iteration:
            raise PrunelabError(f"Train(stop={stop}) starts from a state already at iteration {parent.iteration}")
        result = train_masked(model, data, self.config, seed=seed, start=parent.iteration, stop=stop,
                              optimizer_state=parent.optimizer, mode=self.mode)
        metrics = {"train_seconds": result.seconds, "curve": result.curve,
                   "early_stopping_iteration": result.early_stopping_iteration}
        if self.evaluate:
            metrics.update(_evaluation_metrics(model, data, ("validation", "test")))
        metrics["sparsity"] = sparsity_report(model).sparsity
        return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=result.optimizer_state,
                                iteration=stop, metrics=metrics)


@dataclass(frozen=True)
class Prune(Recipe):
    """Prune with any method of the pruning layer. SNIP draws a batch with the state's seed."""

    config: PruningConfig
    batch_size: int = 100
    seed: int | None = None  # None: derived from the state's hash

    def describe(self) -> str:
        c = self.config
        amount = f"{c.amount}" if c.amount is not None else f"to {c.target}"
        return f"prune {c.method} {c.structure} {c.scope} {amount}"

    def run(self, ctx, parent):
        data = ctx.dataset(parent.dataset)
        model = parent.model()
        seed = ctx.seed if self.seed is None else self.seed
        batch = None
        if self.config.method == "snip":
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(data.train), generator=g)[: self.batch_size]
            batch = (data.train.x[idx], data.train.y[idx])
        config = self.config.model_copy(update={"seed": seed})
        result = prune(model, config, batch=batch, input_shape=data.input_shape)
        metrics = {"sparsity": result.report.sparsity, "layers": {l.name: l.sparsity for l in result.report.layers},
                   "kept_flops": result.report.kept_flops, "flops": result.report.flops}
        return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=parent.optimizer,
                                iteration=parent.iteration, metrics=metrics)


@dataclass(frozen=True)
class Rewind(Recipe):
    """Keep the parent's masks; take weights, optimizer state and iteration from ``to``."""

    to: Any  # a State

    def describe(self) -> str:
        return f"rewind→{self.to.hash[:8]}"

    def run(self, ctx, parent):
        target = ctx.load(self.to)
        if target.spec != parent.spec:
            raise PrunelabError("Rewind: the target state has a different architecture")
        return Snapshot(parent.spec, parent.dataset, target.weights, parent.masks, target.optimizer,
                        target.iteration, {"rewound_to": self.to.hash, "iteration": target.iteration})


@dataclass(frozen=True)
class Evaluate(Recipe):
    """Probe: loss, accuracy, per-class metrics and sparsity on the given splits."""

    probe: ClassVar[bool] = True
    splits: tuple[str, ...] = ("test",)

    def describe(self) -> str:
        return f"evaluate {','.join(self.splits)}"

    def run(self, ctx, parent):
        data = ctx.dataset(parent.dataset)
        model = parent.model()
        metrics = _evaluation_metrics(model, data, self.splits)
        metrics["sparsity"] = sparsity_report(model).sparsity
        return metrics


def _evaluation_metrics(model, data, splits) -> dict:
    out = {}
    for split in splits:
        ev = evaluate(model, data.split(split), data.class_names)
        out[split] = ev.to_dict()
    return out

