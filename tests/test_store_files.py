"""Files a store creates follow the umask, and an unreadable index is rebuilt from the manifests."""

import os
import stat

import pytest

from prunelab.experiment import Experiment, Train

from .experiment_helpers import CONFIG
from .test_cli import run_cli


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_store_files_follow_the_umask(tmp_path, digits, umask_027):
    exp = Experiment(tmp_path / "s")
    exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")]
    assert files
    for path in files:  # 0666 & ~027 = 0640: group-readable, as any file the user creates
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_data_cache_files_follow_the_umask(tmp_path, umask_027):
    import numpy as np

    from prunelab.tasks.datasets import atomic_savez

    target = tmp_path / "cache" / "x.npz"
    atomic_savez(target, {"x": np.zeros(3)})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_garbage_index_is_moved_aside_and_rebuilt(tmp_path, digits):
    exp = Experiment(tmp_path / "s")
    exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    index = tmp_path / "s" / "index.sqlite"
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "s" / extra).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    out = run_cli("ls", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    from prunelab.experiment import Store

    store = Store(tmp_path / "s")
    assert len(store.rows()) == 2  # the root and its training, from the manifests
    aside = list((tmp_path / "s").glob("index.sqlite.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")


# ------------------------------------------------------------ packs: one file for a state's new tensors


def _entries(m):
    out = list(m["weights"].values()) + list(m["masks"].values())
    return out + (list(m["optimizer"]["tensors"].values()) if m.get("optimizer") else [])


def _fresh_process_memory():
    from prunelab.caches import CACHES

    CACHES.clear()


def test_each_state_writes_its_new_tensors_into_one_file_and_shares_the_rest(tmp_path):
    from .experiment_helpers import small_tree

    exp, root, dense, leaves = small_tree(tmp_path / "s", branches=("l1_unstructured",), rounds=2)
    assert exp.run().ok
    store = exp.store
    manifests = {h: store.manifest(h) for h in exp.states}
    files_of = {h: {e.get("pack") or e["blob"] for e in _entries(m)} for h, m in manifests.items()}
    for h, m in manifests.items():  # every entry names a pack that holds it
        for e in _entries(m):
            assert e["pack"] != e["blob"] and store.entry_path(e).is_file()
    # a state's own (new) tensors are in exactly one file: the files it references minus its parent's
    for h, m in manifests.items():
        parent = m["parent"]
        own = files_of[h] - (files_of[parent] if parent else set())
        assert len(own) <= 1, (m["recipe"]["label"], own)
    # the store holds one file per state that had new tensors, nothing more
    assert set(store.all_blobs()) == store.referenced_blobs() == set().union(*files_of.values())
    assert len(store.all_blobs()) <= len(manifests)
    # a rewind references the root's tensors (no copy), a prune its parent's optimizer state
    for leaf in leaves:
        node = leaf.parent  # the rewind
        assert manifests[node.hash]["weights"] == manifests[root.hash]["weights"]
        prune = node.parent
        assert manifests[prune.hash]["optimizer"]["tensors"] == manifests[prune.parent.hash]["optimizer"]["tensors"]
    assert store.verify() == []
    # reading back equals what was written
    _fresh_process_memory()
    snap = store.load(dense.hash)
    assert snap.optimizer is not None and set(snap.weights) == set(manifests[dense.hash]["weights"])


def test_a_new_process_dedups_after_reading_the_parent(tmp_path):

    from .experiment_helpers import CONFIG

    exp = Experiment(tmp_path / "s")
    dense = exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    _fresh_process_memory()  # as a Dask worker that did not write the parent
    store = exp.store
    parent = store.load(dense.hash)  # a verified read tells this process where the tensors live
    child = dict(hash="0" * 64, parent=dense.hash, depth=2, recipe={"type": "X", "version": 1, "params": {}})
    written = store.write_state(child, parent.evolve(metrics={"note": "same tensors"}))
    assert [e["pack"] for e in _entries(written)] == [e["pack"] for e in _entries(store.manifest(dense.hash))]
    assert len(store.all_blobs()) == 2  # the root's file and the dense state's: nothing written for the child


def test_stores_of_one_tensor_files_are_still_read_verified_and_extended(tmp_path, monkeypatch):
    """Format 2 and earlier stored each tensor alone under the key "t", named by its content hash."""
    from safetensors.torch import save_file

    from prunelab.experiment import store as store_module

    from .experiment_helpers import small_tree

    def one_tensor_files(self, tensors, job=None):
        for digest, tensor in tensors.items():
            path = self.blob_path(digest)
            path.parent.mkdir(exist_ok=True)
            save_file({"t": tensor.detach().contiguous()}, str(path))
        return {digest: digest for digest in tensors}

    monkeypatch.setattr(store_module.Store, "_store_tensors", one_tensor_files)
    exp, root, dense, leaves = small_tree(tmp_path / "s", branches=("l1_unstructured",), rounds=1)
    assert exp.run().ok
    old = {h: exp.store.manifest(h) for h in exp.states}
    assert all("pack" not in e for m in old.values() for e in _entries(m))
    monkeypatch.undo()
    _fresh_process_memory()
    store = store_module.Store(tmp_path / "s")
    assert store.verify() == [] and store.gc(dry_run=True) == (0, 0)
    before = set(store.all_blobs())
    snap = store.load(leaves[0].hash)
    # a new state on top: its shared tensors stay in their one-tensor files; only new ones go in a pack
    child = dict(hash="1" * 64, parent=leaves[0].hash, depth=9, recipe={"type": "X", "version": 1, "params": {}})
    w = snap.weights["1.weight"].clone()
    w[0, 0] += 1.0
    written = store.write_state(child, snap.evolve(weights={**snap.weights, "1.weight": w}))
    new_files = set(store.all_blobs()) - before
    assert len(new_files) == 1
    packed = [e for e in _entries(written) if "pack" in e]
    assert [e["blob"] for e in packed] == [written["weights"]["1.weight"]["blob"]]
    from prunelab.experiment.maintenance import check_pack

    why, members = check_pack(store, packed[0]["pack"])
    assert why is None and members == {packed[0]["blob"]}
    # the hand-made child has no recipe behind its hash; that is all verify finds
    assert [p.state for p in store.verify()] == ["1" * 64]
    import torch

    assert torch.equal(store.get_tensor(packed[0]["blob"], packed[0]["pack"]), w)
    shared = written["weights"]["3.weight"]  # still the one-tensor file of the old layout
    assert "pack" not in shared and torch.equal(store.get_tensor(shared["blob"]), snap.weights["3.weight"])


def test_verify_finds_a_pack_that_lost_a_tensor_or_its_name(tmp_path):
    from safetensors.torch import load_file, save_file

    exp = Experiment(tmp_path / "s")
    from .experiment_helpers import CONFIG

    dense = exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    entry = exp.store.manifest(dense.hash)["weights"]["1.weight"]
    path = exp.store.entry_path(entry)
    tensors = load_file(str(path))
    del tensors[entry["blob"]]  # a well-formed file, every tensor intact, one missing
    save_file(tensors, str(path))
    problems = exp.store.verify()
    assert problems and any("blob is corrupted" in p.message and str(path) in p.message for p in problems)


def test_a_remembered_tensor_digest_follows_in_place_changes_and_equals_a_fresh_hash():
    import hashlib

    import torch

    from prunelab.caches import CACHES
    from prunelab.experiment.store import tensor_digest

    def fresh(t):  # the definition, computed independently
        h = hashlib.sha256(f"{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()

    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    first = tensor_digest(t)
    assert first == fresh(t) and id(t) in CACHES.tensor_digests
    assert tensor_digest(t) == first
    t.add_(1)  # torch's version counter moves: hashed again
    assert tensor_digest(t) == fresh(t) != first
    t[0, 0] = 100.0
    assert tensor_digest(t) == fresh(t)
    key = id(t)
    del t  # forgotten with the tensor (its id may be reused)
    assert key not in CACHES.tensor_digests
    with torch.inference_mode():
        u = torch.ones(3)
    assert tensor_digest(u) == fresh(u) and id(u) not in CACHES.tensor_digests
