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
_SNAPSHOTS: "OrderedDict[tuple[str, str], tuple[Snapshot, int]]" = OrderedDict()  # → (snapshot, its bytes)
# The states a run reads back most (a rewind target, the dense model the controls start from, the
# parent of the next state) stay in memory, up to this many bytes of tensors: at 8 states, a
# 1,037-state study read 1 state in 4 back from disk (~5 ms each, read and re-hashed).
SNAPSHOT_CACHE_BYTES = 256 * 2**20


def dataset_cache(name: str):
    """Datasets are loaded once per process (they are read-only)."""
    if name not in _DATASETS:
        from ..tasks.datasets import load_dataset

        _DATASETS[name] = load_dataset(name, trust_import=False)  # the name may come from a store
    return _DATASETS[name]


def _cache_put(store: Store, state_hash: str, snap: Snapshot) -> None:
    key = (str(store.root), state_hash)
    _SNAPSHOTS[key] = (snap, snapshot_bytes(snap))
    _SNAPSHOTS.move_to_end(key)
    total = sum(size for _, size in _SNAPSHOTS.values())
    while total > SNAPSHOT_CACHE_BYTES and len(_SNAPSHOTS) > 1:  # the newest always stays
        total -= _SNAPSHOTS.popitem(last=False)[1][1]


def snapshot_bytes(snap: Snapshot) -> int:
    """Bytes of the tensors a snapshot holds (a tensor shared by two of its entries counted once)."""
    seen: dict[int, int] = {}
    tensors = list(snap.weights.values()) + list(snap.masks.values())
    for state in ((snap.optimizer or {}).get("state") or {}).values():
        tensors += [v for v in state.values() if hasattr(v, "data_ptr")]
    for t in tensors:
        seen[t.data_ptr()] = t.nbytes
    return sum(seen.values())


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


