"""The Store: one object over a store directory, made of the parts that each own one kind of file
(packs, states, probe results and documents, locks, the index, the listing read from it).

Each part is a class of its own module holding the methods for its files; the parts share what
``Store.__init__`` sets (``root``, ``read_only``, what is tampered with, whether the index may be
used and its cache written) and call one another through ``self`` — a state's write stores its
tensors, publishes its manifest and indexes it — so callers keep one object and one lock discipline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import StoreError
from ..containment import UnsafeFile, top_level_problems
from .index import IndexFile
from .listing import ListingCache
from .locks import StoreLocks
from .packs import PackFiles
from .records import RecordFiles
from .states import StateFiles

if TYPE_CHECKING:
    from ..maintenance import Problem


class Store(PackFiles, StateFiles, RecordFiles, StoreLocks, IndexFile, ListingCache):
    """A store directory. ``read_only`` (default: when the directory is not writable by this process)
    opens it without writing anything — no index, no lock files — so a store on a read-only mount, or
    another user's, can be listed, reported and verified; writing methods then raise StoreError."""

    def __init__(self, root: str | Path, *, create: bool = True, read_only: bool | None = None,
                 maintenance: bool = False):
        self.root = Path(root)
        if not self.root.exists():
            if not create or read_only:
                raise StoreError(f"{self.root}: no such store")
            try:
                self.root.mkdir(parents=True, exist_ok=True)  # another process may create it at the same moment
            except OSError as exc:
                raise StoreError(f"{self.root}: cannot create the store ({exc.strerror or exc})") from None
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: not a directory")
        if create and not read_only and not maintenance and not any(
                os.path.lexists(self.root / name) for name in ("states", "blobs", "index.sqlite")):
            try:
                foreign = next(os.scandir(self.root), None) is not None
            except OSError as exc:
                raise StoreError(f"{self.root}: cannot be read ({exc.strerror or exc})") from None
            if foreign:  # a folder of something else (/proc, a home folder): never made into a store
                raise StoreError(f"{self.root}: a folder that holds other files and is not a prunelab store; "
                                 "give a new or empty folder")
        self.read_only = (not os.access(self.root, os.W_OK)) if read_only is None else read_only
        self._index_path = self.root / "index.sqlite"
        # Links and special files where prunelab keeps its folders and index: nothing is written
        # through them (a run refuses to start), and readers do without what they replace.
        self.tampered = top_level_problems(self.root)
        self.unusable = {path.name for path, _ in self.tampered}
        self.index_usable = not any(name.startswith("index.sqlite") for name in self.unusable)
        if "states" in self.unusable and not maintenance:
            path, why = next((p, w) for p, w in self.tampered if p.name == "states")
            raise UnsafeFile(f"{path}: {why}; `prunelab verify --repair` moves it aside")
        # A reader (Results) opens the store read-only but may keep the index's listing cache
        # current where the directory and an index exist and are writable (see listing).
        self.cache_writable = not self.read_only and self.index_usable
        if self.read_only:
            return
        if self.tampered and not maintenance:
            path, why = self.tampered[0]
            raise UnsafeFile(f"{path}: {why}; nothing is written to this store until `prunelab verify --repair` "
                             "moves it aside")
        for sub in ("blobs", "states", "probes", "locks"):
            if not os.path.lexists(self.root / sub):
                (self.root / sub).mkdir(exist_ok=True)
        if self.index_usable:
            self._init_index()

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.root}: the store is read-only here; cannot {what}")

    def _root_key(self) -> str:
        key = self.__dict__.get("_resolved")
        if key is None:
            key = self._resolved = str(self.root.resolve())  # once per Store, not per read or write
        return key

    def referenced_blobs(self) -> set[str]:
        """The packs and blobs that manifests reference; StoreError when a manifest is damaged."""
        from ..maintenance import referenced_pack_names

        return referenced_pack_names(self)

    def all_blobs(self) -> dict[str, Path]:
        """Every pack or blob file by name (through real folders only)."""
        from ..maintenance import stored_files

        return stored_files(self)

    def gc(self, dry_run: bool = False, on_wait=None) -> tuple[int, int]:
        """Remove blobs no manifest references and stale temporary files, never beside a run (``on_wait()``
        is called once if it has to wait for one): see :func:`~.maintenance.collect_garbage`. Returns
        (files, bytes)."""
        from ..maintenance import collect_garbage

        return collect_garbage(self, dry_run, on_wait)

    def verify(self) -> list["Problem"]:
        """Every problem of the store: see :func:`~.maintenance.verify`."""
        from ..maintenance import verify

        return verify(self)

    def repair(self, problems: list["Problem"]) -> tuple[Path, list[Path]]:
        """Move what ``problems`` name into quarantine and rebuild the index: see :func:`~.maintenance.repair`."""
        from ..maintenance import repair

        return repair(self, problems)
