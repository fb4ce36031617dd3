"""What listings and study tables read, served from the index while it can be trusted: a row (or a
summary) is current while its manifest's size and mtime are what they were when it was verified
and indexed; every other manifest is read and verified now, and its row written back where the
store is writable. An index this user did not write in this very file is not read.
"""

from __future__ import annotations

import json
import os
import sqlite3

from ...errors import StoreError
from ..containment import is_hash, is_link_or_special
from ..summary import SUMMARY_KEYS, SUMMARY_VERSION, state_summary
from .manifests import damage_reason
from .schema import LISTING_COLUMNS, LISTING_INSERT, LISTING_NAMES, LISTING_TABLE, SUMMARY_INSERT, SUMMARY_TABLE, \
    ListingRow, file_stamp, listing_row, listing_values


class ListingCache:
    """The Store's listing and summaries (a part of :class:`~.core.Store`)."""

    def listing(self, damaged: dict | None = None) -> dict[str, dict]:
        """Every state's short row (``listing_row``), from the index where it is current.

        A row is current when its manifest's size and modification time (``file_stamp``) are
        what they were when the manifest was verified and indexed; every other manifest — new,
        changed, or in a store indexed before listings existed — is read and verified now, and its
        row written back (where the store is writable). A damaged manifest is left out and recorded
        in ``damaged`` (path → why), as ``manifests`` does. A listing of 100,000 current states
        reads one SQLite table and stats the files, without opening them.
        """
        sync = self._sync_listing(damaged)
        if sync is None:
            return {}
        current, fresh = sync
        cached = self._select_listing(self.cache_writable) if len(fresh) < len(current) else {}
        rows = {h: fresh.get(h) or cached.get(h) for h in sorted(current)}
        return {h: r for h, r in rows.items() if r is not None}

    def query_listing(self, *, tag: str | None = None, recipe: str | None = None, depth: int | None = None,
                      status: str | None = None, limit: int = 0, damaged: dict | None = None,
                      ) -> tuple[list[dict], int] | None:
        """Filtered rows in display order (depth, finishing time), the first ``limit`` (0: all), and
        how many matched — filtered, ordered and counted by SQLite after the listing is brought up
        to date. None where the index cannot answer (a read-only store whose index is stale):
        use :meth:`listing` then."""
        clauses, args = [], []
        for column, value in (("recipe", recipe), ("depth", depth), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if tag is not None:  # the tag as a JSON string inside the JSON list: quotes delimit whole tags
            needle = json.dumps(tag).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("tags LIKE ? ESCAPE '\\'")
            args.append(f"%{needle}%")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        order = " ORDER BY depth, COALESCE(finished, 0)" + (f" LIMIT {int(limit)}" if limit > 0 else "")

        def query(con):
            rows = [ListingRow(zip(LISTING_NAMES, values))
                    for values in con.execute(f"SELECT {', '.join(LISTING_COLUMNS)} FROM listing{where}{order}", args)]
            total = con.execute(f"SELECT COUNT(*) FROM listing{where}", args).fetchone()[0] if limit > 0 else len(rows)
            return rows, total

        answer = self._ask_current_listing(query, damaged, empty=([], 0))
        if answer is not None and tag is not None:  # LIKE found the candidates; this is the exact test
            answer = ([r for r in answer[0] if tag in r["tags"]], answer[1])
        return answer

    def summaries(self, stamps: dict[str, str], damaged: dict | None = None) -> dict[str, dict]:
        """Each state's :func:`~prunelab.experiment.summary.state_summary`, for ``stamps`` (hash →
        its manifest's current ``file_stamp``, as the listing gives them).

        A summary is read from the index when it was made from a manifest with that same stamp
        and by this version of ``state_summary``; every other one is made from the manifest now
        (verified) and written back where the index is writable. A manifest that is gone or
        damaged is left out (and recorded in ``damaged``, path → why).
        """
        out: dict[str, dict] = {}
        con = self._listing_connection(self.cache_writable)
        if con is not None:
            try:
                hashes = list(stamps)
                for i in range(0, len(hashes), 500):  # SQLite's limit on bound parameters
                    chunk = hashes[i:i + 500]
                    for state_hash, stamp, text in con.execute(
                            f"SELECT hash, stamp, summary FROM summaries WHERE hash IN ({','.join('?' * len(chunk))})",
                            chunk):
                        if stamp == stamps[state_hash]:
                            summary = json.loads(text)
                            if (isinstance(summary, dict) and summary.get("version") == SUMMARY_VERSION
                                    and summary.keys() >= SUMMARY_KEYS):  # else remade from the manifest
                                out[state_hash] = summary
            except (sqlite3.Error, ValueError):  # no table yet, garbage: made from the manifests
                out = {}
            finally:
                con.close()
        fresh = []
        for state_hash in stamps:
            if state_hash in out:
                continue
            path = self.manifest_path(state_hash)
            try:
                m = self._read_manifest(path)
                stamp = file_stamp(path.stat())
            except FileNotFoundError:
                continue
            except StoreError as exc:
                if damaged is not None:
                    damaged[path] = damage_reason(path, exc)
                continue
            out[state_hash] = state_summary(m)
            fresh.append((state_hash, stamp, json.dumps(out[state_hash], allow_nan=True)))
        if fresh and self.cache_writable:
            try:  # a cache: when it cannot be written now, these manifests are read again next time
                with self._connect() as con:
                    con.execute(SUMMARY_TABLE)
                    con.executemany(SUMMARY_INSERT, fresh)
                con.close()
            except (sqlite3.Error, StoreError):
                pass
        return out

    def done_tags(self, damaged: dict | None = None) -> dict[str, str] | None:
        """Every done state → its tags as stored (JSON), from the up-to-date listing; what planning a
        run needs. None where the index cannot answer (see :meth:`query_listing`)."""
        return self._ask_current_listing(
            lambda con: dict(con.execute("SELECT hash, tags FROM listing WHERE status = 'done'")), damaged, empty={})

    def _ask_current_listing(self, query, damaged: dict | None, empty):
        """``query(connection)`` on the listing once it is up to date; ``empty`` for a store without
        states; None where the index cannot answer (stale and not writable here, or unreadable)."""
        sync = self._sync_listing(damaged)
        if sync is None:
            return empty
        if sync[1] and not self.cache_writable:
            return None
        con = self._listing_connection(self.cache_writable)
        if con is None:
            return None
        try:
            return query(con)
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def _sync_listing(self, damaged: dict | None) -> tuple[dict[str, str], dict[str, dict]] | None:
        """Bring the listing up to date: (every manifest's stamp, the rows read now because their
        manifest was new or changed). Only stamps are compared; unchanged manifests are not opened."""
        damaged = {} if damaged is None else damaged
        files: dict[str, str] = {}
        if "states" in self.unusable:
            return None
        try:
            with os.scandir(self.root / "states") as entries:
                for entry in entries:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        try:
                            files[entry.name[:-5]] = file_stamp(entry.stat())
                        except FileNotFoundError:
                            continue
        except FileNotFoundError:
            return None
        stamps: dict[str, str] = {}
        con = self._listing_connection(self.cache_writable)
        if con is not None:
            try:
                stamps = dict(con.execute("SELECT hash, stamp FROM listing"))
            except sqlite3.Error:
                stamps = {}
            finally:
                con.close()
        fresh: dict[str, dict] = {}
        stale = [h for h, stamp in files.items() if stamps.get(h) != stamp]
        for state_hash in stale:
            stamp = files[state_hash]
            if not is_hash(state_hash):  # a stray file: reported, never a path built from its name
                damaged[self.root / "states" / f"{state_hash}.json"] = "its name is not a state hash"
                continue
            path = self.manifest_path(state_hash)
            try:
                m = self._read_manifest(path)
            except FileNotFoundError:
                continue
            except StoreError as exc:
                damaged[path] = damage_reason(path, exc)
                continue
            fresh[state_hash] = listing_row(m, stamp)
        current = files if len(fresh) == len(stale) else {
            h: st for h, st in files.items() if h in fresh or stamps.get(h) == st}  # damaged or vanished: left out
        gone = [h for h in stamps if h not in current] if len(stamps) + len(fresh) != len(current) else []
        if (fresh or gone) and self.cache_writable:
            try:  # a cache: when it cannot be written now, the next listing reads those manifests again
                with self._connect() as con:  # an index from before listings existed gets the table now
                    con.execute(LISTING_TABLE)
                    con.executemany(LISTING_INSERT, [listing_values(r) for r in fresh.values()])
                    con.executemany("DELETE FROM listing WHERE hash = ?", [(h,) for h in gone])
                    if gone:
                        con.execute(SUMMARY_TABLE)
                        con.executemany("DELETE FROM summaries WHERE hash = ?", [(h,) for h in gone])
                con.close()
            except (sqlite3.Error, StoreError):
                self.cache_writable = False  # answer from the files this time
        return current, fresh

    def _listing_connection(self, writable: bool) -> sqlite3.Connection | None:
        """A connection to read the listing and summaries from, or None where the manifests must answer:
        no index, a link or special file in its place, or an index this user did not write in this
        file (a received or copied store's: rebuilt here from the manifests where it can be written,
        else not read; see :mod:`.index_trust`)."""
        if not self.index_usable or is_link_or_special(self._index_path) or not self._index_path.is_file():
            return None  # a link or special file is never read: the manifests answer instead
        try:
            if not self._index_trusted():
                if not writable:
                    return None
                with self.lock("index-rebuild"):
                    if not self._index_trusted():
                        self._make_index()
                        self._reindex()
            if not writable:  # nothing may be written, not even SQLite's shared-memory file
                return sqlite3.connect(f"{self._index_path.resolve().as_uri()}?immutable=1", uri=True)
            return self._connect()
        except (sqlite3.Error, ValueError, OSError, StoreError):
            return None

    def _select_listing(self, writable: bool) -> dict[str, dict]:
        con = self._listing_connection(writable)
        if con is None:
            return {}
        try:
            cursor = con.execute(f"SELECT {', '.join(LISTING_COLUMNS)} FROM listing")
            return {values[0]: ListingRow(zip(LISTING_NAMES, values)) for values in cursor}
        except (sqlite3.Error, ValueError, TypeError):  # no table yet, garbage, locked: read the manifests
            return {}
        finally:
            con.close()
