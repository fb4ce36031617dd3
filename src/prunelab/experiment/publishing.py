"""Making finished states durable behind the computation.

Writing a state in line costs two fsyncs, two renames and two directory fsyncs: mostly waiting on
the disk, little of it CPU, and a large share of what a small state costs besides its training
(docs/benchmarks/study_overhead.md). Inside
:meth:`Store.deferred_publishing`, :meth:`Store.write_state` instead hands the state's pack
buffers (views of its tensors) and manifest bytes to a :class:`Publisher` thread and returns; the
thread writes them to temporary files, fsyncs them, renames them into place and indexes them,
while the next state computes. Only the waiting (and the kernel's work of creating files) moves
to the thread: hashing and serialising stay in line, because CPU work beside a training slowed
it by as much as it hid (docs/architecture.md, "A state's waiting is published behind the
computation"). A pack whose tensors changed in place before their bytes were on disk is refused
(:meth:`Job.check_unchanged`).

What stays true:
- A manifest appears only after every file it references is on disk (all of a batch's files are
  fsynced, then its packs renamed and their folders fsynced, then its manifests renamed).
- States are published in the order they were written, so a child never appears before the
  pack of its parent that it shares tensors with.
- In the writing thread, reading a state not yet published waits for it (:meth:`wait_for`), and
  a state's lock is held until it is published, so another process never sees it missing and
  computes it again.
- Leaving ``deferred_publishing`` waits for every state, and raises the first error; after an
  error nothing more is published and the remaining temporary files are removed (a state that
  was not published is recomputed by the next run, like one interrupted).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreError
from ..files import current_umask, disk_full, fsync_path


class PublishError(StoreError):
    """Publishing a finished state failed (disk full, I/O error): the run cannot go on storing."""


def temp_file(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (its folder made when missing): (descriptor, name)."""
    try:
        return tempfile.mkstemp(prefix=path.name[:8] + ".", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:  # trying first saves a mkdir a state
        path.parent.mkdir(exist_ok=True)
        return tempfile.mkstemp(prefix=path.name[:8] + ".", suffix=".tmp", dir=path.parent)


def write_all(fd: int, parts: list) -> None:
    """Write byte buffers in order to the open descriptor ``fd``."""
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


def write_parts(fd: int, parts: list) -> None:
    """Write byte buffers in order to the open descriptor ``fd``, and close it."""
    try:
        write_all(fd, parts)
    finally:
        os.close(fd)


@dataclass
class Job:
    """One state to publish: its packs and its manifest → final paths. Each is a temporary file
    already written, or the buffers to write (a pack's ``store.safetensors_parts``, the manifest's
    bytes), which this thread writes: the tensors they view are a finished state's, which nothing
    changes."""

    state: str
    rows: object = None  # the manifest's index rows (store.IndexRows), encoded by the writing thread
    packs: list[tuple[str | list, Path]] = field(default_factory=list)
    manifest_file: tuple[str | list, Path] | None = None
    fds: dict[str, int] = field(default_factory=dict)  # temporary files still open: fsynced by descriptor
    versions: list[tuple[object, int]] = field(default_factory=list)  # (tensor, its version when hashed)

    def guard(self, tensors) -> None:
        """Note the version counters of the tensors a pack's buffers view: the publisher refuses a
        pack whose tensors changed in place before their bytes were on disk (a recipe changing a
        finished state: stored, the bytes would not be what the state's hash says)."""
        for t in tensors:
            try:
                self.versions.append((t, t._version))
            except RuntimeError:  # an inference-mode tensor has no counter (and cannot change in place)
                pass

    def check_unchanged(self) -> None:
        for t, version in self.versions:
            if t._version != version:
                raise PublishError(f"state {self.state[:10]}: a tensor of it changed in place while it was being "
                                   "stored (a recipe changed a finished state's tensors: make it change a copy); "
                                   "nothing of it was published")

    def files(self) -> list[tuple[str | list, Path]]:
        return self.packs + ([self.manifest_file] if self.manifest_file else [])

    def discard(self) -> None:
        names = set(self.fds)
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        names.update(source for source, _ in self.files() if isinstance(source, str))
        for name in names:
            Path(name).unlink(missing_ok=True)


class Publisher:
    """A thread that publishes :class:`Job`\\ s in order; see the module's docstring."""

    def __init__(self, root: Path, index) -> None:
        self._root = root
        self._index = index  # called with the published jobs' index rows, in this thread
        self._cv = threading.Condition()
        self._queue: list[Job] = []
        self._pending: dict[str, int] = {}  # state hash → jobs for it not yet published
        self._packs: set[str] = set()  # pack file names written, not yet renamed into place
        self._locks: dict[str, list] = {}  # state hash → locks to release once it is published
        self._error: BaseException | None = None
        self._closing = False
        self._mode = 0o666 & ~current_umask()
        self._thread = threading.Thread(target=self._loop, name="prunelab-publisher", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- the writing thread's side

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._error is not None or self._closing:
                job.discard()
                self._raise()
            self._queue.append(job)
            self._pending[job.state] = self._pending.get(job.state, 0) + 1
            self._packs.update(path.name for _, path in job.packs)
            self._cv.notify_all()

    def pack_pending(self, name: str) -> bool:
        """Is the pack file ``name`` (with its suffix) written and about to be published?"""
        return name in self._packs

    def wait_for(self, state: str) -> None:
        """Return once ``state`` is published (or publishing failed: then it stays missing)."""
        if state not in self._pending:  # the usual case: no lock taken
            return
        with self._cv:
            while state in self._pending:
                self._cv.wait()

    def flush(self) -> None:
        """Return once every job submitted so far is published (or publishing failed)."""
        with self._cv:
            while self._pending:
                self._cv.wait()

    def hand_over(self, state: str, lock) -> bool:
        """Keep ``lock`` (an object with ``release()``) until ``state`` is published; False when it is
        not pending (then the caller releases it)."""
        with self._cv:
            if state not in self._pending:
                return False
            self._locks.setdefault(state, []).append(lock)
            return True

    def close(self, *, quiet: bool = False) -> None:
        """Wait for every submitted state; raise the first error unless ``quiet``."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        if self._error is not None and not quiet:
            self._raise()

    def _raise(self):
        exc = self._error or PublishError("the publisher is closed")
        if isinstance(exc, PublishError):  # this module's own finding: its message says what to do
            raise PublishError(f"{self._root}: {exc}") from exc
        what = "disk full while storing finished states" if disk_full(exc) else "could not store finished states"
        raise PublishError(f"{self._root}: {what} ({exc}); free space and rerun — the states in place are kept "
                           "and not recomputed, the others are computed again") from exc

    # ---------------------------------------------------------------- the publishing thread

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                failed = self._error is not None
            try:
                if failed:
                    raise self._error
                self._publish(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                for job in batch:
                    job.discard()
                with self._cv:
                    self._error = self._error or exc
            finally:
                with self._cv:
                    release = []
                    for job in batch:
                        left = self._pending[job.state] - 1
                        if left:
                            self._pending[job.state] = left
                        else:
                            del self._pending[job.state]
                            release += self._locks.pop(job.state, [])
                        self._packs.difference_update(path.name for _, path in job.packs)
                    self._cv.notify_all()
                for lock in release:
                    lock.release()

    def _publish(self, batch: list[Job]) -> None:
        for job in batch:
            job.packs = [self._written(job, *file) for file in job.packs]
            if job.manifest_file is not None:
                job.manifest_file = self._written(job, *job.manifest_file)
            for tmp, _ in job.files():  # mkstemp made them 0600; a store follows the umask
                fd = job.fds.pop(tmp, None)
                if fd is None:
                    os.chmod(tmp, self._mode)
                    fsync_path(tmp)
                    continue
                try:  # by descriptor: each open and close is a syscall, and a wait for the GIL after it
                    os.fchmod(fd, self._mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for job in batch:  # after the bytes are on disk: a change before or while they were written shows
            job.check_unchanged()
        self._move([f for job in batch for f in job.packs])  # every pack is in place before a manifest
        self._move([job.manifest_file for job in batch if job.manifest_file])
        self._index([job.rows for job in batch if job.rows is not None])

    @staticmethod
    def _written(job: Job, source: str | list, path: Path) -> tuple[str, Path]:
        """The temporary file holding ``source``: itself when it is one; else a new one, written here.
        (Creating a file costs CPU time in the kernel, twice a state: in this thread it runs beside
        the computation.)"""
        if isinstance(source, str):
            return source, path
        fd, tmp = temp_file(path)
        job.fds[tmp] = fd  # from here on, discard() removes it
        write_all(fd, source)
        return tmp, path

    @staticmethod
    def _move(files: list[tuple[str, Path]]) -> None:
        folders = []
        for tmp, path in files:
            os.replace(tmp, path)
            if path.parent not in folders:
                folders.append(path.parent)
        for folder in folders:  # the renames survive a power cut
            fsync_path(folder)
