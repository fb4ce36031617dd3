"""Pack files: a state's new tensors in one safetensors file under ``blobs/``, keyed by their content
hashes and named by the hash of those keys; read back never through a link, each tensor re-hashed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...caches import CACHES
from ...errors import StoreError
from ...files import publish
from ..containment import check_directory, is_hash, open_regular, pack_header
from ..publishing import Job, temp_file, write_parts
from .tensors import own_storages, read_tensor, safetensors_parts, save_file, tensor_digest

if TYPE_CHECKING:
    import torch


def pack_name(digests) -> str:
    """A pack's file name: the hash of the content hashes it holds (so a name says what is inside)."""
    return hashlib.sha256(("pack|" + ",".join(sorted(digests))).encode()).hexdigest()


class PackFiles:
    """The Store's tensor files (a part of :class:`~.core.Store`)."""

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
                    out[key] = read_tensor(fd, base, header[member], path)
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

    def _homes(self) -> dict[str, str]:
        """Where this process has seen each stored tensor (content hash → file name), so a state that
        shares its parent's tensors references them instead of writing them again. Filled by writes
        and by verified reads only; a miss merely stores a tensor twice."""
        homes = CACHES.tensor_homes.setdefault(self._root_key(), {})
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
                            save_file(own_storages(payload), tmp)
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
