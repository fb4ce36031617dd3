"""The index's tables and the rows a verified manifest gives in each: ``states`` (the full row),
``listing`` (one short row per state: what ls, tree and filters read, stamped with its manifest
file's size and mtime) and ``summaries`` (what study tables read). Pure functions: no SQLite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..summary import state_summary
from .manifests import canonical_text

LISTING_COLUMNS = ("hash", "stamp", "parent", "depth", "recipe", "label", "status", "tags", "params", "headline",
                   "headline3", "sparsity", "error", "finished", "seconds")


def file_stamp(stat: os.stat_result) -> str:
    """What says a file is unchanged since it was read: its size and modification time (ns)."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def listing_row(m: dict, stamp: str) -> dict:
    """The short row of a verified manifest that listings, trees and filters need (no tensors,
    tables or curves): what the listing table of the index holds, one per state."""
    from ...headline import short_headline

    metrics = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else None
    try:
        head, head3 = (short_headline(test), short_headline(test, 3)) if test else (None, None)
    except (KeyError, TypeError, ValueError):
        head = head3 = None
    fidelity = metrics.get("fidelity") if isinstance(metrics.get("fidelity"), dict) else {}
    auc = fidelity.get("summary", {}).get("auc") if isinstance(fidelity.get("summary"), dict) else None
    if head is None and isinstance(auc, (int, float)):  # a generator: its two-sample AUC (docs/hep.md)
        head, head3 = f"c2st {auc:.4f}", f"c2st {auc:.3f}"
    sparsity = metrics.get("sparsity")
    return {"hash": m["hash"], "stamp": stamp, "parent": m.get("parent"), "depth": m.get("depth", 0),
            "recipe": m["recipe"]["type"], "label": m["recipe"].get("label", m["recipe"]["type"]),
            "status": m.get("status"), "tags": list(m.get("tags", [])), "params": m["recipe"]["params"],
            "headline": head, "headline3": head3,
            "sparsity": float(sparsity) if isinstance(sparsity, (int, float)) else None,
            "error": (m.get("error") or {}).get("message"),
            "finished": (m.get("timings") or {}).get("finished"), "seconds": (m.get("timings") or {}).get("seconds")}


@dataclass(frozen=True)
class IndexRows:
    """A manifest's rows for the index, encoded; the listing row's stamp (position 1) is filled in
    when the manifest file is in place."""

    row: tuple
    short: tuple
    summary: str


def index_rows(m: dict, metrics_json: str | None = None) -> IndexRows:
    """``metrics_json``: the canonical JSON of ``m["metrics"]``, when the caller has it already."""
    timings = m.get("timings") or {}
    if metrics_json is None:
        metrics_json = canonical_text(m.get("metrics"))
    row = (m["hash"], m.get("parent"), m.get("depth", 0), m["recipe"]["type"], m["recipe"]["version"],
           m.get("status"), json.dumps(m.get("tags", [])), json.dumps(m["recipe"]["params"]),
           metrics_json, timings.get("seconds"), timings.get("finished"))
    return IndexRows(row, listing_values(listing_row(m, "")), json.dumps(state_summary(m), allow_nan=True))


class ListingRow(dict):
    """A listing row read from the index: ``tags`` and ``params`` are parsed from their JSON when
    first used (a listing of 100,000 rows that filters on neither parses neither)."""

    def __missing__(self, key):
        if key in ("tags", "params"):
            value = self[key] = json.loads(self[f"{key}_json"])
            return value
        raise KeyError(key)


STATES_COLUMNS = ("hash", "parent", "depth", "recipe", "version", "status", "tags", "params", "metrics", "seconds",
                  "finished")
STATES_TABLE = ("CREATE TABLE IF NOT EXISTS states (hash TEXT PRIMARY KEY, parent TEXT, depth INTEGER, "
                "recipe TEXT, version INTEGER, status TEXT, tags TEXT, params TEXT, metrics TEXT, "
                "seconds REAL, finished REAL)")
LISTING_TABLE = f"CREATE TABLE IF NOT EXISTS listing ({', '.join(LISTING_COLUMNS)}, PRIMARY KEY (hash))"
LISTING_INSERT = f"INSERT OR REPLACE INTO listing VALUES ({','.join('?' * len(LISTING_COLUMNS))})"
SUMMARY_TABLE = "CREATE TABLE IF NOT EXISTS summaries (hash TEXT PRIMARY KEY, stamp TEXT, summary TEXT)"
SUMMARY_INSERT = "INSERT OR REPLACE INTO summaries VALUES (?,?,?)"
META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"  # the index's id and token
INDEX_TABLES = {"states": STATES_TABLE, "listing": LISTING_TABLE, "summaries": SUMMARY_TABLE, "meta": META_TABLE}
INDEX_COLUMNS = {"states": list(STATES_COLUMNS), "listing": list(LISTING_COLUMNS),
                 "summaries": ["hash", "stamp", "summary"], "meta": ["key", "value"]}
LISTING_NAMES = tuple(f"{c}_json" if c in ("tags", "params") else c for c in LISTING_COLUMNS)  # ListingRow keys


def listing_values(row: dict) -> tuple:
    return tuple(json.dumps(row[c], allow_nan=True) if c in ("tags", "params") else row[c] for c in LISTING_COLUMNS)


def expected_index_rows(m: dict, stamp: str) -> dict[str, tuple]:
    """The rows a verified manifest whose file has ``stamp`` gives in each table of the index, as
    SQLite returns them (what ``verify`` compares the index with)."""
    rows = index_rows(m)
    return {"states": rows.row, "listing": rows.short[:1] + (stamp,) + rows.short[2:],
            "summaries": (m["hash"], stamp, rows.summary)}

