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
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..caches import CACHES
from ..errors import PrunelabError
from ..registry import Registry
from ..pruning.masks import output_positions, sparsity_report
from ..pruning.masked import train_masked
from ..pruning.methods import PruningConfig, prune
from ..tasks.evaluation import evaluate
from ..tasks.training import TrainConfig
from .hashing import layer_seed
from .snapshot import ModelSpec, Snapshot

if TYPE_CHECKING:
    from .context import RunContext


class StateLike:
    """Anything with a state ``hash``: a tree :class:`State` or a bare :class:`Ref`."""

    hash: str


@dataclass(frozen=True)
class Ref(StateLike):
    """A reference to a state by hash (what recipes carry to worker processes)."""

    hash: str


OMIT_DEFAULT = {"identity": "omit_default"}  # see Recipe.params


def identity_dump(config) -> dict:
    """A pydantic config as JSON for identities (cached per config: a 100,000-state study shares a
    handful of training configs; the dict is shared, read it, never change it); see ``_identity_dump``."""
    try:
        return _cached_identity_dump(config)
    except TypeError:  # a config holding an unhashable value (a dict field): keyed by its JSON instead
        key = (type(config), config.model_dump_json())
        hit = CACHES.identity_dumps.get(key)
        if hit is None:
            from .hashing import canonical

            if len(CACHES.identity_dumps) > 256:
                CACHES.identity_dumps.clear()
            hit = CACHES.identity_dumps[key] = canonical(_identity_dump(config))
        return hit


@functools.lru_cache(maxsize=256)
def _cached_identity_dump(config) -> dict:
    from .hashing import canonical

    return canonical(_identity_dump(config))  # hashed as it is by every identity that holds it


def _identity_dump(config) -> dict:
    """A pydantic config as JSON for identities: every field, except ``OMIT_DEFAULT`` ones at their default.

    A field marked ``{"identity": "device"}`` enters as its backend only (``cuda``, not ``cuda:1``),
    and not at all on the CPU, so stores computed before devices existed keep their hashes.
    """
    dumped = config.model_dump(mode="json")
    for name, info in type(config).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        rule, value = extra.get("identity"), getattr(config, name)
        if rule == "omit_default" and value == info.get_default(call_default_factory=True):
            dumped.pop(name, None)
        elif rule == "device":
            backend = str(value).partition(":")[0]
            if backend == "cpu":
                dumped.pop(name, None)
            else:
                dumped[name] = backend
    return dumped


class Recipe:
    """Base class. Subclasses are ``@dataclass(frozen=True)``."""

    version: ClassVar[int] = 1
    probe: ClassVar[bool] = False

    @property
    def type_name(self) -> str:
        """The recipe's name in identities: the class name for prunelab's own recipes, the
        module-qualified name for anyone else's (a user class called ``Train`` is not ours)."""
        cls = type(self)
        if cls.__module__.startswith("prunelab."):
            return cls.__name__
        return f"{cls.__module__}.{cls.__qualname__}"

    def refs(self) -> dict[str, Any]:
        """Referenced states by name (``field`` or ``field.i`` for a tuple of states)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StateLike):
                out[f.name] = value
            elif isinstance(value, tuple) and value and all(isinstance(v, StateLike) for v in value):
                out.update({f"{f.name}.{i}": v for i, v in enumerate(value)})
        return out

    def detached(self) -> "Recipe":
        """A copy whose state references are bare :class:`Ref` s (cheap to send to workers)."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StateLike):
                changes[f.name] = Ref(value.hash)
            elif isinstance(value, tuple) and value and all(isinstance(v, StateLike) for v in value):
                changes[f.name] = tuple(Ref(v.hash) for v in value)
        return dataclasses.replace(self, **changes) if changes else self

    def params(self) -> dict:
        """JSON parameters; referenced states appear as {"$state": hash}.

        Schema evolution: a field added after a store format existed is declared with
        ``OMIT_DEFAULT`` (dataclass ``metadata`` or pydantic ``json_schema_extra``) and enters the
        identity only when it is not at its default, so adding it does not fork existing stores.
        """
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("identity") == "omit_default" and value == f.default:
                continue
            if isinstance(value, StateLike):
                value = {"$state": value.hash}
            elif isinstance(value, tuple) and value and all(isinstance(v, StateLike) for v in value):
                value = [{"$state": v.hash} for v in value]
            elif hasattr(value, "model_dump"):
                value = identity_dump(value)
            out[f.name] = value
        return out

    def describe(self) -> str:
        """Short label for trees and tables."""
        return self.type_name

    def group_key(self, parent: Snapshot) -> tuple | None:
        """Recipes that can compute several states in one pass return a key here (see Train)."""
        return None

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        """The training iteration the state this recipe makes is at, known before it runs (what a
        plan's work is estimated from, :mod:`.scheduling`): by default its parent's. ``train_size``:
        examples in the training split its model trains on; ``end_of(state)``: another state's."""
        return parent_end

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
    # A user dataset's content (sha256 of its tensors): changing the data changes every identity
    # built on it. Built-in datasets are pinned by their own checksums and generators: None.
    data_fingerprint: str | None = dataclasses.field(default=None, metadata=OMIT_DEFAULT)

    def describe(self) -> str:
        return f"{self.model} on {self.dataset}, seed {self.seed}"

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, tuple(self.input_shape), self.num_classes, self.init, tuple(self.model_options))

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return 0

    def run(self, ctx, parent):
        if self.data_fingerprint is not None:
            from ..tasks.datasets import dataset_fingerprint

            now = dataset_fingerprint(ctx.dataset(self.dataset))
            if now != self.data_fingerprint:
                raise PrunelabError(f"dataset {self.dataset!r} changed since this state was planned "
                                    f"(fingerprint {now[:12]}, planned {self.data_fingerprint[:12]})")
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

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return self.stop if self.stop is not None else self.config.total_iterations(train_size)

    def run(self, ctx, parent):
        data = ctx.dataset(parent.dataset)
        seed = ctx.root_seed if self.data_seed is None else self.data_seed
        total = self.config.total_iterations(len(data.train))
        stop = total if self.stop is None else self.stop
        if stop < parent.iteration:
            raise PrunelabError(f"Train(stop={stop}) starts from a state already at iteration {parent.iteration}")
        if self.config.vectorize:  # alone: the same padded pass a group would give it (see train_group)
            return self.run_group([ctx], [parent])[0]
        # Re-applying masks after each step trains the model without torch's pruning: the module is
        # built without it and the masks go to train_masked (the same weights, none of torch's
        # pruning attached here, taken off there and put back for capture to read off).
        masks = parent.masks if self.mode == "reapply" and parent.masks else None
        model = parent.model(attach_masks=masks is None)
        try:
            result = train_masked(model, data, self.config, seed=seed, start=parent.iteration, stop=stop,
                                  optimizer_state=parent.optimizer, mode=self.mode, masks=masks)
        finally:
            if self.config.device != "cpu":  # (on the CPU, .to walks every tensor for nothing)
                model.to("cpu")  # stored tensors are CPU tensors, whatever trained them
        return self._finish(model, parent, data, result, stop, masks)

    def _finish(self, model, parent, data, result, stop, masks=None) -> Snapshot:
        """The trained state. ``masks``: the model was trained without torch's pruning, under these."""
        metrics = {"train_seconds": result.seconds, "curve": result.curve,
                   "early_stopping_iteration": result.early_stopping_iteration}
        if result.device != "cpu":
            metrics["device"] = result.device  # provenance: which accelerator made these bits
        if getattr(result, "group", None):
            metrics["vectorized"] = result.group
        if getattr(result, "cuda_graph", None):
            metrics["cuda_graph"] = result.cuda_graph  # how it ran (replays give the eager loop's bits)
        if self.evaluate:
            metrics.update(_evaluation_metrics(model, data, ("validation", "test")))
        kept = None if masks is None else {name: int(torch.count_nonzero(keep)) for name, keep in masks.items()}
        metrics["sparsity"] = sparsity_report(model, kept=kept).sparsity
        return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=result.optimizer_state,
                                iteration=stop, metrics=metrics, previous=parent, masks=masks)

    def group_key(self, parent: Snapshot) -> tuple | None:
        """States whose Train has the same key can share one vectorised pass (None: never)."""
        if not self.config.vectorize:
            return None
        step = None
        if parent.optimizer:
            steps = {float(v["step"]) for v in parent.optimizer.get("state", {}).values() if "step" in v}
            step = tuple(sorted(steps))
        return (type(self).__name__, parent.spec, parent.dataset, self.config, self.stop, self.mode, self.evaluate,
                parent.iteration, step)

    def run_group(self, ctxs: list, parents: list[Snapshot]) -> list:
        """Train every parent with this recipe's config in one vectorised pass (padded to the width).

        Returns one Snapshot per parent, or the exception that model raised (it diverged)."""
        from ..tasks.vectorized import train_group

        recipes = [getattr(c, "recipe", self) for c in ctxs]
        data = ctxs[0].dataset(parents[0].dataset)
        total = self.config.total_iterations(len(data.train))
        stop = total if self.stop is None else self.stop
        seeds = []
        for ctx, parent, recipe in zip(ctxs, parents, recipes):
            if stop < parent.iteration:
                raise PrunelabError(f"Train(stop={stop}) starts from a state already at iteration {parent.iteration}")
            data_seed = getattr(recipe, "data_seed", None)
            seeds.append(ctx.root_seed if data_seed is None else data_seed)
        models = [p.model() for p in parents]
        results = train_group(models, data, self.config, seeds=seeds, start=parents[0].iteration, stop=stop,
                              optimizer_states=[p.optimizer for p in parents], labels=[c.hash for c in ctxs])
        out = []
        for model, parent, result in zip(models, parents, results):
            out.append(result if isinstance(result, Exception) else self._finish(model, parent, data, result, stop))
        return out


@dataclass(frozen=True)
class Prune(Recipe):
    """Prune with any method of the pruning layer. SNIP draws a batch with the state's seed."""

    config: PruningConfig
    batch_size: int = 100
    seed: int | None = None  # None: derived from the state's hash
    # measure the pruned model as it is (validation and test), for studies that compare methods
    # without retraining (reset = "none")
    evaluate: bool = dataclasses.field(default=False, metadata=OMIT_DEFAULT)

    def describe(self) -> str:
        c = self.config
        if c.pattern is not None:
            return f"prune {c.method} {c.pattern}"
        amount = f"{c.amount}" if c.amount is not None else f"to {c.target}"
        return f"prune {c.method} {c.structure} {c.scope} {amount}"

    def run(self, ctx, parent):
        data = ctx.dataset(parent.dataset)
        model = parent.model()
        seed = ctx.seed if self.seed is None else self.seed
        needs = self.config.make_method().needs
        batch = calibration = None
        if "batch" in needs:  # SNIP, GraSP: one batch of training data, drawn with the state's seed
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(data.train), generator=g)[: self.batch_size]
            batch = (data.train.x[idx], data.train.y[idx])
        if "calibration" in needs:
            calibration = calibration_inputs(ctx, self.config.calibration, parent.dataset, seed)
        config = self.config.model_copy(update={"seed": seed})
        result = prune(model, config, batch=batch, calibration=calibration, input_shape=data.input_shape,
                       positions=_positions(parent.spec, model, data.input_shape))
        metrics = {"sparsity": result.report.sparsity, "layers": {l.name: l.sparsity for l in result.report.layers},
                   "kept_flops": result.report.kept_flops, "flops": result.report.flops}
        if self.evaluate:
            metrics.update(_evaluation_metrics(model, data, ("validation", "test")))
        # result.masks: every mask of the model, as get_masks would read them back off it
        return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=parent.optimizer,
                                iteration=parent.iteration, metrics=metrics, previous=parent, masks=result.masks)


def calibration_inputs(ctx, calibration, dataset: str, seed: int) -> torch.Tensor:
    """The calibration examples of a prune: ``samples`` drawn without replacement with ``seed`` (the
    calibration's own, else the state's) from a split of the state's dataset (or the one named)."""
    from ..pruning.methods import CalibrationConfig

    calibration = calibration or CalibrationConfig()
    data = ctx.dataset(calibration.dataset or dataset)
    split = data.split(calibration.split)
    if calibration.samples > len(split):
        raise PrunelabError(f"calibration: {calibration.samples} samples asked for, {calibration.dataset or dataset} "
                            f"has {len(split)} {calibration.split} examples")
    g = torch.Generator().manual_seed(seed if calibration.seed is None else calibration.seed)
    idx = torch.randperm(len(split), generator=g)[: calibration.samples]
    return split.x[idx]


def _positions(spec: ModelSpec, model, input_shape) -> dict[str, int]:
    """``output_positions`` of ``spec``'s architecture, found once per process (a forward pass that
    cost a tenth of a small model's prune)."""
    key = (spec, tuple(input_shape))
    try:
        found = CACHES.flops_positions.get(key)
    except TypeError:  # options that cannot be hashed: found each time
        return output_positions(model, input_shape)
    if found is None:
        if len(CACHES.flops_positions) >= 64:
            CACHES.flops_positions.clear()
        found = CACHES.flops_positions[key] = output_positions(model, input_shape)
    return found


@dataclass(frozen=True)
class Rewind(Recipe):
    """Keep the parent's masks; take weights, optimizer state and iteration from ``to``."""

    to: Any  # a State

    def describe(self) -> str:
        return f"rewind→{self.to.hash[:8]}"

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return end_of(self.to)

    def run(self, ctx, parent):
        target = ctx.load(self.to)
        if target.spec != parent.spec:
            raise PrunelabError("Rewind: the target state has a different architecture")
        return Snapshot(parent.spec, parent.dataset, target.weights, parent.masks, target.optimizer,
                        target.iteration, {"rewound_to": self.to.hash, "iteration": target.iteration})


@dataclass(frozen=True)
class Finetune(Recipe):
    """Keep the trained (pruned) weights and train again with a fresh optimizer and schedule.

    The control "fine-tune instead of rewind": iteration restarts at 0 of
    ``config`` (optionally with a new learning rate), masks stay applied.
    """

    config: TrainConfig
    evaluate: bool = True

    def describe(self) -> str:
        return f"finetune→{self.config.iterations} (lr {self.config.lr:g})"

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return self.config.total_iterations(train_size)  # from 0

    def run(self, ctx, parent):
        return self._train().run(ctx, self._restart(parent))

    def _train(self) -> Train:
        return Train(self.config, evaluate=self.evaluate)

    @staticmethod
    def _restart(parent: Snapshot) -> Snapshot:
        return parent.evolve(iteration=0, optimizer=None)

    def group_key(self, parent: Snapshot) -> tuple | None:
        key = self._train().group_key(self._restart(parent))
        return None if key is None else ("Finetune", *key[1:])  # never grouped with a Train: other parents

    def run_group(self, ctxs: list, parents: list[Snapshot]) -> list:
        return self._train().run_group(ctxs, [self._restart(p) for p in parents])


@dataclass(frozen=True)
class RandomReinit(Recipe):
    """Same masks, fresh random initialisation (seed from the state's hash)."""

    def describe(self) -> str:
        return "random reinit"

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return 0  # a fresh initialisation

    def run(self, ctx, parent):
        fresh = parent.spec.build(seed=ctx.seed % (2**63))
        weights = {k: v.detach() for k, v in fresh.state_dict().items()}  # the module is dropped: no copy
        return Snapshot(parent.spec, parent.dataset, weights, parent.masks, None, 0, {"reinit_seed": ctx.seed})


def random_pattern_mask(name: str, shape, pattern: str, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask of ``shape`` keeping N random entries of every M-wide group of the pattern."""
    from ..pruning.methods import nm_keep_for_scores, parse_pattern

    return nm_keep_for_scores(name, torch.rand(tuple(shape), generator=generator), parse_pattern(pattern))


def random_mask(shape, kept: int, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask of ``shape`` keeping ``kept`` entries chosen uniformly at random."""
    numel = math.prod(shape)
    flat = torch.zeros(numel, dtype=torch.bool)
    flat[torch.randperm(numel, generator=generator)[:kept]] = True
    return flat.reshape(tuple(shape))


@dataclass(frozen=True)
class RandomPruneLike(Recipe):
    """The random-pruning control: random masks with the per-layer sparsity of ``like``.

    Applied to the parent (typically the root: original init), replacing any mask.
    """

    # 2: each layer's mask comes from its own generator, seeded by the state's seed and the layer's name.
    #    1 drew them from one generator in the order of the reference's mask dict, which differs between
    #    a reference made in memory and one loaded from the store: a version-1 state may hold either draw
    #    under one hash, so it must not be trusted; a new identity makes the next run recompute it.
    version: ClassVar[int] = 2
    like: Any  # a State whose masks give the per-layer kept counts
    # "N:M": random masks of that pattern (the control of an N:M branch) instead of random positions
    pattern: str | None = dataclasses.field(default=None, metadata=OMIT_DEFAULT)
    evaluate: bool = dataclasses.field(default=False, metadata=OMIT_DEFAULT)  # measure it as it is (see Prune)

    def describe(self) -> str:
        return f"random {self.pattern + ' ' if self.pattern else ''}masks like {self.like.hash[:8]}"

    def run(self, ctx, parent):
        reference = ctx.load(self.like)
        masks = {}
        for name in sorted(reference.masks):
            keep = reference.masks[name]
            g = torch.Generator().manual_seed(layer_seed(ctx.seed, name))
            if self.pattern is None:
                masks[name] = random_mask(keep.shape, int(keep.sum()), g)
            else:
                masks[name] = random_pattern_mask(name, keep.shape, self.pattern, g)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        state = parent.evolve(masks=masks, metrics={"like": self.like.hash, "sparsity": 1 - kept / max(1, total)})
        if self.evaluate:
            state.metrics.update(_evaluation_metrics(state.model(), ctx.dataset(parent.dataset), ("validation", "test")))
        return state


@dataclass(frozen=True)
class Consensus(Recipe):
    """A consensus ("denoised") ticket: keep weights kept by at least ``tau`` of the sources' masks.

    The vote of a weight is the fraction of ``sources`` that keep it; the new
    mask keeps vote >= tau (tau = 1: the intersection). Weights come from the
    parent (typically the shared initialisation). Sources must share the
    architecture; a tensor missing from some source counts as kept there.
    """

    sources: tuple = ()
    tau: float = 1.0

    def describe(self) -> str:
        return f"consensus of {len(self.sources)} (tau {self.tau:g})"

    def run(self, ctx, parent):
        if not self.sources:
            raise PrunelabError("Consensus needs at least one source state")
        if not 0 < self.tau <= 1:
            raise PrunelabError(f"Consensus tau {self.tau} must be in (0, 1]")
        snaps = [ctx.load(s) for s in self.sources]
        names = sorted({n for s in snaps for n in s.masks})
        masks = {}
        for name in names:
            shapes = {tuple(s.masks[name].shape) for s in snaps if name in s.masks}
            if len(shapes) != 1:
                raise PrunelabError(f"Consensus: sources disagree on the shape of {name!r}: {sorted(shapes)}")
            votes = sum((s.masks[name].float() if name in s.masks else 1.0) for s in snaps) / len(snaps)
            masks[name] = votes >= self.tau - 1e-9
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        return parent.evolve(masks=masks, metrics={"sparsity": 1 - kept / max(1, total), "sources": len(snaps),
                                                   "tau": self.tau})


@dataclass(frozen=True)
class Transfer(Recipe):
    """Carry a ticket (masks + weights) from ``source`` to the parent's task.

    A tensor whose shape differs between source and target (e.g. the output
    layer when class counts differ) keeps the parent's initial values; if the
    ticket pruned it, it gets a *random* mask keeping the same fraction of its
    entries (seeded by the state), so the transferred ticket has the ticket's
    per-layer sparsity. Both lists are recorded in the metrics
    (``reinitialised``, ``resampled_masks``).
    """

    version: ClassVar[int] = 2  # 2: mismatched layers get a mask at the ticket's sparsity (1: left dense)
    source: Any  # a State holding the ticket (masks and the weights to start from)

    def describe(self) -> str:
        return f"transfer from {self.source.hash[:8]}"

    def end_iteration(self, parent_end: int, train_size: int, end_of) -> int:
        return 0  # the ticket's weights start the target's training afresh

    def run(self, ctx, parent):
        ticket = ctx.load(self.source)
        if ticket.spec.model != parent.spec.model:
            raise PrunelabError(f"Transfer: source model {ticket.spec.model!r} is not the target's {parent.spec.model!r}")
        weights, masks, reinitialised, resampled = dict(parent.weights), {}, [], []
        for name, tensor in parent.weights.items():
            theirs = ticket.weights.get(name)
            if theirs is not None and theirs.shape == tensor.shape:
                weights[name] = theirs
            else:
                reinitialised.append(name)
        g = torch.Generator().manual_seed(ctx.seed % (2**63))
        for name in sorted(ticket.masks):
            keep = ticket.masks[name]
            if name not in parent.weights:
                raise PrunelabError(f"Transfer: the ticket prunes {name!r}, which the target model does not have")
            shape = parent.weights[name].shape
            if shape == keep.shape:
                masks[name] = keep
                continue
            masks[name] = random_mask(shape, round(float(keep.sum()) / keep.numel() * shape.numel()), g)
            resampled.append(name)
        return Snapshot(parent.spec, parent.dataset, weights, masks, None, 0,
                        {"source": self.source.hash, "source_dataset": ticket.dataset,
                         "reinitialised": sorted(reinitialised), "resampled_masks": resampled})


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



# ---------------------------------------------------------------- recipes a stored state can be rebuilt from

RECIPES: Registry[type[Recipe]] = Registry("recipe", group="prunelab.recipes")
for _cls in (Init, Train, Prune, Rewind, Finetune, RandomReinit, RandomPruneLike, Consensus, Transfer):
    RECIPES.register(_cls.__name__, (_cls.__doc__ or "").strip().split("\n")[0])(_cls)


def _user_recipe_path(type_name: str) -> str | None:
    """``module:Class`` for a user's recipe type name (``module.Class``, module-qualified by
    :attr:`Recipe.type_name`) whose module the user trusts; None when no prefix of it is trusted."""
    from ..registry import trusted_modules

    parts = type_name.split(".")
    trusted = trusted_modules()
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if any(module == t or module.startswith(t + ".") for t in trusted):
            return f"{module}:{'.'.join(parts[cut:])}"
    return None


def recipe_unavailable(type_name: str) -> str | None:
    """Why the recipe a manifest names cannot be rebuilt here (None: it can). Never imports: a store
    names its recipes, and a name read from a store is not a reason to run its module."""
    if type_name in RECIPES or ("." in type_name and _user_recipe_path(type_name)):
        return None
    if "." in type_name:
        module = type_name.rpartition(".")[0]
        return (f"recipe {type_name!r} is not registered and its module is not trusted (a store never names code "
                f"to run): prunelab --trust {module} ..., or install it under the entry-point group prunelab.recipes")
    return f"recipe {type_name!r} is not registered (known: {', '.join(RECIPES.names())})"


def recipe_class(type_name: str) -> type[Recipe]:
    """The class a manifest's recipe type names: registered (prunelab's, a plug-in's) or a user's in a
    module the user trusts."""
    why = recipe_unavailable(type_name)
    if why is not None:
        raise PrunelabError(why)
    if type_name in RECIPES:
        cls = RECIPES.get(type_name)
    else:
        from ..registry import import_object

        cls = import_object(_user_recipe_path(type_name), "recipe")
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise PrunelabError(f"recipe {type_name!r} is {type(cls).__name__}, not a subclass of "
                            "prunelab.experiment.Recipe")
    return cls
