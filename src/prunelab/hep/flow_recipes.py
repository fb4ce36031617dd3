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

from ..experiment.recipes import Recipe
from ..experiment.snapshot import Snapshot
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
        from .flow import train_flow
        from .gan_recipes import trained_state

        return trained_state(self, ctx, parent, train_flow, "flow_curve")


@dataclass(frozen=True)
class FinetuneFlow(Recipe):
    """Keep the (pruned) weights, train ``config.iterations`` more from iteration 0 with a fresh optimizer."""

    version: ClassVar[int] = 1
    config: FlowConfig

    def describe(self) -> str:
        return f"finetune flow→{self.config.iterations}"

    def run(self, ctx, parent: Snapshot) -> Snapshot:
        return TrainFlow(self.config).run(ctx, parent.evolve(iteration=0, optimizer=None))
