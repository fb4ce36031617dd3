"""Checksummed files: local mirror first, then the cache, then a download.

Settings (environment variables, or arguments to :class:`DataSource`):

* ``PRUNELAB_DATA`` — cache directory for downloaded files
  (default: the user cache dir, e.g. ``~/.cache/prunelab/data``);
* ``PRUNELAB_DATA_MIRROR`` — a directory holding the original files, read
  before any download (files may sit at its top level, in a folder named after
  the dataset, or in torchvision's ``<Name>/raw/`` layout).

Every file is verified against its published MD5 before it is parsed; a
mismatch raises :class:`ChecksumError` naming the file, never a silently wrong
dataset. A file may also be mirrored uncompressed or recompressed (``.xz``,
``.bz2``, or a ``.gz`` with other bytes): where the MD5 of the *uncompressed*
original is known (``RemoteFile.raw_md5``), such a copy is accepted when its
decompressed content has that MD5. Downloads go to a temporary file that is renamed into place only after
its checksum matched, so an interrupted download leaves nothing behind.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..errors import ChecksumError, DataUnavailableError
from ..files import publish

DATA_ENV = "PRUNELAB_DATA"
MIRROR_ENV = "PRUNELAB_DATA_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    md5: str
    urls: tuple[str, ...]
    raw_md5: str | None = None  # MD5 of the decompressed original (accepts uncompressed / recompressed copies)

    @property
    def stem(self) -> str:
        """The uncompressed file's name (``train-images-idx3-ubyte`` for ``…-ubyte.gz``)."""
        return self.filename[: -len(".gz")] if self.filename.endswith(".gz") else self.filename

    def alternatives(self) -> list[str]:
        """File names a copy may have: the original, then uncompressed and recompressed forms."""
        if self.raw_md5 is None:
            return [self.filename]
        names = [self.filename, self.stem, self.stem + ".xz", self.stem + ".bz2", self.stem + ".gz"]
        return list(dict.fromkeys(names))


#: Decompressors by suffix; anything else is read as it is.
OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


def open_maybe_compressed(path: Path):
    """Open ``path`` for reading bytes, decompressing ``.gz`` / ``.xz`` / ``.bz2``."""
    return OPENERS.get(Path(path).suffix, open)(path, "rb")


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_md5sum(path: Path) -> str:
    """MD5 of the decompressed content (of the bytes themselves for an uncompressed file)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open_maybe_compressed(path) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ChecksumError(f"{path}: cannot decompress ({exc}); the file is corrupt or truncated") from None
    return digest.hexdigest()


def _mismatch(path: Path, actual: str, md5: str) -> ChecksumError:
    return ChecksumError(
        f"{path}: checksum mismatch (md5 {actual}, expected {md5}); "
        "the file is corrupt or truncated — delete it and fetch it again"
    )


def verify(path: Path, md5: str) -> Path:
    actual = md5sum(path)
    if actual != md5:
        raise _mismatch(path, actual, md5)
    return path


def verify_copy(path: Path, remote: RemoteFile) -> Path:
    """Accept the original file (published MD5) or a copy whose decompressed content is the original's.

    Copies under other names are only looked for when ``raw_md5`` is known (``alternatives``)."""
    published = md5sum(path) if path.name == remote.filename else None
    if published == remote.md5:
        return path
    if remote.raw_md5 is None:
        raise _mismatch(path, published, remote.md5)
    raw = raw_md5sum(path)
    if raw == remote.raw_md5:
        return path
    expected = f"md5 {remote.raw_md5} after decompression"
    if published is not None:
        expected = f"md5 {remote.md5} as published, or {expected}"
    raise ChecksumError(
        f"{path}: checksum mismatch (decompressed md5 {raw}, expected {expected}); "
        "the file is not the original, or it is corrupt or truncated — replace it"
    )


@dataclass
class DataSource:
    """Where dataset files come from. ``None`` fields fall back to the environment."""

    data_dir: Path | None = None
    mirror: Path | None = None
    download: bool = True
    timeout: float = 60.0
    _resolved: dict = field(default_factory=dict, repr=False)

    @property
    def cache_dir(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir)
        env = os.environ.get(DATA_ENV)
        return Path(env) if env else Path(platformdirs.user_cache_dir("prunelab")) / "data"

    @property
    def mirror_dir(self) -> Path | None:
        if self.mirror is not None:
            return Path(self.mirror)
        env = os.environ.get(MIRROR_ENV)
        return Path(env) if env else None

    def mirror_candidates(self, dataset: str, folder_aliases: tuple[str, ...], filename: str) -> list[Path]:
        root = self.mirror_dir
        if root is None:
            return []
        folders = [root, root / dataset, root / dataset / "raw"]
        for alias in folder_aliases:
            folders += [root / alias, root / alias / "raw"]
        return [folder / filename for folder in folders]

    def fetch(self, dataset: str, remote: RemoteFile, folder_aliases: tuple[str, ...] = ()) -> Path:
        """Return a verified local path for ``remote``; mirror → cache → download.

        In each folder the original name is looked for first, then (when the
        uncompressed original's MD5 is known) the uncompressed and recompressed names.
        """
        names = remote.alternatives()
        for folder_candidates in zip(*(self.mirror_candidates(dataset, folder_aliases, n) for n in names)):
            for candidate in folder_candidates:
                if candidate.is_file():
                    return verify_copy(candidate, remote)
        for name in names:
            cached = self.cache_dir / dataset / name
            if cached.is_file():
                return verify_copy(cached, remote)
        cached = self.cache_dir / dataset / remote.filename
        if not self.download:
            raise self._unavailable(dataset, [remote], "downloads are disabled")
        errors = []
        for url in remote.urls:
            try:
                return self._download(url, cached, remote.md5)
            except ChecksumError:
                raise
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {exc}")
        raise self._unavailable(dataset, [remote], "; ".join(errors))

    def fetch_all(self, dataset: str, remotes: dict[str, RemoteFile], folder_aliases: tuple[str, ...] = ()) -> dict[str, Path]:
        """Fetch several files; when some are unavailable, one error names them all."""
        paths, missing, reasons = {}, [], []
        for key, remote in remotes.items():
            try:
                paths[key] = self.fetch(dataset, remote, folder_aliases)
            except DataUnavailableError as exc:
                missing.append(remote)
                reasons.append(exc.reason)
        if missing:
            raise self._unavailable(dataset, missing, reasons[0])
        return paths

    def _download(self, url: str, target: Path, md5: str) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=self.timeout) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            verify(tmp, md5)
            publish(tmp, target)
            return target
        finally:
            tmp.unlink(missing_ok=True)

    def _unavailable(self, dataset: str, files: list[RemoteFile], reason: str) -> DataUnavailableError:
        names = ", ".join(f.filename for f in files)
        mirror = self.mirror_dir
        error = DataUnavailableError(
            f"dataset {dataset!r}: cannot obtain {names} ({reason}). "
            f"Put the original files in the mirror directory ({MIRROR_ENV}="
            f"{mirror if mirror else '<unset>'}) or the cache ({DATA_ENV}={self.cache_dir / dataset}), "
            "or allow a download."
        )
        error.reason = reason
        return error
