"""Parsers for the on-disk formats of the download-backed datasets.

Only binary formats are read: IDX (MNIST family) and CIFAR-10's *binary*
version. CIFAR's Python version is a pickle and is never loaded.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import tarfile
from pathlib import Path

import numpy as np

from ..errors import PrunelabError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain, or compressed with gzip, xz or bzip2) into a numpy array."""
    from .download import open_maybe_compressed

    try:
        with open_maybe_compressed(Path(path)) as fh:
            raw = fh.read()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise PrunelabError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise PrunelabError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise PrunelabError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise PrunelabError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise PrunelabError(
            f"{path}: IDX payload is {len(raw) - header_end} bytes, header {shape} says {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).copy()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as gzip-compressed IDX (used to make test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_MEMBERS = ("cifar-10-batches-bin/test_batch.bin",)


def read_cifar10_binary(archive: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read CIFAR-10's binary tarball without extracting it.

    Each record is one label byte followed by 3072 pixel bytes (R, G, B planes
    of 32x32). Returns (x_train, y_train, x_test, y_test) with x as uint8
    (N, 3, 32, 32).
    """

    def read_members(tar: tarfile.TarFile, names: tuple[str, ...]):
        chunks = []
        for name in names:
            try:
                member = tar.getmember(name)
            except KeyError as exc:
                raise PrunelabError(f"{archive}: missing member {name!r}") from exc
            data = tar.extractfile(member).read()
            if len(data) % CIFAR10_RECORD:
                raise PrunelabError(f"{archive}:{name}: size {len(data)} is not a multiple of {CIFAR10_RECORD}")
            chunks.append(np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD))
        records = np.concatenate(chunks)
        return records[:, 1:].reshape(-1, 3, 32, 32).copy(), records[:, 0].astype(np.int64)

    try:
        with tarfile.open(archive, "r:gz") as tar:
            x_train, y_train = read_members(tar, CIFAR10_TRAIN_MEMBERS)
            x_test, y_test = read_members(tar, CIFAR10_TEST_MEMBERS)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PrunelabError(f"{archive}: cannot read CIFAR-10 archive ({exc})") from exc
    return x_train, y_train, x_test, y_test
