"""Identity that survives schema evolution and tells apart what differs (issue #14)."""

import dataclasses
import sys
import types

import pytest
import torch
from pydantic import Field

from prunelab import PrunelabError, TrainConfig
from prunelab.experiment import Experiment, Prune, Train
from prunelab.experiment.recipes import OMIT_DEFAULT, Recipe
from prunelab.pruning import technique
from prunelab.tasks.datasets import Dataset, Split

# Pinned: these states were computed under these hashes by every store since format 1. A change
# here forks every existing store (every state recomputed): only ever on purpose, with a format bump.
GOLDEN = {
    "root": "6ded991c7aab0ca72d7519af24002f20ef2914897d613b0365f4f4049a9527b9",
    "train": "2c4cb9ce23a713e5e595e38ecb39c341c710c6981d62021554c89ff1dfe23bd5",
    "prune": "6761fccb648d33bac1c609ee880500d5bc7d27125ea3237c7c9034812cd6d935",
}


def _chain(exp, config=None):
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    trained = root.then(Train(config or TrainConfig(iterations=100, batch_size=32)))
    return root, trained, trained.then(Prune(technique("global_unstructured", amount=0.5)))


def test_golden_identities_are_pinned(tmp_path):
    root, trained, pruned = _chain(Experiment(tmp_path / "s"))
    assert {"root": root.hash, "train": trained.hash, "prune": pruned.hash} == GOLDEN


def test_a_field_added_with_omit_default_does_not_fork_existing_identities(tmp_path):
    class NewTrainConfig(TrainConfig):  # what adding a defaulted field to TrainConfig looks like
        label_smoothing: float = Field(0.0, ge=0, json_schema_extra=OMIT_DEFAULT)

    _, trained, _ = _chain(Experiment(tmp_path / "s"), NewTrainConfig(iterations=100, batch_size=32))
    assert trained.hash == GOLDEN["train"]
    _, smoothed, _ = _chain(Experiment(tmp_path / "s"), NewTrainConfig(iterations=100, batch_size=32,
                                                                        label_smoothing=0.1))
    assert smoothed.hash != GOLDEN["train"]


def test_a_user_recipe_named_like_a_builtin_has_its_own_identity(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Train(Recipe):  # noqa: F811 - deliberately the built-in's name
        config: TrainConfig = None

        def run(self, ctx, parent):
            return parent

    config = TrainConfig(iterations=100, batch_size=32)
    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    mine = root.then(Train(config))
    assert mine.identity["recipe"] == f"{__name__}.test_a_user_recipe_named_like_a_builtin_has_its_own_identity.<locals>.Train"
    assert mine.hash != GOLDEN["train"]


def test_a_user_dataset_whose_content_changes_changes_identity(tmp_path):
    module = types.ModuleType("prunelab_test_userdata")
    state = {"shift": 0.0}

    def make(**kwargs):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(60, 4, generator=g) + state["shift"]
        y = (x[:, 0] > state["shift"]).long()
        split = Split(x, y)
        return Dataset("userdata", split, split, split, ("a", "b"))

    module.make = make
    sys.modules[module.__name__] = module
    from prunelab.caches import CACHES

    try:
        first = Experiment(tmp_path / "s").root(dataset=f"{module.__name__}:make", model="lenet_300_100")
        assert first.recipe.data_fingerprint is not None
        CACHES.datasets.clear()
        CACHES.dataset_fingerprints.clear()
        state["shift"] = 1.0  # the user's data changed
        second = Experiment(tmp_path / "s").root(dataset=f"{module.__name__}:make", model="lenet_300_100")
        assert second.hash != first.hash
        # a state planned on the old data refuses to run on the new
        with pytest.raises(PrunelabError, match="changed since this state was planned"):
            from prunelab.experiment.executors import RunContext, StateTask

            first.recipe.run(RunContext(first.experiment.store, StateTask(first.hash, first.identity, first.recipe,
                                                                          (), 0, 0)), None)
    finally:
        CACHES.datasets.clear()
        sys.modules.pop(module.__name__, None)


def test_list_model_options_are_frozen_without_changing_identity(tmp_path):
    """A spec's ``model_options = {hidden = [16, 8]}`` arrives as a list: it builds (it used to be an
    unhashable TypeError), hashes as the tuple does, and a spec read back from a store is hashable."""
    from prunelab.experiment import Experiment
    from prunelab.experiment.snapshot import ModelSpec

    exp = Experiment(tmp_path / "s")
    as_list = exp.root(dataset="digits", model="lenet_300_100", seed=0, model_options={"hidden": [16, 8]})
    as_tuple = exp.root(dataset="digits", model="lenet_300_100", seed=0, model_options={"hidden": (16, 8)})
    assert as_list.hash == as_tuple.hash
    spec = as_list.recipe.spec()
    assert ModelSpec.from_json(spec.to_json()) == spec and hash(ModelSpec.from_json(spec.to_json())) == hash(spec)
    assert spec.build().state_dict()["1.weight"].shape == (16, 64)
