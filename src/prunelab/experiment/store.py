"""The on-disk store: content-addressed tensor blobs, JSON manifests, SQLite index.

Layout::

    STORE/blobs/ab/<sha256>.safetensors   tensors: a state's new tensors in one file (a pack, its
                                          tensors keyed by their content hashes, the file named by
                                          the hash of its keys); stores written before format 3
                                          hold one tensor a file, named by its content hash
    STORE/states/<hash>.json              one manifest per state (written last, atomically)
    STORE/probes/<state>/<probe>.json     results of probes (evaluations) on a state
    STORE/locks/<hash>.lock               per-state file locks (concurrent runs)
    STORE/index.sqlite                    query index, rebuildable from the manifests: the full
                                          rows (``states``) and the listing (``listing``: what ls,
                                          tree and filters read, one short row per state)

A state exists iff its manifest exists with status "done". Blobs are written
before the manifest, each via a temporary file, an fsync and a rename, so an
interrupted run leaves at most unreferenced blobs (``gc`` removes them) and never
a half-written state. Inside :meth:`Store.deferred_publishing` (how runs write)
the fsyncs and renames happen in a thread while the next state computes, in the
same order (see :mod:`.publishing`). Nothing here unpickles: tensors are safetensors, metadata
JSON; every blob is re-hashed when read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from typing import TYPE_CHECKING

from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ..errors import PrunelabError, StoreError  # noqa: F401 (StoreError: its home was here)
from ..files import disk_full, publish
from .containment import (DTYPES, INDEX_FILES, TORCH_DTYPE_NAMES, UnsafeFile, check_directory, is_hash, is_link_or_special,
                          open_regular, pack_header, read_json, top_level_problems)
from .maintenance import Problem  # noqa: F401 (re-exported: verify's findings)
from .publishing import Job, Publisher, temp_file, write_parts
from .summary import SUMMARY_KEYS, SUMMARY_VERSION, state_summary

if TYPE_CHECKING:
    import torch

    from .snapshot import Snapshot

# torch and safetensors are imported by the methods that move tensors, not at import: listing,
# querying and verifying a store never pay for them (tests/test_cli_store.py checks `ls`).


def save_file(tensors, path) -> None:
    from safetensors.torch import save_file as save

    save(tensors, path)


def load_file(path):
    from safetensors.torch import load_file as load

    return load(path)


# safetensors' dtype order (its Rust enum): a file lays tensors out by dtype, largest code first, then by name
_SAFETENSORS_RANK = {"BOOL": 0, "U8": 1, "I8": 2, "I16": 5, "U16": 6, "F16": 7, "BF16": 8, "I32": 9, "U32": 10,
                     "F32": 11, "F64": 12, "I64": 13, "U64": 14}


def _own_storages(tensors: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Contiguous CPU tensors, each over its own storage (safetensors refuses two keys over one)."""
    out, storages = {}, set()
    for key, tensor in tensors.items():
        t = tensor.detach().contiguous().cpu()
        if t.numel() and t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        if t.numel():
            storages.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def safetensors_parts(tensors: dict[str, "torch.Tensor"]) -> list | None:
    """The bytes of ``safetensors.torch.save(tensors)``, as its header followed by views of the
    tensors' own memory (no copy), to be written in order; None where this cannot promise the
    same bytes (a dtype it does not map, a big-endian machine): then safetensors writes the file.

    Why not safetensors itself: its ``save_file`` copies every tensor twice on the way to the
    file — 2.3 ms against 0.8 ms for a 0.5 MB pack on this project's machine, which at ~150 ms a
    small state was 1 % of a study. tests/test_store_files.py checks the bytes are safetensors'.
    """
    import sys

    if sys.byteorder != "little":
        return None
    codes = {}
    for key, t in tensors.items():
        code = _CODES.get(t.dtype)
        if code is None or t.device.type != "cpu":
            return None
        codes[key] = code
    header, views, offset = {}, [], 0
    for key in sorted(tensors, key=lambda k: (-_SAFETENSORS_RANK[codes[k]], k)):
        data = tensor_bytes(tensors[key])
        size = data.nbytes
        header[key] = {"dtype": codes[key], "shape": list(tensors[key].shape), "data_offsets": [offset, offset + size]}
        offset += size
        if size:
            views.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return [len(text).to_bytes(8, "little") + text, *views]




class _TorchCodes(dict):
    """torch dtype → safetensors code, made on first use (importing this module needs no torch)."""

    def get(self, dtype, default=None):
        if not self:
            import torch

            self.update({getattr(torch, name): code for code, (name, _) in DTYPES.items()})
        return super().get(dtype, default)


_CODES = _TorchCodes()


def file_tensor_digests(path: Path) -> dict[str, str]:
    """The :func:`tensor_digest` of every tensor in a safetensors file, by key, read straight from its
    bytes (no torch): the same sha256 over ``torch.<dtype>|[shape]|`` and the raw data.

    The header is checked first (:func:`~.containment.pack_header`: bounded, exact byte coverage),
    then each tensor is hashed in chunks: memory stays bounded whatever the file's size."""
    fd, st = open_regular(path)
    try:
        base, entries = pack_header(fd, st.st_size, path)
        digests = {}
        for key, (code, shape, start, end) in entries.items():
            digest = hashlib.sha256(f"torch.{DTYPES[code][0]}|{list(shape)}|".encode())
            position = start
            while position < end:
                chunk = os.pread(fd, min(end - position, 1 << 22), base + position)
                if not chunk:
                    raise ValueError("truncated")
                digest.update(chunk)
                position += len(chunk)
            digests[key] = digest.hexdigest()
        return digests
    finally:
        os.close(fd)


def blob_file_digest(path: Path) -> str:
    """The :func:`tensor_digest` of a one-tensor blob (the layout before packs), from its bytes."""
    digests = file_tensor_digests(path)
    if set(digests) != {"t"}:
        raise ValueError("not a one-tensor blob")
    return digests["t"]


def pack_name(digests) -> str:
    """A pack's file name: the hash of the content hashes it holds (so a name says what is inside)."""
    return hashlib.sha256(("pack|" + ",".join(sorted(digests))).encode()).hexdigest()

# 2: manifests carry a digest of their own content (format-1 manifests, without it, are still read:
# their identity is checked, their content cannot be).
# 3: a state's new tensors go into one pack file; a tensor entry names its pack ("pack") besides its
# own content hash ("blob"). Entries without "pack" (formats 1-2, and tensors stored by them) are
# one-tensor files. Writing one file a state instead of ~20 is what makes small states cheap: on the
# development machine creating, fsyncing and renaming a file cost 1-3 ms (docs/benchmarks/state_write.md).
FORMAT = 3


def manifest_digest(manifest: dict) -> str:
    """sha256 of a manifest's content without its ``digest`` field (sorted keys, exact floats)."""
    return hashlib.sha256(_canonical_json({k: v for k, v in manifest.items() if k != "digest"}).encode()).hexdigest()


def _canonical_json(value) -> str:
    return _CANONICAL.encode(value)


# what json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True) builds on every call
# (json.dumps makes a new encoder for any non-default argument: ~40 calls a state)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=True)


@functools.lru_cache(maxsize=256)
def _json_key(key: str) -> str:
    """A manifest's top-level key as JSON (the same twenty-odd keys in every manifest)."""
    return _CANONICAL.encode(key)


def identity_of(manifest: dict) -> str:
    """The state hash a manifest's parent, recipe, version and parameters give (what ``hash`` must be)."""
    from .hashing import canonical_json, sha256_hex

    recipe = manifest["recipe"]
    return sha256_hex(canonical_json({"parent": manifest.get("parent"), "recipe": recipe["type"],
                                      "version": recipe["version"], "params": recipe["params"]}))


def manifest_problem(path: Path, manifest) -> str | None:
    """Why a manifest read from ``path`` cannot be trusted, or None: not an object, fields missing,
    a name that is not its hash, an identity that its recipe does not give, no digest or content
    that does not match it (edited or corrupted), or a structure prunelab never writes (names that
    are not hashes, which would make paths outside the store; dtypes, shapes and counts that
    loading would choke on)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    recipe = manifest.get("recipe")
    if not isinstance(manifest.get("hash"), str) or not isinstance(recipe, dict) or \
            not isinstance(recipe.get("type"), str) or not isinstance(recipe.get("params"), dict) or \
            "version" not in recipe:
        return "fields hash/recipe missing or malformed"
    if manifest["hash"] != path.stem:
        return f"names state {manifest['hash'][:12]} but is stored as {path.stem[:12]}"
    if not is_hash(manifest["hash"]):
        return "its hash is not 64 hexadecimal characters"
    try:
        identity = identity_of(manifest)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"recipe parameters cannot be hashed ({exc})"
    if identity != manifest["hash"]:
        return "its parent, recipe and parameters do not give its hash (edited)"
    # Every manifest since store format 2 carries its digest; one without it was either written
    # before 2026-11-26 or had it removed (with its format set back), which must not be a way
    # around the check.
    if "digest" not in manifest:
        return "digest missing (a manifest without one is either older than store format 2 or edited)"
    if manifest_digest(manifest) != manifest["digest"]:
        return "content does not match its digest (edited or corrupted)"
    return structure_problem(manifest)


def structure_problem(m: dict) -> str | None:
    """What in a (digest-valid) manifest prunelab never writes and readers must not act on, or None."""
    if type(m.get("format")) is not int or not 2 <= m["format"] <= FORMAT:
        return f"format {str(m.get('format'))[:20]!r} is not one this version reads (2 to {FORMAT})"
    parent = m.get("parent")
    if parent is not None and not is_hash(parent):
        return "its parent is not a state hash"
    if type(m["recipe"]["version"]) is not int:
        return "its recipe version is not an integer"
    try:
        refs = state_refs(m["recipe"]["params"])
    except (TypeError, AttributeError):
        return "its references to other states are malformed"
    if not all(is_hash(r) for r in refs):
        return "it refers to a state by something other than a state hash"
    if m.get("status") not in ("done", "failed"):
        return f"status {str(m.get('status'))[:20]!r} is neither done nor failed"
    if not isinstance(m.get("tags", []), list) or not all(isinstance(t, str) for t in m.get("tags", [])):
        return "tags must be a list of strings"
    why = _record_problem(m)
    if why:
        return why
    if m["status"] != "done":
        if any(m.get(group) for group in ("weights", "masks", "optimizer")):
            return "a failed state holds no tensors"
        return None
    if type(m.get("iteration")) is not int or m["iteration"] < 0:
        return "its iteration is not a non-negative integer"
    if not isinstance(m.get("dataset"), str) or not isinstance(m.get("spec"), dict):
        return "dataset or model spec missing"
    groups = [("weights", m.get("weights")), ("masks", m.get("masks"))]
    optimizer = m.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("tensors"), dict) or \
                not isinstance(optimizer.get("values"), dict) or not isinstance(optimizer.get("param_groups"), list):
            return "its optimizer state is malformed"
        groups.append(("optimizer", optimizer["tensors"]))
        for key, value in list(optimizer["tensors"].items()) + list(optimizer["values"].items()):
            index, dot, name = key.partition(".")
            if not dot or not index.isdigit() or not name:
                return f"optimizer key {key[:40]!r} is not <parameter index>.<name>"
        for key, value in optimizer["values"].items():
            if isinstance(value, dict) and (set(value) != {"scalar", "dtype"} or value["dtype"] not in TORCH_DTYPE_NAMES
                                            or not isinstance(value["scalar"], (int, float, bool))):
                return f"optimizer value {key[:40]!r} is malformed"
    for group, entries in groups:
        if not isinstance(entries, dict):
            return f"its {group} are not a table of tensors"
        for key, entry in entries.items():
            why = _entry_problem(entry, mask=group == "masks")
            if why:
                return f"{group} entry {key[:40]!r}: {why}"
    return None


def _number(value) -> bool:
    """A JSON number a reader can compute with and SQLite can hold (integers within 64 bits)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (isinstance(value, int) and -2**63 <= value < 2**63)


# the numbers of an evaluation that listings, tables and reports compute with
_EVALUATION_NUMBERS = ("accuracy", "loss", "rmse", "resolution", "bias", "macro_f1", "balanced_accuracy", "roc_auc",
                       "mae", "r2", "perplexity", "bits_per_token")


def _record_problem(m: dict) -> str | None:
    """What in a manifest's bookkeeping and metrics the readers (listings, tables, reports, show)
    could not use: types and ranges prunelab never writes."""
    if type(m.get("depth", 0)) is not int or not 0 <= m.get("depth", 0) <= 10**6:
        return "its depth is not an integer in 0..1,000,000"
    if not isinstance(m["recipe"].get("label", ""), str):
        return "its recipe label is not text"
    timings = m.get("timings")
    if timings is not None and (not isinstance(timings, dict) or
                                not all(v is None or _number(v) for v in timings.values())):
        return "its timings are not a table of numbers"
    error = m.get("error")
    if error is not None and (not isinstance(error, dict) or not all(isinstance(error.get(k, ""), str)
                                                                     for k in ("message", "traceback"))):
        return "its error is not a message and a traceback"
    if m.get("torch_threads") is not None and (type(m["torch_threads"]) is not int or not 0 < m["torch_threads"] < 4096):
        return "its torch thread count is not a small positive integer"
    metrics = m.get("metrics")
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return "its metrics are not a table"
    if metrics.get("sparsity") is not None and not _number(metrics["sparsity"]):
        return "metrics.sparsity is not a number"
    for split in ("train", "validation", "test"):
        ev = metrics.get(split)
        if ev is None:
            continue
        if not isinstance(ev, dict):
            return f"metrics.{split} is not a table"
        for key in _EVALUATION_NUMBERS:
            if ev.get(key) is not None and not _number(ev[key]):
                return f"metrics.{split}.{key} is not a number"
        if not isinstance(ev.get("task", ""), str) or not isinstance(ev.get("class_names", []), list) or \
                not all(isinstance(c, str) for c in ev.get("class_names", [])):
            return f"metrics.{split}: task or class names are not text"
        for table in ("per_class", "per_bin"):
            rows = ev.get(table, [])
            if not isinstance(rows, list) or not all(
                    isinstance(r, dict) and all(v is None or isinstance(v, (int, float, str)) for v in r.values())
                    for r in rows):
                return f"metrics.{split}.{table} is not a list of rows of numbers"
        confusion = ev.get("confusion", [])
        if not isinstance(confusion, list) or not all(isinstance(r, list) and all(_number(v) for v in r)
                                                      for r in confusion):
            return f"metrics.{split}.confusion is not a table of numbers"
    curve = metrics.get("curve")
    if curve is not None and not isinstance(curve, list):
        return "metrics.curve is not a list"
    return None


def _entry_problem(entry, mask: bool) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    if not is_hash(entry.get("blob")):
        return "its blob is not a content hash (a path outside the store?)"
    if "pack" in entry and not is_hash(entry["pack"]):
        return "its pack is not a content hash (a path outside the store?)"
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
        return "malformed shape"
    if mask:
        if entry.get("packed") is not True or type(entry.get("kept")) is not int or \
                not 0 <= entry["kept"] <= math.prod(shape):
            return "malformed mask entry"
    elif entry.get("dtype") not in TORCH_DTYPE_NAMES:
        return f"unknown dtype {str(entry.get('dtype'))[:20]!r}"
    return None


def probe_identity(identity: dict) -> str:
    """The hash a probe's identity gives (what its file is named): its state, recipe, version, parameters."""
    from .hashing import canonical_json, sha256_hex

    try:
        return sha256_hex(canonical_json({key: identity.get(key) for key in ("state", "probe", "version", "params")}))
    except (TypeError, ValueError, RecursionError):
        return ""


def _damage(path: Path, exc: Exception) -> str:
    """Why a manifest is damaged, for a ``damaged`` record (path → why): the StoreError's
    message without its path and its advice."""
    return str(exc).removeprefix(f"{path}: damaged manifest: ").split("; `prunelab")[0]


def state_refs(params: dict) -> list[str]:
    """The states a recipe's parameters reference (``{"$state": hash}`` items, alone or in lists)."""
    return [item["$state"] for v in params.values() for item in (v if isinstance(v, list) else [v])
            if isinstance(item, dict) and "$state" in item]


def tensor_entries(manifest: dict) -> list:
    """Every tensor entry of a manifest: weights, masks and the optimizer state's tensors."""
    entries = list((manifest.get("weights") or {}).values()) + list((manifest.get("masks") or {}).values())
    if manifest.get("optimizer"):
        entries += list(manifest["optimizer"]["tensors"].values())
    return entries


_HOMES: dict[str, dict[str, str]] = {}  # store root → where this process saw each tensor (Store._homes)
_PUBLISHERS: dict[tuple[str, int], Publisher] = {}  # (store root, thread) → its deferred publishing


def tensor_digest(tensor: "torch.Tensor") -> str:
    """sha256 over dtype, shape and raw bytes (hashed in place, no copy).

    Remembered for the tensor object while it lives and torch's version counter says it is
    unchanged (:func:`remembered`): a state shares most of its tensors with its parent or a rewind
    target (a prune keeps the optimizer state, a rewind takes everything), and hashing them again
    was a tenth of what a small state cost besides training.
    """
    return remembered(_DIGESTS, tensor, _hash_tensor)


def _hash_tensor(tensor: "torch.Tensor") -> str:
    digest = hashlib.sha256(f"{tensor.dtype}|{list(tensor.shape)}|".encode())
    data = tensor_bytes(tensor)
    if data.nbytes:
        digest.update(data)
    return digest.hexdigest()


def tensor_bytes(tensor: "torch.Tensor") -> memoryview:
    """The raw bytes of ``tensor`` in row-major order (a view of its memory when it is a contiguous
    CPU tensor, else of a contiguous CPU copy).

    The fast way is one call into torch (``numpy()``): each call costs a few microseconds, and the
    general chain (detach, contiguous, cpu, reshape, view, numpy) for each of the ~18 tensors of a
    trained state, once to hash and once to write, was a quarter of writing it.
    """
    if not tensor.requires_grad and tensor.device.type == "cpu" and tensor.is_contiguous():
        try:
            return memoryview(tensor.numpy()).cast("B")
        except TypeError:  # a dtype NumPy lacks (bfloat16): the general way
            pass
    import torch

    return memoryview(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


def _read_tensor(fd: int, base: int, entry: tuple, path) -> "torch.Tensor":
    """One tensor of a checked safetensors header (``pack_header``), read into its own memory."""
    import torch

    code, shape, start, end = entry
    raw = torch.empty(end - start, dtype=torch.uint8)
    if end > start:
        view = memoryview(raw.numpy())
        done = 0
        while done < end - start:
            got = os.preadv(fd, [view[done:]], base + start + done)
            if got <= 0:
                raise ValueError("truncated")
            done += got
    return raw.view(getattr(torch, DTYPES[code][0])).reshape(shape)


def _pack_mask(mask: "torch.Tensor") -> tuple["torch.Tensor", int]:
    import torch

    from ..pruning.masks import pack

    return torch.from_numpy(pack(mask)), int(mask.sum())


def remembered(memo: dict, tensor: "torch.Tensor", compute):
    """``compute(tensor)``, remembered in ``memo`` for the tensor object while it lives and torch's
    version counter says it is unchanged. Writes through ``.data`` or a NumPy view bypass the
    counter: snapshots never change their tensors, and a read re-hashes what it loads from disk."""
    import torch

    key = id(tensor)
    try:
        version = tensor._version
    except RuntimeError:  # an inference-mode tensor keeps no version counter: never remembered
        version = None
    known = memo.get(key)
    if known is not None and version is not None and known[0]() is tensor and known[1] == version:
        return known[2]
    value = compute(tensor)
    if version is not None and type(tensor) in (torch.Tensor, torch.nn.Parameter):
        memo[key] = (weakref.ref(tensor, lambda _, key=key: memo.pop(key, None)), version, value)
    return value


_DIGESTS: dict[int, tuple] = {}  # id(tensor) → (weak reference, version, digest): see tensor_digest
_PACKED_MASKS: dict[int, tuple] = {}  # id(mask) → (weak reference, version, (packed mask, kept)): see _mask_entry
# Indexes this process created or checked (path, device, inode, size, mtime): opening a store per
# task of a run connected, switched to WAL and created tables each time (~0.4 ms a task).
_READY_INDEXES: set[tuple] = set()


LISTING_COLUMNS = ("hash", "stamp", "parent", "depth", "recipe", "label", "status", "tags", "params", "headline",
                   "headline3", "sparsity", "error", "finished", "seconds")


def file_stamp(stat: os.stat_result) -> str:
    """What says a file is unchanged since it was read: its size and modification time (ns)."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def listing_row(m: dict, stamp: str) -> dict:
    """The short row of a verified manifest that listings, trees and filters need (no tensors,
    tables or curves): what the listing table of the index holds, one per state."""
    from ..headline import short_headline

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
        metrics_json = _canonical_json(m.get("metrics"))
    row = (m["hash"], m.get("parent"), m.get("depth", 0), m["recipe"]["type"], m["recipe"]["version"],
           m.get("status"), json.dumps(m.get("tags", [])), json.dumps(m["recipe"]["params"]),
           metrics_json, timings.get("seconds"), timings.get("finished"))
    return IndexRows(row, _listing_values(listing_row(m, "")), json.dumps(state_summary(m), allow_nan=True))


class ListingRow(dict):
    """A listing row read from the index: ``tags`` and ``params`` are parsed from their JSON when
    first used (a listing of 100,000 rows that filters on neither parses neither)."""

    def __missing__(self, key):
        if key in ("tags", "params"):
            value = self[key] = json.loads(self[f"{key}_json"])
            return value
        raise KeyError(key)


_STATES_COLUMNS = ("hash", "parent", "depth", "recipe", "version", "status", "tags", "params", "metrics", "seconds",
                   "finished")
_STATES_TABLE = ("CREATE TABLE IF NOT EXISTS states (hash TEXT PRIMARY KEY, parent TEXT, depth INTEGER, "
                 "recipe TEXT, version INTEGER, status TEXT, tags TEXT, params TEXT, metrics TEXT, "
                 "seconds REAL, finished REAL)")
_LISTING_TABLE = f"CREATE TABLE IF NOT EXISTS listing ({', '.join(LISTING_COLUMNS)}, PRIMARY KEY (hash))"
_LISTING_INSERT = f"INSERT OR REPLACE INTO listing VALUES ({','.join('?' * len(LISTING_COLUMNS))})"
_SUMMARY_TABLE = "CREATE TABLE IF NOT EXISTS summaries (hash TEXT PRIMARY KEY, stamp TEXT, summary TEXT)"
_SUMMARY_INSERT = "INSERT OR REPLACE INTO summaries VALUES (?,?,?)"
_META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"  # the index's id and token
_INDEX_TABLES = {"states": _STATES_TABLE, "listing": _LISTING_TABLE, "summaries": _SUMMARY_TABLE, "meta": _META_TABLE}
_INDEX_COLUMNS = {"states": list(_STATES_COLUMNS), "listing": list(LISTING_COLUMNS),
                  "summaries": ["hash", "stamp", "summary"], "meta": ["key", "value"]}
_TRUSTED_INDEXES: set[tuple] = set()  # (path, device, inode) of indexes whose token this process checked
_LISTING_NAMES = tuple(f"{c}_json" if c in ("tags", "params") else c for c in LISTING_COLUMNS)  # ListingRow keys


def _listing_values(row: dict) -> tuple:
    return tuple(json.dumps(row[c], allow_nan=True) if c in ("tags", "params") else row[c] for c in LISTING_COLUMNS)


def _raise_disk_full(where: Path, exc: BaseException) -> None:
    """A full disk met by SQLite, as one line (it says "database or disk is full")."""
    if "disk is full" in str(exc) or disk_full(exc):
        raise StoreError(f"{where}: disk full ({exc}); free space and rerun — finished states are kept") from None


def expected_index_rows(m: dict, stamp: str) -> dict[str, tuple]:
    """The rows a verified manifest whose file has ``stamp`` gives in each table of the index, as
    SQLite returns them (what ``verify`` compares the index with)."""
    rows = index_rows(m)
    return {"states": rows.row, "listing": rows.short[:1] + (stamp,) + rows.short[2:],
            "summaries": (m["hash"], stamp, rows.summary)}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _Flock:
    """An exclusive ``flock`` on ``path`` (the lock filelock takes on POSIX, so processes using either
    exclude each other), without filelock's bookkeeping: taking and releasing a state's new lock cost
    1.07 ms with filelock and 0.30 ms this way on this project's machine, once or twice per state."""

    def __init__(self, path: Path, timeout: float):
        try:  # mode: as the umask allows, like filelock; never through a link planted in the store
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
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


class Store:
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

    # ------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        if not is_hash(digest):  # what a manifest names only becomes a path inside the store
            raise StoreError(f"{self.root}: {str(digest)[:80]!r} is not a blob name (64 hexadecimal characters)")
        return self.root / "blobs" / digest[:2] / f"{digest}.safetensors"

    def get_tensor(self, digest: str, pack: str | None = None) -> "torch.Tensor":
        """The tensor with content hash ``digest``, from its pack or (older stores) its own file."""
        return self._read_entries({"t": {"blob": digest, **({"pack": pack} if pack else {})}})["t"]

    def entry_path(self, entry: dict) -> Path:
        """The file that holds a manifest's tensor entry."""
        return self.blob_path(entry.get("pack") or entry["blob"])

    def _read_entries(self, entries: dict[str, dict]) -> dict[str, "torch.Tensor"]:
        """Tensors of manifest entries by key, each file opened once (never through a link), its
        header checked (:func:`~.containment.pack_header`), each tensor read straight into its
        memory and re-hashed."""
        by_file: dict[str, list[str]] = {}
        for key, entry in entries.items():
            by_file.setdefault(entry.get("pack") or entry["blob"], []).append(key)
        out = {}
        homes = self._homes()
        for name, keys in by_file.items():
            path = self.blob_path(name)
            packed = "pack" in entries[keys[0]]
            try:
                check_directory(path.parent)
                fd, st = open_regular(path)
            except FileNotFoundError:
                raise StoreError(f"{path}: blob missing (referenced by a manifest)") from None
            try:
                base, header = pack_header(fd, st.st_size, path)
                for key in keys:
                    member = entries[key]["blob"] if packed else "t"
                    if member not in header:
                        raise StoreError(f"{path}: tensor {entries[key]['blob'][:12]} missing from this pack")
                    out[key] = _read_tensor(fd, base, header[member], path)
            except StoreError:
                raise
            except (OSError, ValueError) as exc:
                raise StoreError(f"{path}: unreadable blob ({exc})") from None
            finally:
                os.close(fd)
            for key in keys:
                if tensor_digest(out[key]) != entries[key]["blob"]:
                    raise StoreError(f"{path}: blob is corrupted (content does not match its hash)")
                homes[entries[key]["blob"]] = name
        return out

    def _root_key(self) -> str:
        key = self.__dict__.get("_resolved")
        if key is None:
            key = self._resolved = str(self.root.resolve())  # once per Store, not per read or write
        return key

    def _homes(self) -> dict[str, str]:
        """Where this process has seen each stored tensor (content hash → file name), so a state that
        shares its parent's tensors references them instead of writing them again. Filled by writes
        and by verified reads only; a miss merely stores a tensor twice."""
        homes = _HOMES.setdefault(self._root_key(), {})
        if len(homes) > 500_000:
            homes.clear()
        return homes

    def _store_tensors(self, tensors: dict[str, "torch.Tensor"], job: Job | None = None) -> dict[str, str]:
        """Store tensors (content hash → tensor) not in the store yet, together in one new pack;
        returns where each one lives (content hash → file name). With ``job`` (deferred publishing)
        the pack is left in its temporary file, for the publisher to move into place."""
        self._check_writable("store tensors")
        homes, known, new = self._homes(), {}, {}
        publisher = self._publisher()

        blobs = os.path.join(self.root, "blobs")

        def on_disk(name: str) -> bool:  # or about to be: the publisher moves packs before manifests
            if publisher is not None and publisher.pack_pending(f"{name}.safetensors"):
                return True  # (asked first: the parent's pack usually is, and a stat costs more)
            return os.path.isfile(f"{blobs}/{name[:2]}/{name}.safetensors")  # what blob_path says, without pathlib

        present: dict[str, bool] = {}  # a state's shared tensors mostly sit in one or two files: stat each once
        for digest, tensor in tensors.items():
            home = homes.get(digest)
            if home is not None and home not in present:
                present[home] = on_disk(home)
            if home is not None and present[home]:  # one-tensor files of older stores too, once read
                known[digest] = home
            else:
                new[digest] = tensor
        if new:
            name = pack_name(new)
            path = self.blob_path(name)
            if not on_disk(name):
                payload = dict(sorted(new.items()))
                parts = safetensors_parts(payload)
                if parts is not None and job is not None:
                    job.packs.append((parts, path))  # the publisher's thread writes them
                    job.guard(payload.values())
                else:
                    fd, tmp = temp_file(path)
                    try:
                        if parts is None:
                            os.close(fd)
                            save_file(_own_storages(payload), tmp)
                        else:
                            write_parts(fd, parts)
                        if job is None:
                            publish(tmp, path)
                        else:
                            job.packs.append((tmp, path))
                    except BaseException:
                        Path(tmp).unlink(missing_ok=True)
                        raise
            known.update(dict.fromkeys(new, name))
        homes.update(known)
        return known

    # ------------------------------------------------------------ manifests

    def manifest_path(self, state_hash: str) -> Path:
        if not is_hash(state_hash):  # names become paths only when they are hashes
            raise StoreError(f"{self.root}: {str(state_hash)[:80]!r} is not a state hash")
        return self.root / "states" / f"{state_hash}.json"

    def manifest(self, state_hash: str) -> dict | None:
        """The verified manifest of a state; None when there is none; StoreError when it is damaged."""
        publisher = self._publisher()
        if publisher is not None:
            publisher.wait_for(state_hash)  # written by this thread, maybe not in place yet
        if not os.path.exists(os.path.join(self.root, "states", f"{state_hash}.json")):
            return None  # the usual answer while a run computes (a stat, not a failed open through pathlib)
        path = self.manifest_path(state_hash)
        try:
            m = self._read_manifest(path)
        except FileNotFoundError:
            return None
        return m

    def _read_manifest(self, path: Path) -> dict:
        try:
            m = read_json(path)
        except FileNotFoundError:
            raise
        except (OSError, StoreError, ValueError) as exc:
            why = str(exc).removeprefix(f"{path}: ")
            why = why if isinstance(exc, UnsafeFile) else f"not valid JSON ({why})"
            raise StoreError(f"{path}: damaged manifest: {why}; `prunelab verify --repair` "
                             "moves it aside and the next run recomputes the state") from None
        problem = manifest_problem(path, m)
        if problem:
            raise StoreError(f"{path}: damaged manifest: {problem}; `prunelab verify --repair` moves it aside "
                             "and the next run recomputes the state")
        return m

    def is_done(self, state_hash: str) -> bool:
        m = self.manifest(state_hash)
        return m is not None and m.get("status") == "done"

    def write_state(self, manifest: dict, snapshot: "Snapshot") -> dict:
        """Store a snapshot's tensors, then its manifest (atomically). Returns the manifest."""
        manifest = dict(manifest)
        pending: dict[str, "torch.Tensor"] = {}

        def put(tensor: "torch.Tensor") -> str:
            digest = tensor_digest(tensor)
            pending.setdefault(digest, tensor)
            return digest

        manifest.update(
            format=FORMAT, status="done", error=None, spec=snapshot.spec.to_json(), dataset=snapshot.dataset,
            iteration=snapshot.iteration, metrics=snapshot.metrics,
            weights={k: self._tensor_entry(v, put) for k, v in snapshot.weights.items()},
            masks={k: self._mask_entry(v, put) for k, v in snapshot.masks.items()},
            optimizer=self._optimizer_entry(snapshot.optimizer, put),
        )
        job = None if self._publisher() is None else Job(manifest["hash"])
        homes = self._store_tensors(pending, job)  # one file for the state's new tensors, before the manifest
        for entry in tensor_entries(manifest):
            if homes[entry["blob"]] != entry["blob"]:
                entry["pack"] = homes[entry["blob"]]
        self._publish(manifest, job)
        return manifest

    def write_failure(self, manifest: dict, message: str, trace: str) -> dict:
        manifest = dict(manifest, format=FORMAT, status="failed", error={"message": message, "traceback": trace})
        self._publish(manifest)
        return manifest

    def _publish(self, manifest: dict, job: Job | None = None) -> None:
        self._check_writable(f"write state {manifest['hash'][:10]}")
        manifest["format"] = FORMAT
        manifest.pop("digest", None)
        # encoded once: hashed, then written with its digest added; its metrics go to the index as they are
        parts = {key: _canonical_json(value) for key, value in manifest.items()}
        body = "{" + ",".join(f"{_json_key(key)}:{parts[key]}" for key in sorted(parts)) + "}"
        manifest["digest"] = hashlib.sha256(body.encode()).hexdigest()
        text = body[:-1] + f',"digest":"{manifest["digest"]}"}}'
        path = self.manifest_path(manifest["hash"])
        publisher = self._publisher()
        if publisher is None:
            _atomic_write_text(path, text)
            self._insert_rows([index_rows(manifest, parts.get("metrics"))])
            return
        job = job or Job(manifest["hash"])
        # encoded here: the publisher's thread holds the GIL as little as it can
        job.rows = index_rows(manifest, parts.get("metrics"))
        job.manifest_file = ([text.encode()], path)  # the publisher's thread writes it
        publisher.submit(job)

    # ------------------------------------------------------------ deferred publishing

    def _publisher(self) -> Publisher | None:
        if not _PUBLISHERS:
            return None
        return _PUBLISHERS.get((self._root_key(), threading.get_ident()))

    @contextmanager
    def deferred_publishing(self) -> Iterator[None]:
        """Within it, this thread's writes to this store return once the state's files are written;
        a thread fsyncs them and moves them into place while the next state computes (see
        :mod:`.publishing`). Reads wait for what they need; leaving waits for everything and raises
        the first error. Nested uses share the outermost one."""
        key = (self._root_key(), threading.get_ident())
        if self.read_only or key in _PUBLISHERS:
            yield
            return
        publisher = _PUBLISHERS[key] = Publisher(self.root, self._insert_rows)
        try:
            yield
        except BaseException:
            del _PUBLISHERS[key]
            publisher.close(quiet=True)  # what finished is kept; the error that stopped the run is the news
            raise
        del _PUBLISHERS[key]
        publisher.close()

    def wait_published(self) -> None:
        """Return once this thread's deferred writes to this store are in place (at once outside
        :meth:`deferred_publishing`): what another process reads from here on includes them."""
        publisher = self._publisher()
        if publisher is not None:
            publisher.flush()

    def add_tags(self, state_hash: str, tags: set[str], *, locked: bool = False) -> None:
        """Labels are not identity: they can be added to a finished state (not to a read-only store,
        where they are left as they are)."""
        if self.read_only:
            return
        if not locked:
            m = self.manifest(state_hash)
            if m is None or set(tags) <= set(m.get("tags", [])):  # the usual case of a rerun: nothing to write
                return
            with self.lock(state_hash):
                return self.add_tags(state_hash, tags, locked=True)
        m = self.manifest(state_hash)
        if m is None or set(tags) <= set(m.get("tags", [])):
            return
        m["tags"] = sorted(set(m.get("tags", [])) | set(tags))
        self._publish(m)

    @staticmethod
    def _tensor_entry(tensor: "torch.Tensor", put) -> dict:
        return {"blob": put(tensor), "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}

    @staticmethod
    def _mask_entry(mask: "torch.Tensor", put) -> dict:
        # remembered for the mask object: a state that keeps its parent's masks (a training, a
        # rewind) packs and hashes nothing (see Snapshot.capture)
        packed, kept = remembered(_PACKED_MASKS, mask, _pack_mask)
        return {"blob": put(packed), "shape": list(mask.shape), "packed": True, "kept": kept}

    def _optimizer_entry(self, state: dict | None, put) -> dict | None:
        if state is None:
            return None
        import torch

        tensors, plain = {}, {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    tensors[f"{index}.{key}"] = self._tensor_entry(value, put)
                elif isinstance(value, torch.Tensor):  # scalars (Adam's step) live in the JSON
                    plain[f"{index}.{key}"] = {"scalar": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
                else:
                    plain[f"{index}.{key}"] = value
        return {"tensors": tensors, "values": plain, "param_groups": state["param_groups"]}

    # ------------------------------------------------------------ loading

    def load(self, state_hash: str) -> "Snapshot":
        m = self.manifest(state_hash)
        if m is None:
            raise StoreError(f"{self.root}: no state {state_hash}")
        if m.get("status") != "done":
            raise StoreError(f"state {state_hash[:12]} did not finish ({m.get('status')}): {(m.get('error') or {}).get('message')}")
        try:
            return self._snapshot(m)
        except (KeyError, TypeError, ValueError, AttributeError, PrunelabError) as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.manifest_path(state_hash)}: cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None

    def _snapshot(self, m: dict) -> "Snapshot":
        import torch

        from ..pruning.masks import unpack
        from .snapshot import ModelSpec, Snapshot

        o = m.get("optimizer")
        tensors = self._read_entries({**{("w", k): e for k, e in m["weights"].items()},
                                      **{("m", k): e for k, e in m["masks"].items()},
                                      **{("o", k): e for k, e in (o["tensors"] if o else {}).items()}})
        weights = {k: tensors["w", k] for k in m["weights"]}
        masks = {k: unpack(tensors["m", k].numpy(), e["shape"]) for k, e in m["masks"].items()}
        optimizer = None
        if o is not None:
            state: dict[int, dict] = {}
            for key in o["tensors"]:
                index, _, name = key.partition(".")
                state.setdefault(int(index), {})[name] = tensors["o", key]
            for key, value in o["values"].items():
                index, _, name = key.partition(".")
                if isinstance(value, dict) and "scalar" in value:
                    value = torch.tensor(value["scalar"], dtype=getattr(torch, value["dtype"]))
                state.setdefault(int(index), {})[name] = value
            optimizer = {"state": state, "param_groups": o["param_groups"]}
        return Snapshot(ModelSpec.from_json(m["spec"]), m["dataset"], weights, masks, optimizer,
                        int(m["iteration"]), m.get("metrics") or {})

    # ------------------------------------------------------------ probes

    def probe_path(self, state_hash: str, probe_hash: str) -> Path:
        if not (is_hash(state_hash) and is_hash(probe_hash)):
            raise StoreError(f"{self.root}: probe names must be hashes, got {state_hash[:80]!r}/{probe_hash[:80]!r}")
        return self.root / "probes" / state_hash / f"{probe_hash}.json"

    def probe(self, state_hash: str, probe_hash: str) -> dict | None:
        """A probe's verified record; None when there is none; StoreError when it is damaged."""
        try:
            return self.read_probe(self.probe_path(state_hash, probe_hash))
        except FileNotFoundError:
            return None

    def read_probe(self, path: Path) -> dict:
        """The probe record at ``path``, checked: a JSON object under the limits, its digest, and the
        identity its file name says (the probe of the state its folder names)."""
        try:
            record = read_json(path)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: damaged probe result ({str(exc).removeprefix(f'{path}: ')})") from None
        identity = record.get("probe") if isinstance(record, dict) else None
        if not isinstance(identity, dict) or "digest" not in record:
            why = "no digest or identity (written before 2026-12-06, or edited)"
        elif record["digest"] != manifest_digest(record):
            why = "content does not match its digest (edited or corrupted)"
        elif identity.get("state") != path.parent.name or probe_identity(identity) != path.stem:
            why = "its identity does not give its name (edited)"
        else:
            return record
        raise StoreError(f"{path}: damaged probe result: {why}; the next run measures it again")

    def write_probe(self, state_hash: str, probe_hash: str, record: dict) -> None:
        self._check_writable(f"write a probe of {state_hash[:10]}")
        record = {k: v for k, v in record.items() if k != "digest"}
        record["digest"] = manifest_digest(record)
        _atomic_write_text(self.probe_path(state_hash, probe_hash), json.dumps(record, indent=1, allow_nan=True))

    def probes(self, state_hash: str, damaged: dict | None = None) -> list[dict]:
        """The verified probe records of a state; a damaged one is left out and recorded in
        ``damaged`` (path → why) when given, else it raises StoreError."""
        folder = self.root / "probes" / state_hash
        if not is_hash(state_hash) or is_link_or_special(folder) or not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.json")):
            try:
                out.append(self.read_probe(path))
            except StoreError as exc:
                if damaged is None:
                    raise
                damaged[path] = str(exc).removeprefix(f"{path}: ")
        return out

    # ------------------------------------------------------------ locking

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
        held = _Flock(path, timeout)
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

        Creating a file cost 0.18 ms of CPU on the development machine's disk, taking a lock on a
        file that exists 4 us: made beside the computation, a study's lock files stop costing its
        states anything. A lock file is an empty file that stays (``lock`` creates it when missing),
        so making one early, or for a state that then is not run, changes nothing."""
        if self.read_only or fcntl is None or not keys:
            yield
            return
        stop = threading.Event()
        folder, mode = self.root / "locks", 0o666  # as _Flock: the umask decides

        def create() -> None:
            for key in keys:
                if stop.is_set():
                    return
                try:
                    os.close(os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | _NOFOLLOW, mode))
                except OSError:  # the store moved or went: lock() says so when it matters
                    return

        thread = threading.Thread(target=create, name="prunelab-lock-files", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # ------------------------------------------------------------ index

    def _connect(self) -> sqlite3.Connection:
        """A connection to the index for writing. The file is made here when missing, so that it
        follows the umask like every other file (SQLite makes it 0644, and its -wal and -shm files
        copy that mode): under umask 002 a second member of the group can run the study."""
        if not self.index_usable:
            raise UnsafeFile(f"{self._index_path}: not a plain file of this store; `prunelab verify --repair` moves "
                             "it aside")
        try:
            os.close(os.open(self._index_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666))
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
        that writes (opening one cost ~0.7 ms a state); a new one when the index file was replaced."""
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
        if key is not None and key in _READY_INDEXES:  # made or checked by this process, unchanged since
            return
        self._make_index()
        key = self._index_key()
        if key is not None:
            if len(_READY_INDEXES) > 1024:
                _READY_INDEXES.clear()
            _READY_INDEXES.add(key)

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
        from . import index_trust

        with self._connect() as con:
            for table, create in _INDEX_TABLES.items():
                con.execute(create)
                columns = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
                if columns != _INDEX_COLUMNS[table]:  # another program's table, or a future version's
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
        return {table: list(columns) for table, columns in _INDEX_COLUMNS.items()}

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
                           for table, columns in _INDEX_COLUMNS.items())
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
        _READY_INDEXES.clear()
        _TRUSTED_INDEXES.clear()
        from ..files import fsync_path

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
                    con.executemany(_LISTING_INSERT, shorts)
                    con.executemany(_SUMMARY_INSERT, summaries)  # the table: made when the store was opened
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
        from . import index_trust

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
            con.executemany(_LISTING_INSERT, shorts)
            con.executemany(_SUMMARY_INSERT, summaries)
        return len(rows)

    # ------------------------------------------------------------ documents (JSON data beside the states)

    def document_path(self, name: str) -> Path:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") \
                or "\0" in name:
            raise StoreError(f"document name {name!r} must be a plain file name")
        return self.root / "documents" / f"{name}.json"

    def write_document(self, name: str, payload: dict) -> None:
        """Write ``payload`` as documents/NAME.json (atomically) with the digest of its content; an
        identical file is left untouched, so a no-op rerun writes nothing."""
        path = self.document_path(name)
        payload = {k: v for k, v in payload.items() if k != "digest"}
        text = json.dumps({**payload, "digest": manifest_digest(payload)}, indent=1, sort_keys=True)
        try:
            if not is_link_or_special(path) and path.read_text() == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        self._check_writable(f"write {path.name}")
        _atomic_write_text(path, text)

    def read_document(self, path: Path) -> dict:
        """The document at ``path`` without its digest, checked: a JSON object under the limits whose
        content matches its digest (a study record decides which state plays which role, so an edit
        that swaps two roles would flip the sign of a comparison)."""
        try:
            payload = read_json(path)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable document ({str(exc).removeprefix(f'{path}: ')})") from None
        if not isinstance(payload, dict):
            raise StoreError(f"{path}: a document must be a JSON object")
        if "digest" not in payload:
            raise StoreError(f"{path}: damaged document: no digest (written before 2026-12-06, or edited); rerunning "
                             "the study's spec writes it again")
        if payload["digest"] != manifest_digest(payload):
            raise StoreError(f"{path}: damaged document: content does not match its digest (edited or corrupted); "
                             "rerunning the study's spec writes it again")
        return {k: v for k, v in payload.items() if k != "digest"}

    def documents(self) -> dict[str, dict]:
        """Every document by name, checked (:meth:`read_document`); a damaged one is an error naming the file."""
        folder = self.root / "documents"
        if is_link_or_special(folder):
            raise UnsafeFile(f"{folder}: is {is_link_or_special(folder)}; prunelab never makes one here")
        if not folder.is_dir():
            return {}
        return {path.stem: self.read_document(path) for path in sorted(folder.glob("*.json"))}

    def manifests(self, damaged: dict | None = None) -> Iterator[dict]:
        """Every verified manifest. A damaged one is left out and recorded in ``damaged`` (path → why)
        when given, else it raises StoreError: one bad file never makes a whole store unreadable."""
        if "states" in self.unusable:
            return  # a link or special file: verify reports it, nothing is read through it
        for path in sorted((self.root / "states").glob("*.json")):
            try:
                yield self._read_manifest(path)
            except FileNotFoundError:  # removed meanwhile (verify --repair in another process)
                continue
            except StoreError as exc:
                if damaged is None:
                    raise
                damaged[path] = _damage(path, exc)

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
            rows = [ListingRow(zip(_LISTING_NAMES, values))
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
                    damaged[path] = _damage(path, exc)
                continue
            out[state_hash] = state_summary(m)
            fresh.append((state_hash, stamp, json.dumps(out[state_hash], allow_nan=True)))
        if fresh and self.cache_writable:
            try:  # a cache: when it cannot be written now, these manifests are read again next time
                with self._connect() as con:
                    con.execute(_SUMMARY_TABLE)
                    con.executemany(_SUMMARY_INSERT, fresh)
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
                damaged[path] = _damage(path, exc)
                continue
            fresh[state_hash] = listing_row(m, stamp)
        current = files if len(fresh) == len(stale) else {
            h: st for h, st in files.items() if h in fresh or stamps.get(h) == st}  # damaged or vanished: left out
        gone = [h for h in stamps if h not in current] if len(stamps) + len(fresh) != len(current) else []
        if (fresh or gone) and self.cache_writable:
            try:  # a cache: when it cannot be written now, the next listing reads those manifests again
                with self._connect() as con:  # an index from before listings existed gets the table now
                    con.execute(_LISTING_TABLE)
                    con.executemany(_LISTING_INSERT, [_listing_values(r) for r in fresh.values()])
                    con.executemany("DELETE FROM listing WHERE hash = ?", [(h,) for h in gone])
                    if gone:
                        con.execute(_SUMMARY_TABLE)
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

    def _index_trusted(self) -> bool:
        """Whether the index carries this user's token for this very file (:mod:`.index_trust`)."""
        from . import index_trust

        try:
            st = os.stat(self._index_path)
        except OSError:
            return False
        key = (str(self._index_path), st.st_dev, st.st_ino)
        if key in _TRUSTED_INDEXES:
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
        if len(_TRUSTED_INDEXES) > 1024:
            _TRUSTED_INDEXES.clear()
        _TRUSTED_INDEXES.add(key)
        return True

    def _select_listing(self, writable: bool) -> dict[str, dict]:
        con = self._listing_connection(writable)
        if con is None:
            return {}
        try:
            cursor = con.execute(f"SELECT {', '.join(LISTING_COLUMNS)} FROM listing")
            return {values[0]: ListingRow(zip(_LISTING_NAMES, values)) for values in cursor}
        except (sqlite3.Error, ValueError, TypeError):  # no table yet, garbage, locked: read the manifests
            return {}
        finally:
            con.close()

    def rows(self) -> list[dict]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM states ORDER BY depth, finished")]

    # ------------------------------------------------------------ maintenance (experiment/maintenance.py)

    def referenced_blobs(self) -> set[str]:
        """The packs and blobs that manifests reference; StoreError when a manifest is damaged."""
        from .maintenance import referenced_pack_names

        return referenced_pack_names(self)

    def all_blobs(self) -> dict[str, Path]:
        """Every pack or blob file by name (through real folders only)."""
        from .maintenance import stored_files

        return stored_files(self)

    def gc(self, dry_run: bool = False, on_wait=None) -> tuple[int, int]:
        """Remove blobs no manifest references and stale temporary files, never beside a run (``on_wait()``
        is called once if it has to wait for one): see :func:`~.maintenance.collect_garbage`. Returns
        (files, bytes)."""
        from .maintenance import collect_garbage

        return collect_garbage(self, dry_run, on_wait)

    def verify(self) -> list["Problem"]:
        """Every problem of the store: see :func:`~.maintenance.verify`."""
        from .maintenance import verify

        return verify(self)

    def repair(self, problems: list["Problem"]) -> tuple[Path, list[Path]]:
        """Move what ``problems`` name into quarantine and rebuild the index: see :func:`~.maintenance.repair`."""
        from .maintenance import repair

        return repair(self, problems)
