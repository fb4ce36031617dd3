"""Writing finished states behind the computation.

Storing a state durably (content hashes, one pack file, the manifest, fsyncs, the index
rows) took ~10 ms on this project's reference machine; in a study of short trainings that
was a third of the orchestration's overhead. While a run is inside :func:`background_writes`,
the executor hands each finished state to one writer thread and goes on with the next
state at once; the state itself stays available in memory (the snapshot cache) and
``wait`` gives it from disk to whoever needs it there.

What stays true:
- A state is written by the same ``Store.write_state`` as before: tensors, then manifest,
  atomically. Until its manifest is published, the state keeps its file lock (handed to the
  writer), so another process that needs it waits, then reuses it, as before.
- States are written in the order they finished, so a parent is on disk before its children.
- The outermost ``background_writes`` waits for every write before it returns: a run's
  summary, a Dask task's results and everything read afterwards see finished files.
- A write that fails marks its state failed (its manifest says why), as a synchronous write
  did. A full disk stops the run at the next hand-over or wait; states not yet written are
  not written (a rerun computes them), and nothing half-written is published.
- The queue is bounded: when writing is slower than computing, the computation waits.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

QUEUE_SIZE = 16
# PRUNELAB_BACKGROUND_WRITES=0 writes each state before the next one starts (as before; benchmarks
# compare the two ways with this flag)
ENABLED = os.environ.get("PRUNELAB_BACKGROUND_WRITES", "1") != "0"


class StateWriter:
    """One background thread that runs write jobs in submission order."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._pending: dict[tuple[str, str], threading.Event] = {}
        self._guard = threading.Lock()
        self._fatal: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._submitted = 0  # jobs handed over so far (each job's number)
        self._drop_through = 0  # after a fatal error: jobs up to this number are dropped, not run

    def submit(self, key: tuple[str, str], job: Callable[[], None], release: Callable[[], None]) -> None:
        """Run ``job`` (writing the state ``key`` = (store root, hash)) behind the caller, then
        ``release`` (its lock) whatever happened. A job records the failures it can (a failed state);
        an exception it raises stops the run: it is raised here, or by the next ``wait`` or ``flush``,
        and no later job runs."""
        try:
            self.check()
        except BaseException:
            release()  # the job never runs: its lock must not outlive the run
            raise
        with self._guard:
            self._pending[key] = threading.Event()
            self._submitted += 1
            number = self._submitted
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="prunelab-state-writer", daemon=True)
                self._thread.start()
        try:
            self._jobs.put((number, key, job, release))  # waits while the queue is full
        except BaseException:  # interrupted while waiting: the job is not queued
            with self._guard:
                self._pending.pop(key).set()
            release()
            raise

    def wait(self, key: tuple[str, str]) -> None:
        """Return once the state ``key`` is written (at once when it is not waiting to be)."""
        with self._guard:
            event = self._pending.get(key)
        if event is not None:
            event.wait()
        self.check()

    def flush(self) -> None:
        """Return once every job handed over so far has run."""
        if self._thread is not None:
            self._jobs.join()
        self.check()

    def check(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal

    def _work(self) -> None:
        while True:
            number, key, job, release = self._jobs.get()
            try:
                if number > self._drop_through:  # after a fatal error, nothing handed over before it is written
                    job()
            except BaseException as exc:  # noqa: BLE001 (a job records what it can; the rest stops the run)
                with self._guard:
                    self._fatal = exc
                    self._drop_through = self._submitted
            finally:
                try:
                    release()
                finally:
                    with self._guard:
                        self._pending.pop(key).set()
                    self._jobs.task_done()


_WRITER = StateWriter()
_DEPTH = 0  # how many background_writes scopes are open in this process (a Dask worker may run tasks in threads)
_DEPTH_GUARD = threading.Lock()


def current() -> StateWriter | None:
    """The writer while a ``background_writes`` scope is open (in this process), else None."""
    return _WRITER if _DEPTH else None


def _leave() -> bool:
    """Close one scope; True when it was the last one open."""
    global _DEPTH
    with _DEPTH_GUARD:
        _DEPTH -= 1
        return _DEPTH == 0


@contextmanager
def background_writes() -> Iterator[StateWriter]:
    """Inside, executors write finished states behind the computation; leaving the outermost
    scope waits for every write (also when the run is interrupted: finished states are kept)."""
    global _DEPTH
    if not ENABLED:
        yield _WRITER
        return
    with _DEPTH_GUARD:
        _DEPTH += 1
    try:
        yield _WRITER
    except BaseException:
        if _leave():
            try:
                _WRITER.flush()
            except Exception:  # noqa: BLE001 (the error already propagating says more)
                pass
        raise
    if _leave():
        _WRITER.flush()


def wait_for(root: str, state_hash: str) -> None:
    """Block until the state is written if this process is still writing it."""
    if _DEPTH:
        _WRITER.wait((root, state_hash))
