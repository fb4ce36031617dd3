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
from pathlib import Path
from typing import Iterator

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from ..errors import PrunelabError
from ..files import publish
from ..pruning.masks import pack, unpack
from .snapshot import ModelSpec, Snapshot

FORMAT = 1


class StoreError(PrunelabError):
    """The store is damaged or does not hold what was asked for."""


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 over dtype, shape and raw bytes (hashed in place, no copy)."""
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


class Store:
    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise StoreError(f"{self.root}: no such store")
            self.root.mkdir(parents=True, exist_ok=True)  # another process may create it at the same moment
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: not a directory")
        for sub in ("blobs", "states", "probes", "locks"):
            (self.root / sub).mkdir(exist_ok=True)
        self._index_path = self.root / "index.sqlite"
        self._init_index()

    # ------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / f"{digest}.safetensors"

    def put_tensor(self, tensor: torch.Tensor) -> str:
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

    def get_tensor(self, digest: str) -> torch.Tensor:
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
        path = self.manifest_path(state_hash)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}: manifest is not valid JSON ({exc})") from exc

    def is_done(self, state_hash: str) -> bool:
        m = self.manifest(state_hash)
        return m is not None and m.get("status") == "done"

    def write_state(self, manifest: dict, snapshot: Snapshot) -> dict:
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
        _atomic_write_text(self.manifest_path(manifest["hash"]), json.dumps(manifest, separators=(",", ":"), allow_nan=True))
        self._index(manifest)

    def add_tags(self, state_hash: str, tags: set[str], *, locked: bool = False) -> None:
        """Labels are not identity: they can be added to a finished state."""
        if not locked:
            with self.lock(state_hash):
                return self.add_tags(state_hash, tags, locked=True)
        m = self.manifest(state_hash)
        if m is None or set(tags) <= set(m.get("tags", [])):
            return
        m["tags"] = sorted(set(m.get("tags", [])) | set(tags))
        self._publish(m)

    def _tensor_entry(self, tensor: torch.Tensor) -> dict:
        return {"blob": self.put_tensor(tensor), "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}

    def _mask_entry(self, mask: torch.Tensor) -> dict:
        packed = torch.from_numpy(pack(mask))
        return {"blob": self.put_tensor(packed), "shape": list(mask.shape), "packed": True,
                "kept": int(mask.sum())}

    def _optimizer_entry(self, state: dict | None) -> dict | None:
        if state is None:
            return None
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

    def load(self, state_hash: str) -> Snapshot:
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
        _atomic_write_text(self.probe_path(state_hash, probe_hash), json.dumps(record, indent=1, allow_nan=True))

    def probes(self, state_hash: str) -> list[dict]:
        folder = self.root / "probes" / state_hash
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    # ------------------------------------------------------------ locking

    @contextmanager
    def lock(self, key: str, timeout: float = -1) -> Iterator[None]:
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
        with self._connect() as con:
            con.execute("DELETE FROM states")
        count = 0
        for m in self.manifests():
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

    def manifests(self) -> Iterator[dict]:
        for path in sorted((self.root / "states").glob("*.json")):
            try:
                yield json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}: manifest is not valid JSON ({exc})") from exc

    def rows(self) -> list[dict]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM states ORDER BY depth, finished")]

    # ------------------------------------------------------------ maintenance

    def referenced_blobs(self) -> set[str]:
        refs = set()
        for m in self.manifests():
            for group in ("weights", "masks"):
                refs.update(e["blob"] for e in (m.get(group) or {}).values())
            if m.get("optimizer"):
                refs.update(e["blob"] for e in m["optimizer"]["tensors"].values())
        return refs

    def all_blobs(self) -> dict[str, Path]:
        return {p.name.removesuffix(".safetensors"): p for p in (self.root / "blobs").glob("*/*.safetensors")}

    def gc(self, dry_run: bool = False) -> tuple[int, int]:
        """Remove blobs no manifest references (and stray temp files). Returns (files, bytes)."""
        with self.lock("__gc__"):
            keep = self.referenced_blobs()
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

    def verify(self) -> list[str]:
        """Re-hash every referenced blob; returns one line per problem."""
        problems = []
        for m in self.manifests():
            entries = list((m.get("weights") or {}).values()) + list((m.get("masks") or {}).values())
            if m.get("optimizer"):
                entries += list(m["optimizer"]["tensors"].values())
            for entry in entries:
                try:
                    self.get_tensor(entry["blob"])
                except StoreError as exc:
                    problems.append(f"state {m['hash'][:12]}: {exc}")
        return sorted(set(problems))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))

