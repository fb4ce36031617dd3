"""The experiment state tree: lazy states, content-addressed store, executors, queries."""

from .executors import RunSummary
from .query import Results, open_store
from .recipes import Evaluate, Init, Prune, Recipe, Ref, Rewind, Train
from .snapshot import ModelSpec, Snapshot
from .store import Store, StoreError
from .tree import Experiment, Probe, State

__all__ = [
    "Evaluate", "Experiment", "Init", "ModelSpec", "Probe", "Prune", "Results", "open_store", "Recipe", "Ref", "Rewind", "RunSummary",
    "Snapshot", "State", "Store", "StoreError", "Train",
]
