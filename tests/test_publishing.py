"""Deferred publishing: a thread makes finished states durable while the next one computes.

What must hold whatever the thread's timing: a manifest appears only after the packs it
references; the writing thread reads its own states back at once; the state's lock is held until
it is in place; a failure stops the run and leaves no temporary file and no half-written state.
"""

import errno
import threading
import time

import pytest
import torch

from prunelab.experiment import Store
from prunelab.experiment import publishing
from prunelab.experiment.publishing import PublishError
from prunelab.experiment.store import Flock, identity_of, safetensors_parts

from .experiment_helpers import small_tree


def test_packs_are_the_bytes_safetensors_writes():
    from safetensors.torch import save

    g = torch.Generator().manual_seed(0)
    payload = {
        "w": torch.randn(7, 5, generator=g),
        "wt": torch.randn(5, 3, generator=g).t(),  # not contiguous: written as its contiguous copy
        "b": torch.randn(3, generator=g, dtype=torch.float64),
        "h": torch.randn(4, generator=g).to(torch.bfloat16),
        "f": torch.randn(4, generator=g).half(),
        "m": torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),  # odd length: alignment by order
        "k": torch.tensor([True, False, True]),
        "i": torch.arange(5, dtype=torch.int64),
        "j": torch.arange(3, dtype=torch.int32),
        "s": torch.arange(3, dtype=torch.int16),
        "c": torch.arange(2, dtype=torch.int8),
        "e": torch.zeros(0, 4),
    }
    ours = b"".join(bytes(p) for p in safetensors_parts(payload))
    assert ours == save({k: v.contiguous() for k, v in payload.items()})
    assert safetensors_parts({"z": torch.zeros(2, dtype=torch.complex64)}) is None  # safetensors writes it


def _child(store, parent_hash, n, snap):
    m = dict(parent=parent_hash, depth=3, recipe={"type": "X", "version": 1, "params": {"n": n}})
    return store.write_state(dict(m, hash=identity_of(m)), snap)


def _hash(parent_hash, n):
    return identity_of(dict(parent=parent_hash, recipe={"type": "X", "version": 1, "params": {"n": n}}))


@pytest.fixture
def finished(tmp_path):
    exp, root, dense, leaves = small_tree(tmp_path / "s", branches=("l1_unstructured",), rounds=1)
    assert exp.run().ok
    return exp, dense


def test_deferred_states_wait_for_their_packs_keep_their_lock_and_land_on_leaving(finished, monkeypatch):
    exp, dense = finished
    store = Store(exp.store.root)
    snap = store.load(dense.hash)
    gate, real_fsync = threading.Event(), publishing.fsync_path
    monkeypatch.setattr(publishing, "fsync_path", lambda path: (gate.wait(10), real_fsync(path)))
    packs_before = set(store.all_blobs())
    other: dict = {}

    def from_another_thread(h):  # what another process sees meanwhile: not there yet, and locked
        other["manifest"] = Store(store.root).manifest(h)
        try:
            Flock(store.root / "locks" / f"{h}.lock", 0.2).release()
            other["locked"] = False
        except Exception:
            other["locked"] = True

    with store.deferred_publishing():
        new = snap.evolve(weights={k: v + 1 for k, v in snap.weights.items()})
        with store.lock(_hash(dense.hash, 1)):
            first = _child(store, dense.hash, 1, new)
        # the same new tensors again, while the first pack is still waiting: referenced, not rewritten
        second = _child(store, first["hash"], 2, new.evolve(metrics={"again": True}))
        assert not store.manifest_path(first["hash"]).exists()
        assert {e["pack"] for e in second["weights"].values()} == {e["pack"] for e in first["weights"].values()}
        t = threading.Thread(target=from_another_thread, args=(first["hash"],))
        t.start()
        t.join()
        assert other == {"manifest": None, "locked": True}
        threading.Timer(0.3, gate.set).start()
        began = time.monotonic()
        store.wait_published()  # everything this thread submitted is in place when it returns
        assert time.monotonic() - began > 0.25
        assert all(store.manifest_path(m["hash"]).exists() for m in (first, second))
        assert store.manifest(first["hash"])["digest"] == first["digest"]  # this thread waits for its own
    for m in (first, second):
        assert store.manifest(m["hash"]) == m
    assert len(set(store.all_blobs()) - packs_before) == 1
    assert not list(store.root.glob("**/*.tmp"))
    assert {first["hash"], second["hash"]} <= {r["hash"] for r in store.rows()}  # indexed
    Flock(store.root / "locks" / f"{first['hash']}.lock", 0.2).release()  # released once in place
    assert store.verify() == []
    back = store.load(second["hash"]).weights
    assert all(torch.equal(back[k], v) for k, v in new.weights.items())


def test_a_publishing_failure_stops_the_run_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    exp, root, dense, leaves = small_tree(tmp_path / "s", branches=("l1_unstructured",), rounds=1)
    real_move, calls = publishing.Publisher._move, {"n": 0}

    def full_disk(files):
        calls["n"] += 1
        if calls["n"] == 4:  # a batch's manifests (each batch moves its packs, then its manifests)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_move(files)

    monkeypatch.setattr(publishing.Publisher, "_move", staticmethod(full_disk))
    with pytest.raises(PublishError, match="No space left on device"):
        exp.run()
    monkeypatch.undo()
    store = Store(tmp_path / "s")
    assert not list(store.root.glob("**/*.tmp"))
    assert store.verify() == []  # what was published is whole; nothing else is there
    done = [h for h in exp.states if store.is_done(h)]
    assert 0 < len(done) < len(exp.states)
    summary = exp.run()
    assert summary.ok and set(summary.computed) == set(exp.states) - set(done)
    assert store.verify() == []


def test_a_finished_states_tensor_changed_in_place_before_it_is_stored_stops_the_run(finished, monkeypatch):
    """A recipe that changes a finished state's tensors in place (the bug own_copy fixed in training)
    must not get bytes on disk that its hash does not describe: the publisher refuses the pack."""
    exp, dense = finished
    store = Store(exp.store.root)
    snap = store.load(dense.hash)
    gate, real_fsync = threading.Event(), publishing.fsync_path
    monkeypatch.setattr(publishing, "fsync_path", lambda path: (gate.wait(10), real_fsync(path)))
    new = snap.evolve(weights={k: v + 1 for k, v in snap.weights.items()})
    with pytest.raises(PublishError, match="changed in place while it was being stored"):
        with store.deferred_publishing():
            first = _child(store, dense.hash, 1, new)
            next(iter(new.weights.values())).add_(1.0)  # after it was hashed, before its bytes were written
            gate.set()
    assert store.manifest(first["hash"]) is None  # nothing of it in place
    assert not list(store.root.glob("**/*.tmp"))
    assert store.verify() == []
