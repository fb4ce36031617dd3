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
from ..files import publish
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


# safetensors dtype codes → torch's names, for hashing a blob without torch
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class _TorchCodes(dict):
    """torch dtype → safetensors code, made on first use (importing this module needs no torch)."""

    def get(self, dtype, default=None):
        if not self:
            import torch

            self.update({getattr(torch, name): code for code, name in _DTYPES.items()})
        return super().get(dtype, default)


_CODES = _TorchCodes()


def file_tensor_digests(path: Path) -> dict[str, str]:
    """The :func:`tensor_digest` of every tensor in a safetensors file, by key, read straight from its
    bytes (no torch): the same sha256 over ``torch.<dtype>|[shape]|`` and the raw data."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    digests = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES:
            raise ValueError(f"tensor {key[:12]}: unknown dtype")
        start, end = entry["data_offsets"]
        body = data[8 + size + start:8 + size + end]
        if len(body) != end - start:
            raise ValueError("truncated")
        digest = hashlib.sha256(f"torch.{_DTYPES[entry['dtype']]}|{list(entry['shape'])}|".encode())
        if body:
            digest.update(body)
        digests[key] = digest.hexdigest()
    return digests


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
    a name that is not its hash, an identity that its recipe does not give, content that does not
    match its digest (edited or corrupted)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    recipe = manifest.get("recipe")
    if not isinstance(manifest.get("hash"), str) or not isinstance(recipe, dict) or \
            not isinstance(recipe.get("type"), str) or not isinstance(recipe.get("params"), dict) or \
            "version" not in recipe:
        return "fields hash/recipe missing or malformed"
    if manifest["hash"] != path.stem:
        return f"names state {manifest['hash'][:12]} but is stored as {path.stem[:12]}"
    try:
        identity = identity_of(manifest)
    except (TypeError, ValueError) as exc:
        return f"recipe parameters cannot be hashed ({exc})"
    if identity != manifest["hash"]:
        return "its parent, recipe and parameters do not give its hash (edited)"
    if "digest" in manifest:
        if manifest_digest(manifest) != manifest["digest"]:
            return "content does not match its digest (edited or corrupted)"
    elif manifest.get("format", 1) >= 2:
        return "digest missing"
    return None


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


# gc leaves younger temporary files alone: a run publishing beside it would lose them (a state is
# published within seconds of being written; an interrupted run's leftovers are old)
STALE_TEMPORARY_SECONDS = 3600
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


_LISTING_TABLE = f"CREATE TABLE IF NOT EXISTS listing ({', '.join(LISTING_COLUMNS)}, PRIMARY KEY (hash))"
_LISTING_INSERT = f"INSERT OR REPLACE INTO listing VALUES ({','.join('?' * len(LISTING_COLUMNS))})"
_SUMMARY_TABLE = "CREATE TABLE IF NOT EXISTS summaries (hash TEXT PRIMARY KEY, stamp TEXT, summary TEXT)"
_SUMMARY_INSERT = "INSERT OR REPLACE INTO summaries VALUES (?,?,?)"
_LISTING_NAMES = tuple(f"{c}_json" if c in ("tags", "params") else c for c in LISTING_COLUMNS)  # ListingRow keys


def _listing_values(row: dict) -> tuple:
    return tuple(json.dumps(row[c], allow_nan=True) if c in ("tags", "params") else row[c] for c in LISTING_COLUMNS)


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


class _Flock:
    """An exclusive ``flock`` on ``path`` (the lock filelock takes on POSIX, so processes using either
    exclude each other), without filelock's bookkeeping: taking and releasing a state's new lock cost
    1.07 ms with filelock and 0.30 ms this way on this project's machine, once or twice per state."""

    def __init__(self, path: Path, timeout: float):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # mode: as the umask allows, like filelock
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


@dataclass(frozen=True)
class Problem:
    """Something ``verify`` found: the state concerned, one line saying what and where, and the files
    ``verify --repair`` moves into quarantine."""

    state: str
    message: str
    files: tuple[Path, ...]


class Store:
    """A store directory. ``read_only`` (default: when the directory is not writable by this process)
    opens it without writing anything — no index, no lock files — so a store on a read-only mount, or
    another user's, can be listed, reported and verified; writing methods then raise StoreError."""

    def __init__(self, root: str | Path, *, create: bool = True, read_only: bool | None = None):
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
        self.read_only = (not os.access(self.root, os.W_OK)) if read_only is None else read_only
        self._index_path = self.root / "index.sqlite"
        # A reader (Results) opens the store read-only but may keep the index's listing cache
        # current where the directory and an index exist and are writable (see listing).
        self.cache_writable = not self.read_only
        if self.read_only:
            return
        for sub in ("blobs", "states", "probes", "locks"):
            (self.root / sub).mkdir(exist_ok=True)
        self._init_index()

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.root}: the store is read-only here; cannot {what}")

    # ------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / f"{digest}.safetensors"

    def get_tensor(self, digest: str, pack: str | None = None) -> "torch.Tensor":
        """The tensor with content hash ``digest``, from its pack or (older stores) its own file."""
        return self._read_entries({"t": {"blob": digest, **({"pack": pack} if pack else {})}})["t"]

    def entry_path(self, entry: dict) -> Path:
        """The file that holds a manifest's tensor entry."""
        return self.blob_path(entry.get("pack") or entry["blob"])

    def _read_entries(self, entries: dict[str, dict]) -> dict[str, "torch.Tensor"]:
        """Tensors of manifest entries by key, each file opened once, every tensor re-hashed."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for key, entry in entries.items():
            by_file.setdefault(entry.get("pack") or entry["blob"], []).append(key)
        out = {}
        homes = self._homes()
        for name, keys in by_file.items():
            path = self.blob_path(name)
            if not path.is_file():
                raise StoreError(f"{path}: blob missing (referenced by a manifest)")
            packed = "pack" in entries[keys[0]]
            try:
                with safe_open(str(path), framework="pt") as fh:
                    members = set(fh.keys())
                    for key in keys:
                        member = entries[key]["blob"] if packed else "t"
                        if member not in members:
                            raise StoreError(f"{path}: tensor {entries[key]['blob'][:12]} missing from this pack")
                        out[key] = fh.get_tensor(member)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"{path}: unreadable blob ({exc})") from exc
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
            m = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"{path}: damaged manifest: not valid JSON ({exc}); `prunelab verify --repair` "
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
        import torch

        from ..pruning.masks import unpack
        from .snapshot import ModelSpec, Snapshot

        m = self.manifest(state_hash)
        if m is None:
            raise StoreError(f"{self.root}: no state {state_hash}")
        if m.get("status") != "done":
            raise StoreError(f"state {state_hash[:12]} did not finish ({m.get('status')}): {(m.get('error') or {}).get('message')}")
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
        return self.root / "probes" / state_hash / f"{probe_hash}.json"

    def probe(self, state_hash: str, probe_hash: str) -> dict | None:
        try:
            return json.loads(self.probe_path(state_hash, probe_hash).read_text())
        except FileNotFoundError:
            return None

    def write_probe(self, state_hash: str, probe_hash: str, record: dict) -> None:
        self._check_writable(f"write a probe of {state_hash[:10]}")
        _atomic_write_text(self.probe_path(state_hash, probe_hash), json.dumps(record, indent=1, allow_nan=True))

    def probes(self, state_hash: str) -> list[dict]:
        folder = self.root / "probes" / state_hash
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

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
                    os.close(os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, mode))
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
        except sqlite3.OperationalError:  # locked, read-only, …: not the file's fault
            raise
        except sqlite3.DatabaseError:
            # Garbage or truncated: the index is only a cache of the manifests (the source of
            # truth), so it is moved aside — kept for a post-mortem, never deleted — and rebuilt.
            with self.lock("index-rebuild"):
                try:
                    self._create_index()  # another process may have rebuilt it meanwhile
                    return
                except sqlite3.OperationalError:
                    raise
                except sqlite3.DatabaseError:
                    pass
                aside = self._index_path.with_name(f"index.sqlite.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self._index_path, aside)
                for suffix in ("-wal", "-shm"):
                    Path(str(self._index_path) + suffix).unlink(missing_ok=True)
                self._create_index()
                self.reindex()

    def _create_index(self) -> None:
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS states (hash TEXT PRIMARY KEY, parent TEXT, depth INTEGER, "
                "recipe TEXT, version INTEGER, status TEXT, tags TEXT, params TEXT, metrics TEXT, "
                "seconds REAL, finished REAL)"
            )
            con.execute(_LISTING_TABLE)
            con.execute(_SUMMARY_TABLE)

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
        for attempt in range(5):
            try:
                with self._writer_connection() as con:
                    con.executemany("INSERT OR REPLACE INTO states VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                    con.executemany(_LISTING_INSERT, shorts)
                    con.executemany(_SUMMARY_INSERT, summaries)  # the table: made when the store was opened
                return
            except sqlite3.OperationalError:
                time.sleep(0.2 * (attempt + 1))
        raise StoreError(f"{self._index_path}: index is locked; run 'prunelab verify' to rebuild it")

    def reindex(self) -> int:
        """Rebuild the SQLite index from the manifests (the source of truth)."""
        self._check_writable("rebuild the index")
        with self._connect() as con:
            con.execute("DELETE FROM states")
            con.execute("DELETE FROM listing")
            con.execute("DELETE FROM summaries")
        count = 0
        for m in self.manifests(damaged={}):  # damaged manifests stay out of the index
            self._index([m])
            count += 1
        return count

    # ------------------------------------------------------------ documents (JSON data beside the states)

    def document_path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise StoreError(f"document name {name!r} must be a plain file name")
        return self.root / "documents" / f"{name}.json"

    def write_document(self, name: str, payload: dict) -> None:
        """Write ``payload`` as documents/NAME.json (atomically); an identical file is left untouched,
        so a no-op rerun writes nothing."""
        path = self.document_path(name)
        text = json.dumps(payload, indent=1, sort_keys=True)
        try:
            if path.read_text() == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        self._check_writable(f"write {path.name}")
        _atomic_write_text(path, text)

    def documents(self) -> dict[str, dict]:
        """Every document by name; one that is not a JSON object is an error naming the file."""
        out = {}
        for path in sorted((self.root / "documents").glob("*.json")):
            try:
                payload = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise StoreError(f"{path}: unreadable document ({exc})") from None
            if not isinstance(payload, dict):
                raise StoreError(f"{path}: a document must be a JSON object")
            out[path.stem] = payload
        return out

    def manifests(self, damaged: dict | None = None) -> Iterator[dict]:
        """Every verified manifest. A damaged one is left out and recorded in ``damaged`` (path → why)
        when given, else it raises StoreError: one bad file never makes a whole store unreadable."""
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
            except sqlite3.Error:
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
            except sqlite3.Error:
                self.cache_writable = False  # answer from the files this time
        return current, fresh

    def _listing_connection(self, writable: bool) -> sqlite3.Connection | None:
        if not self._index_path.is_file():
            return None
        try:
            if not writable:  # nothing may be written, not even SQLite's shared-memory file
                return sqlite3.connect(f"{self._index_path.resolve().as_uri()}?immutable=1", uri=True)
            return self._connect()
        except (sqlite3.Error, ValueError):
            return None

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

    # ------------------------------------------------------------ maintenance

    def referenced_blobs(self) -> set[str]:
        refs = set()
        for m in self.manifests():  # raises on a damaged manifest: its blobs must not look unreferenced
            refs.update(e.get("pack") or e["blob"] for e in tensor_entries(m))
        return refs

    def all_blobs(self) -> dict[str, Path]:
        return {p.name.removesuffix(".safetensors"): p for p in (self.root / "blobs").glob("*/*.safetensors")}

    def gc(self, dry_run: bool = False) -> tuple[int, int]:
        """Remove blobs no manifest references, and temporary files older than an hour (a younger one
        may be a running process's state on its way into place). Returns (files, bytes)."""
        self._check_writable("collect garbage")
        with self.lock("__gc__"):
            try:
                keep = self.referenced_blobs()
            except StoreError as exc:
                raise StoreError(f"{exc}; gc removes nothing while a manifest is damaged") from None
            files = n_bytes = 0
            for digest, path in self.all_blobs().items():
                if digest not in keep:
                    files += 1
                    n_bytes += path.stat().st_size
                    if not dry_run:
                        path.unlink()
            for tmp in list((self.root / "blobs").glob("*/*.tmp")) + list((self.root / "states").glob("*.tmp")):
                try:
                    stat = tmp.stat()
                except FileNotFoundError:  # published or removed meanwhile
                    continue
                if time.time() - stat.st_mtime < STALE_TEMPORARY_SECONDS:
                    continue  # a running process's state on its way into place: not garbage yet
                files += 1
                n_bytes += stat.st_size
                if not dry_run:
                    tmp.unlink(missing_ok=True)
        return files, n_bytes

    def verify(self) -> list["Problem"]:
        """Check every manifest (JSON, digest, identity, references) and re-hash every referenced blob.

        Returns one :class:`Problem` per damaged thing, with the files ``repair`` would move aside.
        """
        damaged: dict[Path, str] = {}
        good = {m["hash"]: m for m in self.manifests(damaged=damaged)}
        problems = [Problem(path.stem, f"{path}: {why}", (path,)) for path, why in damaged.items()]
        damaged_hashes = {path.stem for path in damaged}
        checked: dict[str, str | None] = {}
        packs: dict[str, tuple[str | None, set[str]]] = {}
        for h, m in good.items():
            path = self.manifest_path(h)
            refs = [m.get("parent")] + state_refs(m["recipe"]["params"])
            for ref in filter(None, refs):
                if ref not in good and ref not in damaged_hashes:
                    problems.append(Problem(h, f"{path}: refers to state {ref[:12]}, which is not in the store",
                                            (path,)))
            if m.get("status") != "done":
                continue
            for entry in tensor_entries(m):
                digest = entry.get("blob") if isinstance(entry, dict) else None
                pack = entry.get("pack") if isinstance(entry, dict) else None
                if not isinstance(digest, str) or not isinstance(pack, (str, type(None))):
                    problems.append(Problem(h, f"{path}: a tensor entry has no blob digest", (path,)))
                    continue
                if pack is not None:
                    if pack not in packs:
                        packs[pack] = self._check_pack(pack)
                    why, members = packs[pack]
                    if why is None and digest not in members:
                        why = f"{self.blob_path(pack)}: tensor {digest[:12]} missing from this pack"
                else:
                    if digest not in checked:
                        checked[digest] = self._check_blob(digest)
                    why = checked[digest]
                if why is not None:
                    blob = self.blob_path(pack or digest)
                    problems.append(Problem(h, f"state {h[:12]}: {why}", (path, blob) if blob.exists() else (path,)))
        problems += self._stale_rewinds(good)
        return sorted(problems, key=lambda p: p.message)

    def _stale_rewinds(self, good: dict[str, dict]) -> list["Problem"]:
        """Rewinds that do not hold their target's weights and optimizer state, and every state below them.

        A Rewind copies its target's tensors, so their content hashes must be the target's: checked
        from the manifests alone. Before 2026-11-27 a training changed, in place, the optimizer state
        of a parent still held in memory; a rewind computed from it in the same process then stored
        the target's *final* optimizer state (its identity is unchanged, so a rerun would reuse it).
        """
        def tensors(m: dict) -> tuple:
            o = m.get("optimizer") or {}
            return ({k: e.get("blob") for k, e in m.get("weights", {}).items()},
                    {k: e.get("blob") for k, e in o.get("tensors", {}).items()}, o.get("values"))

        stale: dict[str, str] = {}
        for h, m in good.items():
            to = (m.get("recipe", {}).get("params") or {}).get("to")
            target = good.get(to.get("$state")) if m.get("recipe", {}).get("type") == "Rewind" and isinstance(to, dict) else None
            if m.get("status") == "done" and target is not None and target.get("status") == "done" \
                    and tensors(m) != tensors(target):
                stale[h] = (f"{self.manifest_path(h)}: rewound to state {to['$state'][:12]} but holds other weights or "
                            "optimizer state than it (computed before the fix of 2026-11-27); `prunelab verify "
                            "--repair` moves it and the states below it aside and the next run recomputes them")
        if not stale:
            return []
        refs = {h: [m.get("parent")] + state_refs(m["recipe"]["params"]) for h, m in good.items()}
        grew = True
        while grew:  # until no state computed from a stale one is left unmarked (references may point deeper)
            grew = False
            for h, used in refs.items():
                bad = next((r for r in used if r in stale), None)
                if h not in stale and bad is not None:
                    stale[h] = f"{self.manifest_path(h)}: computed from state {bad[:12]}, which is stale (see that state)"
                    grew = True
        return [Problem(h, why, (self.manifest_path(h),)) for h, why in stale.items()]

    def _check_pack(self, name: str) -> tuple[str | None, set[str]]:
        """(Why a pack cannot be trusted or None, the content hashes it holds); no torch."""
        path = self.blob_path(name)
        if not path.is_file():
            return f"{path}: blob missing (referenced by a manifest)", set()
        try:
            digests = file_tensor_digests(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{path}: unreadable blob ({exc})", set()
        if any(key != digest for key, digest in digests.items()) or pack_name(digests) != name:
            return f"{path}: blob is corrupted (content does not match its hash)", set()
        return None, set(digests)

    def _check_blob(self, digest: str) -> str | None:
        """Why a blob cannot be trusted (missing, unreadable, content not its name), or None; no torch."""
        path = self.blob_path(digest)
        if not path.is_file():
            return f"{path}: blob missing (referenced by a manifest)"
        try:
            actual = blob_file_digest(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{path}: unreadable blob ({exc})"
        if actual != digest:
            return f"{path}: blob is corrupted (content does not match its hash)"
        return None

    def repair(self, problems: list["Problem"]) -> tuple[Path, list[Path]]:
        """Move every file of ``problems`` into quarantine/<time>/ (same relative path; nothing is deleted)
        and rebuild the index. The next run recomputes exactly the states whose manifests moved."""
        self._check_writable("repair")
        folder = self.root / "quarantine" / time.strftime("%Y%m%dT%H%M%S")
        moved = []
        with self.lock("__gc__"):
            for path in dict.fromkeys(p for problem in problems for p in problem.files):
                if not path.exists():
                    continue
                target = folder / path.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved.append(target)
            self.reindex()
        return folder, moved

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))

