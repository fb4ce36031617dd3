"""What a store reads from disk stays inside it and costs a bounded amount.

A store may come from anyone (a paper's artifact, a cluster's scratch space), so every name it
holds is checked before it becomes a path, no symbolic link inside it is followed, only regular
files are opened (a FIFO would block a reader for ever), and JSON and safetensors headers are
parsed under limits on size and nesting. Everything here raises :class:`UnsafeFile` (a
``StoreError``: one line, exit status 2) naming the file and what is wrong with it.

The store's root may itself be a symbolic link (a user's choice of where a store lives); what is
below it may not: prunelab never creates a link, so one found there was put there by someone else.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

from ..errors import StoreError

# A manifest is a few kB to a few hundred kB (a training curve, a confusion matrix); a study record
# grows with the study (1,000 points: ~0.3 MB). The limits leave room for 100x that.
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
# A pack's header holds ~150 bytes a tensor; 16 MiB is ~100,000 tensors, far beyond any model's state.
MAX_HEADER_BYTES = 16 * 2**20
MAX_TENSORS = 200_000
MAX_DIMS = 8

# The entries prunelab makes at a store's top level, and what each must be.
TOP_DIRECTORIES = ("blobs", "states", "probes", "locks", "documents", "quarantine")
INDEX_FILES = ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "index.sqlite-journal")

_HEX = frozenset("0123456789abcdef")

# safetensors dtype codes → (torch name, bytes per element)
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
          "BOOL": ("bool", 1)}
TORCH_DTYPE_NAMES = frozenset(name for name, _ in DTYPES.values())


class UnsafeFile(StoreError):
    """A file of a store that prunelab refuses to read: outside the store, a link, not a regular
    file, too large, or malformed beyond what a writer of prunelab could have produced."""


def is_hash(value) -> bool:
    """A state, tensor or pack name: 64 lower-case hexadecimal characters, nothing else."""
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def is_link_or_special(path: str | Path) -> str | None:
    """Why ``path`` is not something prunelab may follow or read ("a symbolic link", "a FIFO", …),
    or None for a regular file, a directory or nothing at all."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return _special(mode)


def _special(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def check_directory(path: Path) -> None:
    """``path`` is a real directory (not a link to one) or does not exist."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        why = _special(mode) or "a file"
        raise UnsafeFile(f"{path}: is {why}, not a folder; prunelab never makes one there (`prunelab verify "
                         "--repair` moves it aside)")


def open_regular(path: str | Path) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a link, refusing anything but a regular file:
    (descriptor, its stat). FileNotFoundError passes through (a missing file is not an attack)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = is_link_or_special(path) or (exc.strerror or str(exc))
        raise UnsafeFile(f"{path}: cannot be read ({why})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: is {_special(st.st_mode) or 'a folder'}, not a file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The content of the regular file ``path``, refused when larger than ``limit`` bytes."""
    fd, st = open_regular(path)
    try:
        if st.st_size > limit:
            raise UnsafeFile(f"{path}: {st.st_size:,} bytes, more than the {limit:,} a prunelab file may have")
        chunks, left = [], st.st_size + 1  # one byte more: a file that grew since its stat is refused
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnsafeFile(f"{path}: more than the {limit:,} bytes a prunelab file may have")
        return data
    finally:
        os.close(fd)


def parse_json(data: bytes | str, where: str | Path, depth: int = MAX_JSON_DEPTH):
    """``json.loads`` with a bound on nesting, checked on the text before parsing (a manifest nested
    100,000 levels deep made every reading command die of a RecursionError, and one nested a few
    hundred levels would pass json and break the code that walks it); a malformed text raises
    ValueError, as json does."""
    raw = data.encode() if isinstance(data, str) else data
    if text_depth(raw) > depth:
        raise ValueError(f"nested more than {depth} levels deep")
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"nested more than {depth} levels deep") from None
    if _LONG_DIGITS.search(raw) or _SURROGATE.search(raw):  # rare: then every value is looked at
        _check_values(value)
    return value


# What JSON allows and no reader of a store can use: integers beyond 64 bits (10**400 made float()
# and SQLite raise OverflowError in every listing) and lone UTF-16 surrogates (printing one raises
# UnicodeEncodeError). Searched for in the text first, so that ordinary files cost one regex scan.
_LONG_DIGITS = re.compile(rb"\d{20}")  # 19 digits: every state's 63-bit seed; 2**64 has 20
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_INT64 = 2**63 - 1


def _check_values(value) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > _INT64:
            raise ValueError("an integer beyond 64 bits")
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string with a lone surrogate (not text)") from None


_NOT_BRACKETS = bytes(i for i in range(256) if i not in b"[]{}")


def text_depth(data: bytes) -> int:
    """How deeply brackets nest in a JSON text, outside its strings (C-speed byte operations and a
    loop over the closing brackets, so it costs less than parsing the text does)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot nest deeper than it has brackets
    bare = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes and quotes: not delimiters
    outside = b"".join(bare.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS).replace(b"[", b"{").replace(b"]", b"}")
    deepest = level = 0
    for opened in brackets.split(b"}"):
        level += len(opened)
        if level > deepest:
            deepest = level
        level -= 1
    return deepest


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES):
    """A JSON file of a store, read under the limits; UnsafeFile for a link or special file,
    ValueError for malformed content, FileNotFoundError when it is not there."""
    data = read_bytes(path, limit)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_json(data, path)


def pack_header(fd: int, size: int, where: str | Path) -> tuple[int, dict[str, tuple[str, tuple, int, int]]]:
    """Parse and check a safetensors file's header: (where its data starts, key → (dtype code,
    shape, start, end) with offsets into the data).

    Checked as safetensors itself checks before it loads, and bounded before anything large is
    read: the header's length, JSON and nesting; every entry's dtype, shape and byte count; the
    tensors laid end to end from offset 0 with no gap or overlap, and ending exactly at the end of
    the file (bytes appended to a pack, or a pack padded to gigabytes, are refused at the cost of
    one stat). Raises ValueError naming what is wrong.
    """
    if size < 8:
        raise ValueError("shorter than a safetensors header")
    length = int.from_bytes(os.pread(fd, 8, 0), "little")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"header of {length:,} bytes (at most {MAX_HEADER_BYTES:,})")
    if 8 + length > size:
        raise ValueError("header longer than the file")
    raw = os.pread(fd, length, 8)
    if len(raw) != length:
        raise ValueError("truncated header")
    try:
        header = parse_json(raw.decode("utf-8"), where, depth=4)
    except UnicodeDecodeError:
        raise ValueError("header is not UTF-8") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise ValueError(f"{len(header):,} tensors (at most {MAX_TENSORS:,})")
    entries = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {key[:16]!r}: malformed header entry")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in DTYPES:
            raise ValueError(f"tensor {key[:16]!r}: unknown dtype {str(code)[:16]!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or \
                not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"tensor {key[:16]!r}: malformed shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) \
                or not 0 <= offsets[0] <= offsets[1]:
            raise ValueError(f"tensor {key[:16]!r}: malformed data offsets")
        if (offsets[1] - offsets[0]) != math.prod(shape) * DTYPES[code][1]:
            raise ValueError(f"tensor {key[:16]!r}: its byte count does not match its shape and dtype")
        entries[key] = (code, tuple(shape), offsets[0], offsets[1])
    position = 0
    for _, _, start, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if start != position:
            raise ValueError("tensors overlap or leave a gap between them")
        position = end
    if 8 + length + position != size:
        raise ValueError(f"the file has {size - 8 - length - position:+,} bytes beyond what its header describes"
                         if 8 + length + position < size else "truncated")
    return 8 + length, entries


def top_level_problems(root: Path) -> list[tuple[Path, str]]:
    """(path, why) for each entry of a store's top level that is not what prunelab makes there: a
    link, a special file, a file where a folder belongs, or an index file with other hard links
    (SQLite writes it in place, so writing it would change another file)."""
    found = []
    for name in TOP_DIRECTORIES + INDEX_FILES:
        path = root / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        why = _special(st.st_mode)
        if why is None and name in TOP_DIRECTORIES and not stat.S_ISDIR(st.st_mode):
            why = "a file where prunelab keeps a folder"
        elif why is None and name in INDEX_FILES and not stat.S_ISREG(st.st_mode):
            why = "a folder where prunelab keeps its index"
        elif why is None and name in INDEX_FILES and st.st_nlink > 1:
            why = "a file with other hard links (writing it would change another file)"
        if why:
            found.append((path, f"is {why}; prunelab never makes one here"))
    return found
