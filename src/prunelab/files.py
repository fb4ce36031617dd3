"""Publishing files atomically with the permissions a user expects."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename the finished temporary file ``tmp`` onto ``path``, with the mode the umask gives.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); a store, a data
    cache or an HDF5 file shared with a group, or with Dask workers running as another user,
    must instead follow the umask like any file the user creates (0644 under umask 022).
    """
    os.chmod(tmp, 0o666 & ~current_umask())
    fsync_path(tmp)  # the content is on disk before the name points at it
    os.replace(tmp, path)
    fsync_path(Path(path).parent)  # and the rename itself survives a power cut


def disk_full(exc: BaseException | None) -> bool:
    """Is ``exc`` (or what caused it) a full disk or an exhausted quota? safetensors reports it as text."""
    import errno

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "os error 28" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's) data to the disk; a filesystem that cannot is left alone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. some network filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which for an instant makes every file another
    thread creates world-writable; Linux reports it in /proc/self/status instead.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)  # fallback: the briefest, safest setting while it is read
    os.umask(umask)
    return umask
