"""The on-disk store: content-addressed tensor blobs, JSON manifests, SQLite index.

Layout::

    STORE/blobs/ab/<sha256>.safetensors   one tensor each, named by its content hash
    STORE/states/<hash>.json              one manifest per state (written last, atomically)
    STORE/probes/<state>/<probe>.json     results of probes (evaluations) on a state
    STORE/locks/<hash>.lock               per-state file locks (concurrent runs)
    STORE/index.sqlite                    query index, rebuildable from the manifests

A state exists iff its manifest exists with status "done". Blobs are written
before the manifest, each via a temporary file and a rename, so an interrupted
run leaves at most unreferenced blobs (``gc`` removes them) and never a
half-written state. Nothing here unpickles: tensors are safetensors, metadata
JSON; every blob is re-hashed when read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from typing import TYPE_CHECKING

from filelock import FileLock

from ..errors import PrunelabError
from ..files import publish

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


# safetensors dtype codes → torch's names, for hashing a blob without torch
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def blob_file_digest(path: Path) -> str:
    """The :func:`tensor_digest` of a one-tensor safetensors file, read straight from its bytes (no
    torch): the same sha256 over ``torch.<dtype>|[shape]|`` and the raw data."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    entry = header.get("t")
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES:
        raise ValueError("not a one-tensor blob")
    start, end = entry["data_offsets"]
    body = data[8 + size + start:8 + size + end]
    if len(body) != end - start:
        raise ValueError("truncated")
    digest = hashlib.sha256(f"torch.{_DTYPES[entry['dtype']]}|{list(entry['shape'])}|".encode())
    if body:
        digest.update(body)
    return digest.hexdigest()

# 2: manifests carry a digest of their own content (format-1 manifests, without it, are still read:
# their identity is checked, their content cannot be).
FORMAT = 2


def manifest_digest(manifest: dict) -> str:
    """sha256 of a manifest's content without its ``digest`` field (sorted keys, exact floats)."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()).hexdigest()


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


class StoreError(PrunelabError):
    """The store is damaged or does not hold what was asked for."""


def tensor_digest(tensor: "torch.Tensor") -> str:
    """sha256 over dtype, shape and raw bytes (hashed in place, no copy)."""
    import torch

    t = tensor.detach().contiguous().cpu()
    digest = hashlib.sha256(f"{t.dtype}|{list(t.shape)}|".encode())
    if t.numel():
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


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

    def put_tensor(self, tensor: "torch.Tensor") -> str:
        self._check_writable("store a tensor")
        digest = tensor_digest(tensor)
        path = self.blob_path(digest)
        if not path.exists():  # identical tensors are stored once
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=digest[:8] + ".", suffix=".tmp", dir=path.parent)
            os.close(fd)
            try:
                save_file({"t": tensor.detach().contiguous().cpu()}, tmp)
                publish(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return digest

    def get_tensor(self, digest: str) -> "torch.Tensor":
        path = self.blob_path(digest)
        if not path.is_file():
            raise StoreError(f"{path}: blob missing (referenced by a manifest)")
        try:
            tensor = load_file(str(path))["t"]
        except Exception as exc:
            raise StoreError(f"{path}: unreadable blob ({exc})") from exc
        if tensor_digest(tensor) != digest:
            raise StoreError(f"{path}: blob is corrupted (content does not match its hash)")
        return tensor

    # ------------------------------------------------------------ manifests

    def manifest_path(self, state_hash: str) -> Path:
        return self.root / "states" / f"{state_hash}.json"

    def manifest(self, state_hash: str) -> dict | None:
        """The verified manifest of a state; None when there is none; StoreError when it is damaged."""
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
        manifest.update(
            format=FORMAT, status="done", error=None, spec=snapshot.spec.to_json(), dataset=snapshot.dataset,
            iteration=snapshot.iteration, metrics=snapshot.metrics,
            weights={k: self._tensor_entry(v) for k, v in snapshot.weights.items()},
            masks={k: self._mask_entry(v) for k, v in snapshot.masks.items()},
            optimizer=self._optimizer_entry(snapshot.optimizer),
        )
        self._publish(manifest)
        return manifest

    def write_failure(self, manifest: dict, message: str, trace: str) -> dict:
        manifest = dict(manifest, format=FORMAT, status="failed", error={"message": message, "traceback": trace})
        self._publish(manifest)
        return manifest

    def _publish(self, manifest: dict) -> None:
        self._check_writable(f"write state {manifest['hash'][:10]}")
        manifest["format"] = FORMAT
        manifest["digest"] = manifest_digest(manifest)
        _atomic_write_text(self.manifest_path(manifest["hash"]), json.dumps(manifest, separators=(",", ":"), allow_nan=True))
        self._index(manifest)

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

    def _tensor_entry(self, tensor: "torch.Tensor") -> dict:
        return {"blob": self.put_tensor(tensor), "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}

    def _mask_entry(self, mask: "torch.Tensor") -> dict:
        import torch

        from ..pruning.masks import pack

        packed = torch.from_numpy(pack(mask))
        return {"blob": self.put_tensor(packed), "shape": list(mask.shape), "packed": True,
                "kept": int(mask.sum())}

    def _optimizer_entry(self, state: dict | None) -> dict | None:
        if state is None:
            return None
        import torch

        tensors, plain = {}, {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    tensors[f"{index}.{key}"] = self._tensor_entry(value)
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
        weights = {k: self.get_tensor(e["blob"]) for k, e in m["weights"].items()}
        masks = {k: unpack(self.get_tensor(e["blob"]).numpy(), e["shape"]) for k, e in m["masks"].items()}
        optimizer = None
        if m.get("optimizer") is not None:
            o = m["optimizer"]
            state: dict[int, dict] = {}
            for key, entry in o["tensors"].items():
                index, _, name = key.partition(".")
                state.setdefault(int(index), {})[name] = self.get_tensor(entry["blob"])
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
        if self.read_only:  # nothing is written, so there is nothing to serialise
            yield
            return
        with FileLock(str(self.root / "locks" / f"{key}.lock"), timeout=timeout):
            yield

    # ------------------------------------------------------------ index

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self._index_path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # the index is a rebuildable cache
        return con

    def _init_index(self) -> None:
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

    def _index(self, m: dict) -> None:
        row = (
            m["hash"], m.get("parent"), m.get("depth", 0), m["recipe"]["type"], m["recipe"]["version"],
            m.get("status"), json.dumps(m.get("tags", [])), json.dumps(m["recipe"]["params"]),
            json.dumps(m.get("metrics"), allow_nan=True), (m.get("timings") or {}).get("seconds"),
            (m.get("timings") or {}).get("finished"),
        )
        for attempt in range(5):
            try:
                with self._connect() as con:
                    con.execute("INSERT OR REPLACE INTO states VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
                return
            except sqlite3.OperationalError:
                time.sleep(0.2 * (attempt + 1))
        raise StoreError(f"{self._index_path}: index is locked; run 'prunelab verify' to rebuild it")

    def reindex(self) -> int:
        """Rebuild the SQLite index from the manifests (the source of truth)."""
        self._check_writable("rebuild the index")
        with self._connect() as con:
            con.execute("DELETE FROM states")
        count = 0
        for m in self.manifests(damaged={}):  # damaged manifests stay out of the index
            self._index(m)
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
                damaged[path] = str(exc).removeprefix(f"{path}: damaged manifest: ").split("; `prunelab")[0]

    def rows(self) -> list[dict]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM states ORDER BY depth, finished")]

    # ------------------------------------------------------------ maintenance

    def referenced_blobs(self) -> set[str]:
        refs = set()
        for m in self.manifests():  # raises on a damaged manifest: its blobs must not look unreferenced
            for group in ("weights", "masks"):
                refs.update(e["blob"] for e in (m.get(group) or {}).values())
            if m.get("optimizer"):
                refs.update(e["blob"] for e in m["optimizer"]["tensors"].values())
        return refs

    def all_blobs(self) -> dict[str, Path]:
        return {p.name.removesuffix(".safetensors"): p for p in (self.root / "blobs").glob("*/*.safetensors")}

    def gc(self, dry_run: bool = False) -> tuple[int, int]:
        """Remove blobs no manifest references (and stray temp files). Returns (files, bytes)."""
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
                files += 1
                n_bytes += tmp.stat().st_size
                if not dry_run:
                    tmp.unlink()
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
        for h, m in good.items():
            path = self.manifest_path(h)
            refs = [m.get("parent")] + [item["$state"] for v in m["recipe"]["params"].values()
                                        for item in (v if isinstance(v, list) else [v])
                                        if isinstance(item, dict) and "$state" in item]
            for ref in filter(None, refs):
                if ref not in good and ref not in damaged_hashes:
                    problems.append(Problem(h, f"{path}: refers to state {ref[:12]}, which is not in the store",
                                            (path,)))
            if m.get("status") != "done":
                continue
            entries = list((m.get("weights") or {}).values()) + list((m.get("masks") or {}).values())
            if m.get("optimizer"):
                entries += list(m["optimizer"]["tensors"].values())
            for entry in entries:
                digest = entry.get("blob") if isinstance(entry, dict) else None
                if not isinstance(digest, str):
                    problems.append(Problem(h, f"{path}: a tensor entry has no blob digest", (path,)))
                    continue
                if digest not in checked:
                    checked[digest] = self._check_blob(digest)
                if checked[digest] is not None:
                    blob = self.blob_path(digest)
                    problems.append(Problem(h, f"state {h[:12]}: {checked[digest]}",
                                            (path, blob) if blob.exists() else (path,)))
        return sorted(problems, key=lambda p: p.message)

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

