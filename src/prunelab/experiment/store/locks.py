"""Locks under ``locks/``: one per state (concurrent runs compute each state once), and the store's
own lock (shared while runs write, exclusive for gc and repair). POSIX ``flock``; filelock's
locks on Windows.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ...errors import StoreError
from ..containment import check_directory, is_link_or_special

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class Flock:
    """An exclusive ``flock`` on ``path`` (the lock filelock takes on POSIX, so processes using either
    exclude each other), without filelock's bookkeeping, which costs more than the lock itself, once
    or twice per state (docs/architecture.md)."""

    def __init__(self, path: Path, timeout: float):
        try:  # mode: as the umask allows, like filelock; never through a link planted in the store
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o666)
        except OSError as exc:
            raise StoreError(f"{path}: cannot take this lock ({is_link_or_special(path) or exc.strerror or exc})") from None
        try:
            if timeout < 0:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                return
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(f"{path}: still locked by another process after {timeout:g} s") from None
                    time.sleep(0.05)
        except BaseException:
            os.close(self.fd)
            raise

    def release(self) -> None:
        os.close(self.fd)  # closing the only descriptor drops the flock


class StoreLocks:
    """The Store's locks (a part of :class:`~.core.Store`)."""

    @contextmanager
    def lock(self, key: str, timeout: float = -1) -> Iterator[None]:
        """Hold the lock ``key`` (waiting up to ``timeout`` s; -1: for ever)."""
        if self.read_only:  # nothing is written, so there is nothing to serialise
            yield
            return
        path = self.root / "locks" / f"{key}.lock"
        if fcntl is None:  # Windows: filelock's msvcrt locks
            with FileLock(str(path), timeout=timeout):
                yield
            return
        held = Flock(path, timeout)
        try:
            yield
        finally:
            publisher = self._publisher()
            if publisher is None or not publisher.hand_over(key, held):  # held until the state is in place
                held.release()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's lock shared while this process writes states (a run, a worker's task).

        ``gc`` and ``repair`` take it exclusively, so they wait until no run is writing: a pack is
        published before the manifest that references it, and gc between the two would remove it
        (tests/test_adversarial.py races them). Shared holders never wait for each other. A lock
        rather than a grace period, because a grace period is a guess about how long a state takes
        to publish, which a slow disk or a paused process can exceed."""
        if self.read_only or fcntl is None:
            yield
            return
        fd = self._store_lock_fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def exclusive(self, what: str, on_wait=None) -> Iterator[None]:
        """Hold the store's lock exclusively (no run writing, no other gc or repair) for ``what``,
        waiting for the runs that hold it; ``on_wait()`` is called once if it has to wait."""
        self._check_writable(what)
        if fcntl is None:  # Windows: filelock's exclusive lock (runs do not take the shared one there)
            with self.lock("__store__"):
                yield
            return
        fd = self._store_lock_fd()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _store_lock_fd(self) -> int:
        folder = self.root / "locks"
        check_directory(folder)
        folder.mkdir(exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(folder / "__store__.lock", flags, 0o666)
        except OSError as exc:
            raise StoreError(f"{folder / '__store__.lock'}: cannot take the store's lock ({exc.strerror or exc})") from None

    @contextmanager
    def locks_prepared(self, keys: list[str]) -> Iterator[None]:
        """Within it, a thread creates the lock files of ``keys`` (in order) ahead of their use.

        Creating a file costs CPU time in the kernel, taking a lock on a file that exists next to
        nothing (docs/architecture.md): made beside the computation, a study's lock files stop
        costing its states anything. A lock file is an empty file that stays (``lock`` creates it
        when missing), so making one early, or for a state that then is not run, changes nothing."""
        if self.read_only or fcntl is None or not keys:
            yield
            return
        stop = threading.Event()
        folder, mode = self.root / "locks", 0o666  # as Flock: the umask decides

        def create() -> None:
            for key in keys:
                if stop.is_set():
                    return
                try:
                    os.close(os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | NOFOLLOW, mode))
                except OSError:  # the store moved or went: lock() says so when it matters
                    return

        thread = threading.Thread(target=create, name="prunelab-lock-files", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
