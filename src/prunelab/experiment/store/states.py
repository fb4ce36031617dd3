"""States on disk: a snapshot written as its tensors (packs) and then its manifest, atomically, with
the manifest's digest; read back verified; labels added later; deferred publishing (the fsyncs and
renames in a thread while the next state computes, see :mod:`..publishing`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ...caches import CACHES
from ...errors import PrunelabError, StoreError
from ..containment import UnsafeFile, is_hash, read_json
from ..publishing import Job, Publisher
from .manifests import FORMAT, canonical_text, damage_reason, json_key, manifest_problem, tensor_entries
from .records import atomic_write_text
from .schema import index_rows
from .tensors import pack_mask, remembered, tensor_digest

if TYPE_CHECKING:
    import torch

    from ..snapshot import Snapshot

# (store root, thread) → its deferred publishing: the live state of writes under way, not a cache
# (prunelab.caches), so never cleared from outside
_PUBLISHERS: dict[tuple[str, int], Publisher] = {}


class StateFiles:
    """The Store's manifests and the snapshots they describe (a part of :class:`~.core.Store`)."""

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
        parts = {key: canonical_text(value) for key, value in manifest.items()}
        body = "{" + ",".join(f"{json_key(key)}:{parts[key]}" for key in sorted(parts)) + "}"
        manifest["digest"] = hashlib.sha256(body.encode()).hexdigest()
        text = body[:-1] + f',"digest":"{manifest["digest"]}"}}'
        path = self.manifest_path(manifest["hash"])
        publisher = self._publisher()
        if publisher is None:
            atomic_write_text(path, text)
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
        packed, kept = remembered(CACHES.packed_masks, mask, pack_mask)
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

        from ...pruning.masks import unpack
        from ..snapshot import ModelSpec, Snapshot

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
                damaged[path] = damage_reason(path, exc)
