"""GAN training as recipes of the experiment tree: checkpoints are states, so a GAN run resumes
after a crash from its last checkpoint, shares prefixes, and is pruned like any other model
(``Prune`` with ``include = ["generator.*"]``).

* :class:`TrainGAN` trains from the parent's iteration to ``stop``; noise and batches are pure
  functions of (seed, iteration), so a chain of checkpoints equals one run bit for bit;
* :class:`FinetuneGAN` restarts the iteration count and both optimizers (the control "fine-tune
  after pruning"), keeping the weights and the generator's masks.

Every state they produce stores the generator's fidelity on held-out simulator showers
(:mod:`.fidelity`) unless ``evaluate_showers = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PrunelabError
from ..experiment.recipes import Recipe
from ..experiment.snapshot import Snapshot, parameter_names
from .gan import GANConfig

_TRAINING_DATA: dict = {}
EVALUATION_SEED = 0  # noise of the evaluation showers and the two-sample split: fixed, so metrics are comparable


def training_showers(dataset: str):
    """The training split as tensors, once per process."""
    if dataset not in _TRAINING_DATA:
        from .gan import ShowerTensors
        from .tasks import shower_split

        _TRAINING_DATA[dataset] = ShowerTensors.of(shower_split(dataset, "train"))
    return _TRAINING_DATA[dataset]


def evaluate_generator(model, dataset: str, events: int) -> dict:
    """Fidelity of ``model``'s generator against the first ``events`` held-out showers of ``dataset``
    (single-threaded scikit-learn, so the stored numbers are recomputed exactly)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from .fidelity import fidelity
    from .generation import sample
    from .tasks import shower_split

    reference = shower_split(dataset, "test")
    reference = reference.take(np.arange(min(events, len(reference))))
    generated = sample(model, reference.energy, seed=EVALUATION_SEED, particle=reference.particle)
    with threadpool_limits(1):
        return fidelity(reference, generated, seed=EVALUATION_SEED).to_dict()


@dataclass(frozen=True)
class TrainGAN(Recipe):
    """Train the shower GAN from the parent's iteration up to ``stop`` (default: ``config.iterations``)."""

    # 3: the optimizer state is indexed in the unpruned model's parameter order and the parent's is copied
    #    before training; 2 took the order pruning and the parent's mask order left (memory and disk
    #    differed) and changed the parent's state in place, so its stored states may hold either result.
    # 2: a layer keeps its largest cell; the critic sees log layer energies
    version: ClassVar[int] = 3
    config: GANConfig
    stop: int | None = None
    data_seed: int | None = None

    def describe(self) -> str:
        return f"train GAN→{self.stop if self.stop is not None else self.config.iterations}"

    def run(self, ctx, parent: Snapshot) -> Snapshot:
        from .gan import train_gan

        return trained_state(self, ctx, parent, train_gan, "gan_curve")


def trained_state(recipe, ctx, parent: Snapshot, train, curve_key: str) -> Snapshot:
    """The state a training recipe of a generator (``config``, ``stop``, ``data_seed``: :class:`TrainGAN`,
    :class:`~prunelab.hep.flow_recipes.TrainFlow`) makes from ``parent`` with the loop ``train``:
    its loss curve under ``curve_key``, the sparsity, the device and the fidelity on held-out showers."""
    from ..pruning.masks import sparsity_report

    config = recipe.config
    stop = config.iterations if recipe.stop is None else recipe.stop
    if stop < parent.iteration:
        raise PrunelabError(f"{type(recipe).__name__}(stop={stop}) starts from a state already at iteration "
                            f"{parent.iteration}")
    model = parent.model()
    seed = ctx.root_seed if recipe.data_seed is None else recipe.data_seed
    result = train(model, training_showers(parent.dataset), config, seed=seed, start=parent.iteration, stop=stop,
                   optimizer_state=parent.optimizer, parameter_order=parameter_names(parent.spec))
    metrics = {"train_seconds": result.seconds, curve_key: result.curve, "sparsity": sparsity_report(model).sparsity}
    if result.device != "cpu":
        metrics["device"] = result.device  # provenance: which accelerator made these bits
    if config.evaluate_showers:
        metrics["fidelity"] = evaluate_generator(model, parent.dataset, config.evaluate_showers)
    return Snapshot.capture(model, parent.spec, parent.dataset, optimizer=result.optimizer_state, iteration=stop,
                            metrics=metrics, previous=parent)


@dataclass(frozen=True)
class FinetuneGAN(Recipe):
    """Keep the (pruned) weights, train ``config.iterations`` more with fresh optimizers from iteration 0."""

    version: ClassVar[int] = 3  # follows TrainGAN (3: its fresh optimizer state indexed in the unpruned order)
    config: GANConfig

    def describe(self) -> str:
        return f"finetune GAN→{self.config.iterations}"

    def run(self, ctx, parent: Snapshot) -> Snapshot:
        return TrainGAN(self.config).run(ctx, parent.evolve(iteration=0, optimizer=None))

