"""Flow training as recipes of the experiment tree, like the GAN's (:mod:`.gan_recipes`): checkpoints
are states, a run resumes from its last one, and a flow is pruned like any other model.

* :class:`TrainFlow` trains from the parent's iteration to ``stop``;
* :class:`FinetuneFlow` restarts the iteration count, the learning-rate schedule and the optimizer,
  keeping the weights, the masks and the standardisation (the control "fine-tune after pruning").

Every state they produce stores the flow's fidelity on held-out simulator showers (:mod:`.fidelity`)
unless ``evaluate_showers = 0``, as the GAN's do, so one study table holds both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunelabError
from ..experiment.recipes import Recipe
from ..experiment.snapshot import Snapshot, parameter_names
from .flow import FlowConfig


@dataclass(frozen=True)
class TrainFlow(Recipe):
    """Train the shower flow from the parent's iteration up to ``stop`` (default: ``config.iterations``)."""

    version: ClassVar[int] = 1
    config: FlowConfig
    stop: int | None = None
    data_seed: int | None = None

    def describe(self) -> str:
        return f"train flow→{self.stop if self.stop is not None else self.config.iterations}"

    def run(self, ctx, parent: Snapshot) -> Snapshot:
        from ..pruning.masks import sparsity_report
        from .flow import train_flow
        from .gan_recipes import evaluate_generator, training_showers

        stop = self.config.iterations if self.stop is None else self.stop
        if stop < parent.iteration:
            raise PrunelabError(f"TrainFlow(stop={stop}) starts from a state already at iteration {parent.iteration}")
        model = parent.model()
        seed = ctx.root_seed if self.data_seed is None else self.data_seed
        result = train_flow(model, training_showers(parent.dataset), self.config, seed=seed, start=parent.iteration,
                            stop=stop, optimizer_state=parent.optimizer, parameter_order=parameter_names(parent.spec))
        metrics = {"train_seconds": result.seconds, "flow_curve": result.curve,
                   "sparsity": sparsity_report(model).sparsity}
        if result.device != "cpu":
            metrics["device"] = result.device  # provenance: which accelerator made these bits
        if self.config.evaluate_showers:
            metrics["fidelity"] = evaluate_generator(model, parent.dataset, self.config.evaluate_showers)
        return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=result.optimizer_state, iteration=stop,
                                metrics=metrics, previous=parent)


@dataclass(frozen=True)
class FinetuneFlow(Recipe):
    """Keep the (pruned) weights, train ``config.iterations`` more from iteration 0 with a fresh optimizer."""

    version: ClassVar[int] = 1
    config: FlowConfig

    def describe(self) -> str:
        return f"finetune flow→{self.config.iterations}"

    def run(self, ctx, parent: Snapshot) -> Snapshot:
        return TrainFlow(self.config).run(ctx, parent.evolve(iteration=0, optimizer=None))
