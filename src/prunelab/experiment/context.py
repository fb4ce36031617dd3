"""What a running recipe sees, and the per-process caches it uses.

Shared by the executors, the tree (which loads datasets while planning), the audit and the
analyses; it imports neither of them, so dependencies run one way:
tree → executors → context ← recipes (type hints only).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .hashing import state_seed
from .store import Store

if TYPE_CHECKING:
    from .recipes import Recipe
    from .snapshot import Snapshot

# ---------------------------------------------------------------- per-process caches

_DATASETS: dict[str, Any] = {}
_SNAPSHOTS: "OrderedDict[tuple[str, str], Snapshot]" = OrderedDict()
SNAPSHOT_CACHE_SIZE = 8


def dataset_cache(name: str):
    """Datasets are loaded once per process (they are read-only)."""
    if name not in _DATASETS:
        from ..tasks.datasets import load_dataset

        _DATASETS[name] = load_dataset(name, trust_import=False)  # the name may come from a store
    return _DATASETS[name]


def _cache_put(store: Store, state_hash: str, snap: Snapshot) -> None:
    key = (str(store.root), state_hash)
    _SNAPSHOTS[key] = snap
    _SNAPSHOTS.move_to_end(key)
    while len(_SNAPSHOTS) > SNAPSHOT_CACHE_SIZE:
        _SNAPSHOTS.popitem(last=False)


def _load(store: Store, state_hash: str) -> Snapshot:
    key = (str(store.root), state_hash)
    if key in _SNAPSHOTS:
        _SNAPSHOTS.move_to_end(key)
        return _SNAPSHOTS[key]
    snap = store.load(state_hash)
    _cache_put(store, state_hash, snap)
    return snap


@dataclass(frozen=True)
class StateTask:
    hash: str
    identity: dict
    recipe: Recipe  # detached: references are bare Refs
    tags: tuple[str, ...]
    depth: int
    root_seed: int


class RunContext:
    """What a recipe sees while it runs."""

    def __init__(self, store: Store, task: StateTask):
        self.store = store
        self.seed = state_seed(task.hash)
        self.root_seed = task.root_seed
        self.hash = task.hash
        self.recipe = task.recipe

    def dataset(self, name: str):
        return dataset_cache(name)

    def load(self, ref) -> Snapshot:
        return _load(self.store, ref.hash)


