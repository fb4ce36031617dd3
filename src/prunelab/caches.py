"""Every per-process cache of prunelab, in one object: ``CACHES``.

Each cache remembers what this process already computed or read — a loaded dataset, a snapshot
read back from a store, a tensor's hash, an index whose token was checked — so that it is not done
again. None of them changes what is computed: a process that starts with them empty gets the same
states, hashes and files (it only reads and hashes more). ``CACHES.clear()`` empties them all, as a
new process starts; each cache is also a public attribute, cleared on its own by its ``clear()``.

Caches are emptied in place, never replaced, so a module may keep a reference to one. This module
imports nothing of prunelab: the task layer and the experiment layer both fill caches here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# The states a run reads back most (a rewind target, the dense model the controls start from, the
# parent of the next state) stay in memory, up to this many bytes of tensors: a bound by count let
# many of them go, to be read back from disk and re-hashed (docs/architecture.md).
SNAPSHOT_CACHE_BYTES = 256 * 2**20


def snapshot_storages(snap) -> dict[int, int]:
    """The storages of the tensors a snapshot holds (weights, masks, optimizer state): address → bytes."""
    tensors = list(snap.weights.values()) + list(snap.masks.values())
    for state in ((snap.optimizer or {}).get("state") or {}).values():
        tensors += [v for v in state.values() if hasattr(v, "untyped_storage")]
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return storages


class SnapshotCache(OrderedDict):
    """(store root, state hash) → (snapshot, its tensors' storages: address → bytes), oldest first,
    holding at most ``limit_bytes`` of tensors (the newest snapshot always stays).

    ``nbytes`` is the memory the cached snapshots hold together, kept as they come and go (summing
    every entry on each put grows with the cache, on every state). A storage several of them
    share — a prune keeps its parent's optimizer state, a rewind its target's weights, a training
    its parent's masks — counts once: counted per snapshot, the bound lets go of states the run
    reads back from disk later (docs/architecture.md)."""

    def __init__(self, limit_bytes: int = SNAPSHOT_CACHE_BYTES) -> None:
        super().__init__()
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self._holders: dict[int, list[int]] = {}  # storage address → [snapshots holding it, its bytes]

    def put(self, key: tuple[str, str], snap) -> None:
        """Keep ``snap`` as the newest entry, then let the oldest go while over the bound."""
        self[key] = (snap, snapshot_storages(snap))
        while self.nbytes > self.limit_bytes and len(self) > 1:
            self.pop_oldest()

    def snapshot(self, key: tuple[str, str]):
        """The snapshot cached under ``key`` (now the newest entry), or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key][0]

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


class ProcessCaches:
    """The per-process caches, by what they remember (and the module that fills each)."""

    __slots__ = ("snapshots", "datasets", "dataset_fingerprints", "model_fingerprints", "splits_on_device",
                 "module_templates", "flops_positions", "identity_dumps", "tensor_digests", "packed_masks",
                 "tensor_homes", "ready_indexes", "trusted_indexes", "mean_cis")

    def __init__(self) -> None:
        self.snapshots = SnapshotCache()  # experiment.context: states a run reads back
        self.datasets: dict[str, Any] = {}  # experiment.context: dataset name → loaded dataset (read-only)
        self.dataset_fingerprints: dict[str, str] = {}  # experiment.tree: a user dataset's content hash, by name
        self.model_fingerprints: dict[tuple, str] = {}  # tasks.hf: a model directory's hash, by its files' stats
        self.splits_on_device: dict = {}  # tasks.training: (split, device) → its tensors copied there
        self.module_templates: OrderedDict = OrderedDict()  # experiment.snapshot: model spec → built template
        self.flops_positions: dict = {}  # experiment.recipes: (spec, input shape) → output positions
        self.identity_dumps: dict = {}  # experiment.recipes: an unhashable config's JSON → its identity dump
        # experiment.store: id(tensor) → (weak reference, version, digest) and the same for packed masks
        self.tensor_digests: dict[int, tuple] = {}
        self.packed_masks: dict[int, tuple] = {}
        self.tensor_homes: dict[str, dict[str, str]] = {}  # experiment.store: store root → tensor hash → its file
        self.ready_indexes: set[tuple] = set()  # experiment.store: indexes this process made or checked
        self.trusted_indexes: set[tuple] = set()  # experiment.store: indexes whose token this process checked
        self.mean_cis: dict = {}  # analysis.stats.mean_cis: (confidence, method, the columns' bytes) → intervals

    def clear(self) -> None:
        """Empty every cache, as a new process starts."""
        for name in self.__slots__:
            getattr(self, name).clear()

    def sizes(self) -> dict[str, int]:
        """How many entries each cache holds, by name."""
        return {name: len(getattr(self, name)) for name in self.__slots__}


CACHES = ProcessCaches()
