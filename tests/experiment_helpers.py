"""Recipes and trees shared by the experiment tests (importable by Dask workers and subprocesses)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from prunelab import TrainConfig
from prunelab.experiment import Experiment, Prune, Recipe, Rewind, Train
from prunelab.pruning import technique

CONFIG = TrainConfig(iterations=40, batch_size=32)


@dataclass(frozen=True)
class FailWhenFlagged(Recipe):
    """Raises while the file ``flag`` exists; otherwise passes the parent through."""

    flag: str

    def run(self, ctx, parent):
        if os.path.exists(self.flag):
            raise RuntimeError("flagged to fail")
        return parent.evolve(metrics={"passed": True})


@dataclass(frozen=True)
class Poison(Recipe):
    """Sets every weight to NaN (training afterwards must report divergence)."""

    def run(self, ctx, parent):
        return parent.evolve(weights={k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                      for k, v in parent.weights.items()})


@dataclass(frozen=True)
class Sleep(Recipe):
    """Pass-through that takes time (for the kill -9 test)."""

    seconds: float
    index: int

    def run(self, ctx, parent):
        import time

        time.sleep(self.seconds)
        return parent.evolve(metrics={"index": self.index})


def small_tree(store, branches=("l1_unstructured", "global_unstructured"), rounds=2, seed=0):
    exp = Experiment(store)
    root = exp.root(dataset="digits", model="lenet_300_100", seed=seed)
    dense = root.then(Train(CONFIG))
    leaves = []
    for name in branches:
        with exp.tag(name):
            s = dense
            for _ in range(rounds):
                s = s.then(Prune(technique(name, amount=0.3))).then(Rewind(to=root)).then(Train(CONFIG))
            leaves.append(s)
    return exp, root, dense, leaves


def slow_chain(store, n, seconds):
    exp = Experiment(store)
    s = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    for i in range(n):
        s = s.then(Sleep(seconds, i))
    return exp


if __name__ == "__main__":
    # python -m tests.experiment_helpers KIND STORE ...
    kind, store = sys.argv[1], sys.argv[2]
    if kind == "slow":
        summary = slow_chain(store, int(sys.argv[3]), float(sys.argv[4])).run()
    else:
        branches = tuple(sys.argv[3].split(","))
        summary = small_tree(store, branches=branches)[0].run()
    print("COMPUTED", ",".join(summary.computed))
    print("REUSED", ",".join(summary.reused))
