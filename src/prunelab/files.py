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
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
