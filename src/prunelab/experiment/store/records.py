"""Small JSON records beside the states, each written atomically with the digest of its content and
checked by it when read: probe results (``probes/<state>/<probe>.json``, named by their identity)
and documents (``documents/<name>.json``: data about the states, e.g. a study's record).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ...errors import StoreError
from ...files import publish
from ..containment import UnsafeFile, is_hash, is_link_or_special, read_json
from .manifests import manifest_digest


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_identity(identity: dict) -> str:
    """The hash a probe's identity gives (what its file is named): its state, recipe, version, parameters."""
    from ..hashing import canonical_json, sha256_hex

    try:
        return sha256_hex(canonical_json({key: identity.get(key) for key in ("state", "probe", "version", "params")}))
    except (TypeError, ValueError, RecursionError):
        return ""


class RecordFiles:
    """The Store's probe results and documents (a part of :class:`~.core.Store`)."""

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
        atomic_write_text(self.probe_path(state_hash, probe_hash), json.dumps(record, indent=1, allow_nan=True))

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
        atomic_write_text(path, text)

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
