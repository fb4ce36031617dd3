"""Showers in the CaloGAN HDF5 layout: one file per particle with ``energy`` (N, 1) in GeV,
``layer_0`` (N, 3, 96), ``layer_1`` (N, 12, 12), ``layer_2`` (N, 12, 6) and
``overflow`` (N, 3), all in MeV. Files written here add the particle and the
generator's settings as attributes; files without them (the published ones)
read the same.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import PrunelabError
from ..files import publish
from .geometry import CALORIMETER
from .simulator import Showers

LAYER_KEYS = tuple(layer.name for layer in CALORIMETER.layers)
REQUIRED = ("energy", *LAYER_KEYS, "overflow")


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise PrunelabError("reading CaloGAN files needs h5py: pip install h5py") from exc
    return h5py


def write_showers(path: str | Path, showers: Showers, attrs: dict | None = None) -> Path:
    """Write ``showers`` to ``path`` atomically (a temporary file renamed into place)."""
    h5py = _h5py()
    path = Path(path)
    if path.is_dir():
        raise PrunelabError(f"{path}: is a directory; give a file name such as {path / 'showers.h5'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise PrunelabError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("energy", data=showers.energy.reshape(-1, 1).astype(np.float32))
            for key, image in zip(LAYER_KEYS, showers.layers):
                f.create_dataset(key, data=image.astype(np.float32), compression="gzip", compression_opts=4,
                                 shuffle=True)
            f.create_dataset("overflow", data=showers.overflow.astype(np.float32))
            for key, values in showers.info.items():
                f.create_dataset(f"info/{key}", data=np.asarray(values))
            if showers.particle:
                f.attrs["particle"] = showers.particle
            if attrs:
                f.attrs["prunelab"] = json.dumps(attrs, sort_keys=True)
        publish(tmp, path)  # mkstemp makes files private; a data file follows the umask
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_showers(path: str | Path, limit: int | None = None, particle: str | None = None) -> Showers:
    """Read a CaloGAN-layout file; every key is checked for presence, shape and finite, non-negative values."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise PrunelabError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PrunelabError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise PrunelabError(f"{path}: missing key {missing[0]!r} (a CaloGAN file has {', '.join(REQUIRED)})")
        n = f["energy"].shape[0] if f["energy"].ndim >= 1 else 0
        if f["energy"].shape not in ((n, 1), (n,)) or n == 0:
            raise PrunelabError(f"{path}: key 'energy' has shape {f['energy'].shape}, expected (N, 1) with N > 0")
        stop = n if limit is None else min(n, int(limit))
        expected = {key: (n, *layer.shape) for key, layer in zip(LAYER_KEYS, CALORIMETER.layers)}
        expected["overflow"] = (n, len(CALORIMETER.layers))
        arrays = {}
        for key, shape in expected.items():
            if f[key].shape != shape:
                raise PrunelabError(f"{path}: key {key!r} has shape {f[key].shape}, expected {shape}")
            arrays[key] = np.asarray(f[key][:stop], dtype=np.float32)
        energy = np.asarray(f["energy"][:stop], dtype=np.float64).reshape(-1)
        info = {k: np.asarray(f["info"][k][:stop]) for k in f["info"]} if "info" in f else {}
        stored = f.attrs.get("particle")
    for key, values in [("energy", energy), *arrays.items()]:
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), values.shape)
            raise PrunelabError(f"{path}: key {key!r} holds {float(values[index])!r} at event {int(index[0])}; "
                                "energies must be finite and non-negative")
    if isinstance(stored, bytes):
        stored = stored.decode()
    return Showers(energy, tuple(arrays[k] for k in LAYER_KEYS), arrays["overflow"], particle or stored, info)
