"""What a running recipe sees: its store, seed, datasets and the states it loads (through the
per-process caches of :mod:`prunelab.caches`).

Shared by the executors, the tree (which loads datasets while planning), the audit and the
analyses; it imports neither of them, so dependencies run one way:
tree → executors → context ← recipes (type hints only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..caches import CACHES
from .hashing import state_seed
from .store import Store

if TYPE_CHECKING:
    from .snapshot import Snapshot

# The per-process caches (snapshots read back, datasets loaded) live in prunelab.caches.CACHES.


def dataset_cache(name: str, *, download: bool = True):
    """Datasets are loaded once per process (they are read-only).

    ``download=False`` where the name was read from a store by a reading command (a report): a store
    never makes prunelab reach the network; the dataset must be in the mirror or the cache."""
    datasets = CACHES.datasets
    if name not in datasets:
        from ..tasks.datasets import load_dataset
        from ..tasks.download import DataSource, DataUnavailableError

        try:  # the name may come from a store: its import path is not trusted
            datasets[name] = load_dataset(name, trust_import=False, source=DataSource(download=download))
        except DataUnavailableError as exc:
            if download:
                raise
            raise DataUnavailableError(f"{exc} It is named by the store being read, and prunelab never downloads "
                                       "what a store names: download it once (`prunelab train -d "
                                       f"'{name}' -m lenet_300_100 --iterations 1`), or set PRUNELAB_DATA_MIRROR.") from None
    return datasets[name]


def _cache_put(store: Store, state_hash: str, snap: Snapshot) -> None:
    CACHES.snapshots.put((str(store.root), state_hash), snap)


def _load(store: Store, state_hash: str) -> Snapshot:
    snap = CACHES.snapshots.snapshot((str(store.root), state_hash))
    if snap is None:
        snap = store.load(state_hash)
        _cache_put(store, state_hash, snap)
    return snap


@dataclass(frozen=True)
class StateTask:
    hash: str
    identity: dict
    recipe: Any  # a Recipe, detached (references are bare Refs); recipes import this module, not the reverse
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


