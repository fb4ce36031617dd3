"""The experiment state tree: lazy states, content-addressed store, executors, queries."""

from .executors import RunSummary
from .query import Results, open_store
from .recipes import (Consensus, Evaluate, Finetune, Init, Prune, RandomPruneLike, RandomReinit, Recipe, Ref, Rewind,
                      Train, Transfer)
from .snapshot import ModelSpec, Snapshot
from .store import Store, StoreError
from .tree import Experiment, Probe, State

__all__ = [
    "Consensus", "Evaluate", "Experiment", "Finetune", "RandomPruneLike", "RandomReinit", "Transfer", "Init", "ModelSpec", "Probe", "Prune", "Results", "open_store", "Recipe", "Ref", "Rewind", "RunSummary",
    "Snapshot", "State", "Store", "StoreError", "Train",
]
