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


class _SnapshotCache(OrderedDict):
    """(store root, state hash) → (snapshot, its tensors' storages: address → bytes), oldest first.

    ``nbytes`` is the memory the cached snapshots hold together, kept as they come and go (summing
    every entry on each put was 0.5 ms a state of a 1,037-state study). A storage several of them
    share — a prune keeps its parent's optimizer state, a rewind its target's weights, a training
    its parent's masks — counts once: counted per snapshot, the bound let go of states the run
    read back from disk later (72 of a 1,037-state study, 2.4 ms each)."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0
        self._holders: dict[int, list[int]] = {}  # storage address → [snapshots holding it, its bytes]

    def __setitem__(self, key, value) -> None:
        if key in self:
            del self[key]
        super().__setitem__(key, value)
        for address, size in value[1].items():
            held = self._holders.get(address)
            if held is None:
                self._holders[address] = [1, size]
                self.nbytes += size
            else:
                held[0] += 1

    def __delitem__(self, key) -> None:
        for address in self[key][1]:
            held = self._holders[address]
            held[0] -= 1
            if not held[0]:
                del self._holders[address]
                self.nbytes -= held[1]
        super().__delitem__(key)

    def pop_oldest(self) -> None:
        del self[next(iter(self))]

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0
        self._holders.clear()


_DATASETS: dict[str, Any] = {}
_SNAPSHOTS = _SnapshotCache()
# The states a run reads back most (a rewind target, the dense model the controls start from, the
# parent of the next state) stay in memory, up to this many bytes of tensors: at 8 states, a
# 1,037-state study read 1 state in 4 back from disk (~5 ms each, read and re-hashed).
SNAPSHOT_CACHE_BYTES = 256 * 2**20


def dataset_cache(name: str, *, download: bool = True):
    """Datasets are loaded once per process (they are read-only).

    ``download=False`` where the name was read from a store by a reading command (a report): a store
    never makes prunelab reach the network; the dataset must be in the mirror or the cache."""
    if name not in _DATASETS:
        from ..tasks.datasets import load_dataset
        from ..tasks.download import DataSource, DataUnavailableError

        try:  # the name may come from a store: its import path is not trusted
            _DATASETS[name] = load_dataset(name, trust_import=False, source=DataSource(download=download))
        except DataUnavailableError as exc:
            if download:
                raise
            raise DataUnavailableError(f"{exc} It is named by the store being read, and prunelab never downloads "
                                       "what a store names: download it once (`prunelab train -d "
                                       f"'{name}' -m lenet_300_100 --iterations 1`), or set PRUNELAB_DATA_MIRROR.") from None
    return _DATASETS[name]


def _cache_put(store: Store, state_hash: str, snap: Snapshot) -> None:
    key = (str(store.root), state_hash)
    _SNAPSHOTS[key] = (snap, snapshot_storages(snap))
    while _SNAPSHOTS.nbytes > SNAPSHOT_CACHE_BYTES and len(_SNAPSHOTS) > 1:  # the newest always stays
        _SNAPSHOTS.pop_oldest()


def snapshot_storages(snap: Snapshot) -> dict[int, int]:
    """The storages of the tensors a snapshot holds: address → bytes."""
    tensors = list(snap.weights.values()) + list(snap.masks.values())
    for state in ((snap.optimizer or {}).get("state") or {}).values():
        tensors += [v for v in state.values() if hasattr(v, "untyped_storage")]
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return storages


def _load(store: Store, state_hash: str) -> Snapshot:
    key = (str(store.root), state_hash)
    if key in _SNAPSHOTS:
        _SNAPSHOTS.move_to_end(key)
        return _SNAPSHOTS[key][0]
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


