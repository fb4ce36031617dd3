"""The SQLite index (``index.sqlite``): a cache of the manifests, which stay the source of truth. Made
on demand with this user's token (:mod:`..index_trust`), written as states are published, moved
aside (kept, never deleted) and rebuilt from the manifests when it is unreadable, of another
schema, or not this user's.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from ...caches import CACHES
from ...errors import StoreError
from ...files import disk_full
from ..containment import INDEX_FILES, UnsafeFile, top_level_problems
from .locks import NOFOLLOW
from .schema import INDEX_COLUMNS, INDEX_TABLES, LISTING_INSERT, SUMMARY_INSERT, IndexRows, expected_index_rows, \
    file_stamp, index_rows

def _raise_disk_full(where: Path, exc: BaseException) -> None:
    """A full disk met by SQLite, as one line (it says "database or disk is full")."""
    if "disk is full" in str(exc) or disk_full(exc):
        raise StoreError(f"{where}: disk full ({exc}); free space and rerun — finished states are kept") from None


class IndexFile:
    """The Store's SQLite index (a part of :class:`~.core.Store`)."""

    def _connect(self) -> sqlite3.Connection:
        """A connection to the index for writing. The file is made here when missing, so that it
        follows the umask like every other file (SQLite makes it 0644, and its -wal and -shm files
        copy that mode): under umask 002 a second member of the group can run the study."""
        if not self.index_usable:
            raise UnsafeFile(f"{self._index_path}: not a plain file of this store; `prunelab verify --repair` moves "
                             "it aside")
        try:
            os.close(os.open(self._index_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"{self._index_path}: cannot create the index ({exc.strerror or exc})") from None
        why = top_level_problems(self.root)
        if any(path.name.startswith("index.sqlite") for path, _ in why):  # replaced since the store was opened
            self.index_usable = False
            raise UnsafeFile(f"{self._index_path}: not a plain file of this store; `prunelab verify --repair` moves "
                             "it aside")
        con = sqlite3.connect(self._index_path, timeout=60)
        for attempt in range(50):
            # Switching a new index to WAL needs it alone, and SQLite answers "locked" at once
            # instead of waiting (two processes opening a new store together met it); once the
            # file is in WAL mode the switch is a no-op.
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    con.close()
                    raise
                time.sleep(0.02 * (attempt + 1))
        con.execute("PRAGMA synchronous=NORMAL")  # the index is a rebuildable cache
        return con

    def _writer_connection(self) -> sqlite3.Connection:
        """A connection for the index rows of each written state, kept by this Store for the thread
        that writes (opening one for every state costs measurably: docs/architecture.md); a new one
        when the index file was replaced."""
        local = self.__dict__.setdefault("_connections", threading.local())
        try:
            inode = os.stat(self._index_path).st_ino
        except OSError:
            inode = None
        held = getattr(local, "held", None)
        if held is None or held[0] != inode or inode is None:
            if held is not None:
                held[1].close()
            local.held = held = (inode, self._connect())
        return held[1]

    def _index_key(self) -> tuple | None:
        try:
            st = os.stat(self._index_path)
        except OSError:
            return None
        return (str(self._index_path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _init_index(self) -> None:
        key = self._index_key()
        if key is not None and key in CACHES.ready_indexes:  # made or checked by this process, unchanged since
            return
        self._make_index()
        key = self._index_key()
        if key is not None:
            if len(CACHES.ready_indexes) > 1024:
                CACHES.ready_indexes.clear()
            CACHES.ready_indexes.add(key)

    def _make_index(self) -> None:
        try:
            self._create_index()
        except sqlite3.OperationalError as exc:  # locked, read-only, …: not the file's fault
            _raise_disk_full(self._index_path, exc)
            raise
        except sqlite3.DatabaseError:
            # Garbage, truncated or of another schema: the index is only a cache of the manifests
            # (the source of truth), so it is moved aside — kept for a post-mortem, never deleted —
            # and rebuilt.
            with self.lock("index-rebuild"):
                try:
                    self._create_index()  # another process may have rebuilt it meanwhile
                    return
                except sqlite3.OperationalError:
                    raise
                except sqlite3.DatabaseError:
                    pass
                self._move_index_aside(None)
                self._create_index()
                self._reindex()

    def _create_index(self) -> None:
        from .. import index_trust

        with self._connect() as con:
            for table, create in INDEX_TABLES.items():
                con.execute(create)
                columns = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
                if columns != INDEX_COLUMNS[table]:  # another program's table, or a future version's
                    raise sqlite3.DatabaseError(f"table {table} has columns {columns[:12]}")
            if not con.execute("SELECT 1 FROM meta WHERE key = 'id'").fetchone() and not any(
                    con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in ("states", "listing",
                                                                                           "summaries")):
                index_id = index_trust.new_id()  # a new, empty index: what it will hold, this user writes
                con.execute("INSERT OR REPLACE INTO meta VALUES ('id', ?)", (index_id,))
                con.execute("INSERT OR REPLACE INTO meta VALUES ('token', ?)",
                            (index_trust.token(self._index_path, index_id),))
        con.close()

    def index_schema(self) -> dict[str, list[str]]:
        """The columns of each table of the index (what ``verify`` expects to find)."""
        return {table: list(columns) for table, columns in INDEX_COLUMNS.items()}

    def index_reader(self) -> sqlite3.Connection:
        """A connection that only reads the index: nothing is written where the store is read-only
        (there SQLite's WAL is not read either; what it misses is a cache's newest rows)."""
        uri = self._index_path.resolve().as_uri()
        return sqlite3.connect(f"{uri}?mode=ro" if self.cache_writable else f"{uri}?immutable=1", uri=True)

    def _index_sound(self) -> bool:
        """Whether the index file is missing (made on demand) or a plain, sound SQLite file of this schema."""
        if not self.index_usable or any(p.name.startswith("index.sqlite") for p, _ in top_level_problems(self.root)):
            return False
        if not self._index_path.exists():
            return True
        try:
            con = self.index_reader()
            try:
                if con.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                    return False
                return all([c[1] for c in con.execute(f"PRAGMA table_info({table})")] in ([], columns)
                           for table, columns in INDEX_COLUMNS.items())
            finally:
                con.close()
        except sqlite3.Error:
            return False

    def _move_index_aside(self, folder: Path | None) -> list[Path]:
        """Move the index and its SQLite side files into ``folder`` (a repair's quarantine), or beside
        it as ``index.sqlite*.unreadable-<time>``; links are moved, never followed."""
        moved, stamp = [], time.strftime("%Y%m%dT%H%M%S")
        for name in INDEX_FILES:
            path = self.root / name
            if not os.path.lexists(path):
                continue
            target = folder / name if folder is not None else path.with_name(f"{name}.unreadable-{stamp}")
            if os.path.lexists(target):
                target = target.with_name(f"{target.name}-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(path, target)
            moved.append(target)
        self.tampered = top_level_problems(self.root)
        self.unusable = {path.name for path, _ in self.tampered}
        self.index_usable = not any(name.startswith("index.sqlite") for name in self.unusable)
        self.cache_writable = not self.read_only and self.index_usable
        CACHES.ready_indexes.clear()
        CACHES.trusted_indexes.clear()
        from ...files import fsync_path

        fsync_path(self.root)
        return moved

    def rebuild_index(self, folder: Path | None = None) -> list[Path]:
        """Rebuild the index from the manifests. One that is damaged, of another schema, or not a plain
        file of this store is first moved into ``folder`` (or beside itself). Returns what was moved."""
        self._check_writable("rebuild the index")
        moved = [] if self._index_sound() else self._move_index_aside(folder)
        try:
            self._create_index()
            self.reindex()
        except sqlite3.DatabaseError as exc:  # damaged while it was rebuilt: once more, from nothing
            _raise_disk_full(self._index_path, exc)
            moved += self._move_index_aside(folder)
            self._create_index()
            self.reindex()
        return moved

    def _index(self, manifests: list[dict]) -> None:
        """Index rows of published manifests, in one transaction."""
        self._insert_rows([index_rows(m) for m in manifests])

    def _insert_rows(self, entries: list["IndexRows"]) -> None:
        """Insert :func:`index_rows` of published manifests, their listing rows stamped with the
        manifest file as it is now (a manifest gone meanwhile keeps only its full row)."""
        rows, shorts, summaries = [], [], []
        for entry in entries:
            rows.append(entry.row)
            try:
                stamp = file_stamp(self.manifest_path(entry.row[0]).stat())
            except OSError:
                continue
            shorts.append(entry.short[:1] + (stamp,) + entry.short[2:])
            summaries.append((entry.row[0], stamp, entry.summary))
        if not self.index_usable:
            return  # a link or special file in its place: nothing is written through it (a cache)
        for attempt in range(6):
            try:
                with self._writer_connection() as con:
                    con.executemany("INSERT OR REPLACE INTO states VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                    con.executemany(LISTING_INSERT, shorts)
                    con.executemany(SUMMARY_INSERT, summaries)  # the table: made when the store was opened
                return
            except sqlite3.OperationalError as exc:
                _raise_disk_full(self._index_path, exc)
                if "locked" not in str(exc) and "busy" not in str(exc):
                    damage = exc  # e.g. a table of another schema: the cache is rebuilt
                else:
                    time.sleep(0.2 * (attempt + 1))
                    continue
            except sqlite3.DatabaseError as exc:  # "database disk image is malformed"
                damage = exc
            if attempt:
                raise StoreError(f"{self._index_path}: the index stays damaged after a rebuild ({damage}); "
                                 "`prunelab verify --repair` moves it aside")
            self._drop_writer_connection()
            with self.lock("index-rebuild"):  # moved aside (kept) and rebuilt from the manifests, once
                if not self._index_sound():
                    self._move_index_aside(None)
                    self._create_index()
                    self.reindex()
        raise StoreError(f"{self._index_path}: index is locked; run 'prunelab verify' to rebuild it")

    def _drop_writer_connection(self) -> None:
        held = getattr(self.__dict__.get("_connections"), "held", None)
        if held is not None:
            held[1].close()
            self._connections.held = None

    def reindex(self) -> int:
        """Rebuild the SQLite index from the manifests (the source of truth)."""
        self._check_writable("rebuild the index")
        return self._reindex()

    def _reindex(self) -> int:
        """Rebuild the index's rows from the verified manifests and give it this user's token (see
        :mod:`.index_trust`): what a listing then serves from it, this user's prunelab wrote."""
        from .. import index_trust

        con = self._connect()
        try:
            with con:
                con.execute("DELETE FROM states")
                con.execute("DELETE FROM listing")
                con.execute("DELETE FROM summaries")
                index_id = index_trust.new_id()
                con.execute("INSERT OR REPLACE INTO meta VALUES ('id', ?)", (index_id,))
                con.execute("INSERT OR REPLACE INTO meta VALUES ('token', ?)",
                            (index_trust.token(self._index_path, index_id),))
            count, batch = 0, []
            for m in self.manifests(damaged={}):  # damaged manifests stay out of the index
                batch.append(m)
                if len(batch) == 1000:
                    count += self._insert_batch(con, batch)
                    batch = []
            return count + self._insert_batch(con, batch)
        finally:
            con.close()

    def _insert_batch(self, con: sqlite3.Connection, manifests: list[dict]) -> int:
        rows, shorts, summaries = [], [], []
        for m in manifests:
            try:
                stamp = file_stamp(self.manifest_path(m["hash"]).stat())
            except OSError:
                continue
            want = expected_index_rows(m, stamp)
            rows.append(want["states"])
            shorts.append(want["listing"])
            summaries.append(want["summaries"])
        with con:
            con.executemany("INSERT OR REPLACE INTO states VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.executemany(LISTING_INSERT, shorts)
            con.executemany(SUMMARY_INSERT, summaries)
        return len(rows)

    def _index_trusted(self) -> bool:
        """Whether the index carries this user's token for this very file (:mod:`.index_trust`)."""
        from .. import index_trust

        try:
            st = os.stat(self._index_path)
        except OSError:
            return False
        key = (str(self._index_path), st.st_dev, st.st_ino)
        if key in CACHES.trusted_indexes:
            return True
        try:
            con = self.index_reader()
            try:
                meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('id', 'token')"))
            finally:
                con.close()
        except sqlite3.Error:
            return False
        if not isinstance(meta.get("id"), str) or meta.get("token") != index_trust.token(self._index_path, meta["id"]):
            return False
        if len(CACHES.trusted_indexes) > 1024:
            CACHES.trusted_indexes.clear()
        CACHES.trusted_indexes.add(key)
        return True

    def rows(self) -> list[dict]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM states ORDER BY depth, finished")]
