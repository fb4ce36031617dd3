"""Writing finished states behind the computation (experiment/writes.py)."""

import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass

import pytest

from prunelab.experiment import Experiment, Recipe, Store, StoreError, Train
from prunelab.experiment import writes
from prunelab.experiment.writes import StateWriter

from .experiment_helpers import CONFIG, small_tree


def test_jobs_run_in_order_and_wait_returns_once_the_state_is_written():
    writer, done, released = StateWriter(), [], []
    gate = threading.Event()

    def job(i):
        def run():
            if i == 0:
                gate.wait(5)
            time.sleep(0.01)
            done.append(i)
        return run

    for i in range(5):
        writer.submit(("root", f"h{i}"), job(i), lambda i=i: released.append(i))
    assert done == []  # the caller went on while the first write waits
    gate.set()
    writer.wait(("root", "h2"))
    assert done[:3] == [0, 1, 2]
    writer.flush()
    assert done == released == [0, 1, 2, 3, 4]
    writer.wait(("root", "never submitted"))  # returns at once


def test_a_job_that_raises_stops_the_jobs_behind_it_and_is_raised_once():
    writer, done, released = StateWriter(), [], []
    gate = threading.Event()

    def ok(i):
        def run():
            gate.wait(5)
            done.append(i)
        return run

    def boom():
        raise OSError(errno.ENOSPC, "No space left on device")

    writer.submit(("r", "a"), ok(0), lambda: released.append("a"))
    writer.submit(("r", "b"), boom, lambda: released.append("b"))
    writer.submit(("r", "c"), ok(2), lambda: released.append("c"))  # queued behind the failure: dropped
    gate.set()
    with pytest.raises(OSError, match="No space"):
        writer.flush()
    assert done == [0] and released == ["a", "b", "c"]  # every lock is released, written or not
    writer.flush()  # raised once; the writer works again afterwards
    writer.submit(("r", "d"), ok(3), lambda: released.append("d"))
    writer.flush()
    assert done == [0, 3]


def test_a_job_handed_over_after_a_failure_is_refused_and_its_lock_released():
    writer, released = StateWriter(), []
    writer.submit(("r", "a"), lambda: 1 / 0, lambda: released.append("a"))
    deadline = time.time() + 5
    while writer._fatal is None and time.time() < deadline:  # the failure has happened
        time.sleep(0.01)
    with pytest.raises(ZeroDivisionError):
        writer.submit(("r", "b"), lambda: released.append("ran"), lambda: released.append("b"))
    writer.flush()
    assert released == ["a", "b"]


def _manifests(exp):
    out = {}
    for h in exp.states:
        m = exp.store.manifest(h)
        out[h] = (m["status"], m["weights"], m["masks"], m["optimizer"], m["metrics"].get("test"))
    return out


def test_writes_behind_give_the_same_store_as_writes_in_line(tmp_path, monkeypatch):
    behind, *_ = small_tree(tmp_path / "behind", rounds=1)
    summary = behind.run()
    assert summary.ok and len(summary.computed) == len(behind.states)
    monkeypatch.setattr(writes, "ENABLED", False)
    in_line, *_ = small_tree(tmp_path / "in_line", rounds=1)
    assert in_line.run().ok
    assert _manifests(behind) == _manifests(in_line)
    assert behind.store.verify() == [] and not list((tmp_path / "behind").glob("**/*.tmp"))
    assert behind.run().computed == []  # all of it on disk: a rerun is free


@dataclass(frozen=True)
class Interrupt(Recipe):
    def run(self, ctx, parent):
        raise KeyboardInterrupt


def test_a_state_keeps_its_lock_until_written_and_an_interrupt_keeps_finished_states(tmp_path, monkeypatch):
    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    first = root.then(Train(CONFIG, stop=5))
    second = first.then(Train(CONFIG, stop=10))
    second.then(Interrupt())
    real, seen = Store.write_state, []

    def slow_write(self, manifest, snapshot):
        fd = os.open(self.root / "locks" / f"{manifest['hash']}.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the state's lock is still held while it is written
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        seen.append(threading.current_thread().name)
        time.sleep(0.3)  # the computation runs ahead meanwhile
        return real(self, manifest, snapshot)

    monkeypatch.setattr(Store, "write_state", slow_write)
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    assert set(seen) == {"prunelab-state-writer"}
    for state in (root, first, second):  # finished before the interrupt: written all the same
        assert exp.store.is_done(state.hash)
    for h in (root.hash, first.hash, second.hash):  # and every lock is free again
        fd = os.open(tmp_path / "s" / "locks" / f"{h}.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


def test_a_state_whose_write_fails_is_recorded_as_failed_and_the_rerun_retries(tmp_path, monkeypatch):
    import prunelab.experiment.store as store_module

    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    trained = root.then(Train(CONFIG))
    real, calls = store_module.save_file, {"n": 0}

    def refuse_second(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the trained state's pack
            raise ValueError("cannot serialise")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(store_module, "save_file", refuse_second)
    summary = exp.run()
    assert list(summary.failed) == [trained.hash] and "cannot serialise" in summary.failed[trained.hash]
    assert exp.store.manifest(trained.hash)["status"] == "failed"
    assert exp.run().computed == [trained.hash]
    assert exp.store.is_done(trained.hash)


def test_a_full_disk_while_writing_behind_stops_the_run(tmp_path, monkeypatch):
    import prunelab.experiment.store as store_module

    exp = Experiment(tmp_path / "s")
    s = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    for stop in (5, 10, 15, 20):
        s = s.then(Train(CONFIG, stop=stop))
    real, calls = store_module.save_file, {"n": 0}

    def fill_up(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(store_module, "save_file", fill_up)
    with pytest.raises(StoreError, match="disk full while writing state"):
        exp.run()
    done = [h for h in exp.states if exp.store.is_done(h)]
    assert len(done) == 2  # the two written before the disk filled; nothing after it
    assert not list((tmp_path / "s").glob("**/*.tmp"))
    monkeypatch.setattr(store_module, "save_file", real)
    summary = exp.run()
    assert summary.ok and sorted(summary.reused) == sorted(done)
