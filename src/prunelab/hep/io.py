"""Showers in HDF5, in either of the two layouts the field uses; :func:`read_showers` tells them apart by their keys.

* **CaloGAN** (arXiv 1705.02355): ``energy`` (N, 1) in GeV, ``layer_0`` (N, 3, 96),
  ``layer_1`` (N, 12, 12), ``layer_2`` (N, 12, 6) and ``overflow`` (N, 3), all in MeV.
  Files written here add the particle and the generator's settings as attributes;
  files without them (the published ones) read the same.
* **CaloChallenge** (arXiv 2410.21611): ``incident_energies`` (N, 1) in MeV and
  ``showers`` (N, voxels) in MeV, each shower flattened. For this calorimeter the
  504 voxels are the three layer images flattened in order (C order, ``[i, j]``
  with ``j`` fastest), as :meth:`Showers.flat` does. The layout has no overflow:
  writing drops it, reading gives zeros.
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
CHALLENGE_KEYS = ("incident_energies", "showers")
LAYOUTS = ("calogan", "calochallenge")
VOXELS = CALORIMETER.features  # 288 + 144 + 72
_GEOMETRY = " + ".join(f"{layer.shape[0]}x{layer.shape[1]}" for layer in CALORIMETER.layers)


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise PrunelabError("reading CaloGAN files needs h5py: pip install h5py") from exc
    return h5py


def write_showers(path: str | Path, showers: Showers, attrs: dict | None = None, *,
                  layout: str = "calogan") -> Path:
    """Write ``showers`` to ``path`` atomically (a temporary file renamed into place), in ``layout``
    (``calogan`` or ``calochallenge``)."""
    h5py = _h5py()
    if layout not in LAYOUTS:
        raise PrunelabError(f"layout {layout!r}: must be one of {', '.join(LAYOUTS)}")
    path = Path(path)
    if path.is_dir():
        raise PrunelabError(f"{path}: is a directory; give a file name such as {path / 'showers.h5'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise PrunelabError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    packed = dict(compression="gzip", compression_opts=4, shuffle=True)
    try:
        with h5py.File(tmp, "w") as f:
            if layout == "calochallenge":
                f.create_dataset("incident_energies", data=(1000.0 * showers.energy).reshape(-1, 1))
                f.create_dataset("showers", data=showers.flat().astype(np.float32), **packed)
            else:
                f.create_dataset("energy", data=showers.energy.reshape(-1, 1).astype(np.float32))
                for key, image in zip(LAYER_KEYS, showers.layers):
                    f.create_dataset(key, data=image.astype(np.float32), **packed)
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


def file_layout(path: str | Path) -> str:
    """``calogan`` or ``calochallenge``, from the keys of the file at ``path``."""
    with _open(Path(path)) as f:
        return _layout(f, Path(path))


def _open(path: Path):
    h5py = _h5py()
    if not path.is_file():
        raise PrunelabError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise PrunelabError(f"{path}: not a readable HDF5 file ({exc})") from None


def _layout(f, path: Path) -> str:
    if any(k in f for k in CHALLENGE_KEYS) and not any(k in f for k in REQUIRED):
        return "calochallenge"
    if any(k in f for k in REQUIRED):
        return "calogan"
    raise PrunelabError(f"{path}: neither a CaloGAN file ({', '.join(REQUIRED)}) nor a CaloChallenge file "
                        f"({', '.join(CHALLENGE_KEYS)}); its keys are {', '.join(sorted(f.keys())) or 'none'}")


def read_showers(path: str | Path, limit: int | None = None, particle: str | None = None) -> Showers:
    """Read a file in either layout (told apart by its keys); every key is checked for presence, shape and
    finite, non-negative values."""
    path = Path(path)
    with _open(path) as f:
        layout = _layout(f, path)
        read = _read_challenge if layout == "calochallenge" else _read_calogan
        energy, arrays = read(f, path, limit)
        info = {k: np.asarray(f["info"][k][: len(energy)]) for k in f["info"]} if "info" in f else {}
        stored = f.attrs.get("particle")
    for key, values in [("incident_energies" if layout == "calochallenge" else "energy", energy), *arrays.items()]:
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), values.shape)
            raise PrunelabError(f"{path}: key {key!r} holds {float(values[index])!r} at event {int(index[0])}; "
                                "energies must be finite and non-negative")
    if layout == "calochallenge":
        energy = energy / 1000.0  # MeV in the file, GeV in Showers
        flat = arrays["showers"]
        bounds = np.cumsum([0, *(layer.cells for layer in CALORIMETER.layers)])
        layers = tuple(flat[:, a:b].reshape(len(flat), *layer.shape)
                       for a, b, layer in zip(bounds[:-1], bounds[1:], CALORIMETER.layers))
        overflow = np.zeros((len(flat), len(CALORIMETER.layers)), dtype=np.float32)
    else:
        layers, overflow = tuple(arrays[k] for k in LAYER_KEYS), arrays["overflow"]
    if isinstance(stored, bytes):
        stored = stored.decode()
    return Showers(energy, layers, overflow, particle or stored, info)


def _events(f, path: Path, key: str, unit: str) -> int:
    shape = f[key].shape
    n = shape[0] if len(shape) >= 1 else 0
    if shape not in ((n, 1), (n,)) or n == 0:
        raise PrunelabError(f"{path}: key {key!r} has shape {shape}, expected (N, 1) with N > 0 ({unit})")
    return n


def _read_calogan(f, path: Path, limit: int | None):
    missing = [k for k in REQUIRED if k not in f]
    if missing:
        raise PrunelabError(f"{path}: missing key {missing[0]!r} (a CaloGAN file has {', '.join(REQUIRED)})")
    n = _events(f, path, "energy", "GeV")
    stop = n if limit is None else min(n, int(limit))
    expected = {key: (n, *layer.shape) for key, layer in zip(LAYER_KEYS, CALORIMETER.layers)}
    expected["overflow"] = (n, len(CALORIMETER.layers))
    arrays = {}
    for key, shape in expected.items():
        if f[key].shape != shape:
            raise PrunelabError(f"{path}: key {key!r} has shape {f[key].shape}, expected {shape}")
        arrays[key] = np.asarray(f[key][:stop], dtype=np.float32)
    return np.asarray(f["energy"][:stop], dtype=np.float64).reshape(-1), arrays


def _read_challenge(f, path: Path, limit: int | None):
    missing = [k for k in CHALLENGE_KEYS if k not in f]
    if missing:
        raise PrunelabError(f"{path}: missing key {missing[0]!r} (a CaloChallenge file has "
                            f"{', '.join(CHALLENGE_KEYS)})")
    n = _events(f, path, "incident_energies", "MeV")
    stop = n if limit is None else min(n, int(limit))
    if f["showers"].shape != (n, VOXELS):
        raise PrunelabError(f"{path}: key 'showers' has shape {f['showers'].shape}, expected {(n, VOXELS)}: "
                            f"one row per incident energy, {VOXELS} voxels ({_GEOMETRY} cells of this calorimeter)")
    energy = np.asarray(f["incident_energies"][:stop], dtype=np.float64).reshape(-1)
    zero = np.flatnonzero(energy == 0)
    if zero.size:
        raise PrunelabError(f"{path}: key 'incident_energies' holds 0.0 at event {int(zero[0])}; "
                            "an incident energy must be positive (MeV)")
    return energy, {"showers": np.asarray(f["showers"][:stop], dtype=np.float32)}
