"""Tensors as bytes and content hashes: safetensors' exact bytes without its copies, the hash of a
tensor (remembered while the tensor is unchanged), a pack file's tensors hashed or read straight
from its checked header. Knows nothing of stores.

torch and safetensors are imported by the functions that move tensors, not at import: listing,
querying and verifying a store never pay for them (tests/test_cli_store.py checks `ls`).
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from ...caches import CACHES
from ..containment import DTYPES, open_regular, pack_header

if TYPE_CHECKING:
    import torch


def save_file(tensors, path) -> None:
    from safetensors.torch import save_file as save

    save(tensors, path)


def load_file(path):
    from safetensors.torch import load_file as load

    return load(path)


# safetensors' dtype order (its Rust enum): a file lays tensors out by dtype, largest code first, then by name
_SAFETENSORS_RANK = {"BOOL": 0, "U8": 1, "I8": 2, "I16": 5, "U16": 6, "F16": 7, "BF16": 8, "I32": 9, "U32": 10,
                     "F32": 11, "F64": 12, "I64": 13, "U64": 14}


def own_storages(tensors: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
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
    file, a measurable share of what a small state costs (docs/architecture.md).
    tests/test_store_files.py checks the bytes are safetensors'.
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


def tensor_digest(tensor: "torch.Tensor") -> str:
    """sha256 over dtype, shape and raw bytes (hashed in place, no copy).

    Remembered for the tensor object while it lives and torch's version counter says it is
    unchanged (:func:`remembered`): a state shares most of its tensors with its parent or a rewind
    target (a prune keeps the optimizer state, a rewind takes everything), and hashing them again
    would be a measurable share of what a small state costs besides training (docs/architecture.md).
    """
    return remembered(CACHES.tensor_digests, tensor, _hash_tensor)


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
    trained state, once to hash and once to write, would be a large share of writing it.
    """
    if not tensor.requires_grad and tensor.device.type == "cpu" and tensor.is_contiguous():
        try:
            return memoryview(tensor.numpy()).cast("B")
        except TypeError:  # a dtype NumPy lacks (bfloat16): the general way
            pass
    import torch

    return memoryview(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


def read_tensor(fd: int, base: int, entry: tuple, path) -> "torch.Tensor":
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


def pack_mask(mask: "torch.Tensor") -> tuple["torch.Tensor", int]:
    import torch

    from ...pruning.masks import pack

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

