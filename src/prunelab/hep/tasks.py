"""Calorimeter datasets and models in prunelab's registries.

Datasets (binary, class 1 = the signal, e+):

* ``calo_eplus_gamma``, ``calo_eplus_piplus`` — low-level inputs: the three
  layer images flattened and concatenated (288 + 144 + 72 cells, as
  ``log(1 + E/MeV)``), then the three layer energies (``log(1 + E/MeV)``):
  507 features in all (:data:`CELL_FEATURES`);
* ``calo_eplus_gamma_shapes``, ``calo_eplus_piplus_shapes`` — the same events as
  shower-shape observables (:func:`~prunelab.hep.shapes.shape_features`);
* ``calo_energy`` — regression of the incident energy (GeV) of e+ showers
  whose entry point and direction are smeared, from the 507 cell features;
* ``calogan_eplus_gamma``, ``calogan_eplus_piplus`` — the published Geant4
  CaloGAN files (``eplus.hdf5``, ``gamma.hdf5``, ``piplus.hdf5``) read from the
  data mirror (``$PRUNELAB_DATA_MIRROR`` or its ``calogan/`` folder).

Simulated sets use :data:`TRAIN_PER_PARTICLE` training and
:data:`TEST_PER_PARTICLE` test events per particle, drawn from fixed seeds, so
every machine generates the same events; they are cached as ``.npz``. Each
carries the test events' incident-energy bin as an attribute, so
``prunelab report`` shows what pruning costs per energy bin.

Models: ``calo_densenet`` (a DenseNet block per layer image, the layer
energies concatenated before a dense head, after arXiv 1806.05667) and
``shower_shape_mlp`` (a fully connected net on shower shapes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import DataUnavailableError, PrunelabError
from ..tasks.datasets import DATASETS, RawData, atomic_savez
from ..tasks.download import MIRROR_ENV, DataSource
from ..tasks.models import DenseLayer, Geometry, mlp_layers, register

TRAIN_PER_PARTICLE = 10_000
TEST_PER_PARTICLE = 5_000
TRAIN_SEED, TEST_SEED = 101, 202
LAYER_SHAPES = ((3, 96), (12, 12), (12, 6))
CELL_COUNTS = tuple(a * b for a, b in LAYER_SHAPES)
CELL_FEATURES = sum(CELL_COUNTS) + len(LAYER_SHAPES)  # 507
DATA_VERSION = 2  # bump when the simulator's output changes: the caches are then regenerated


def cell_features(showers) -> np.ndarray:
    """(N, 507) float32: log(1 + cell energy / MeV) of the three images, then log(1 + layer energy / MeV)."""
    return np.concatenate([np.log1p(showers.flat()), np.log1p(showers.layer_energies)], axis=1).astype(np.float32)


def _features(showers, kind: str) -> np.ndarray:
    if kind == "cells":
        return cell_features(showers)
    from .shapes import shape_features

    return shape_features(showers)[0]


def _standardise_columns(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column standardisation with training statistics (shower shapes mix MeV, mm and fractions)."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def _generated(source: DataSource, name: str, make, splits=None) -> dict[str, np.ndarray]:
    """The arrays cached as ``<cache>/calo/<name>.npz`` (no pickle), made by ``make(events, seed)``
    for each ``(split, events, seed)`` of ``splits`` on first use, keyed ``<key>_<split>`` (default: the
    classification sets' training and test splits, read when called)."""
    if splits is None:
        splits = (("train", TRAIN_PER_PARTICLE, TRAIN_SEED), ("test", TEST_PER_PARTICLE, TEST_SEED))
    cache = source.cache_dir / "calo" / f"{name}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    arrays: dict[str, np.ndarray] = {}
    for split, n, seed in splits:
        arrays.update({f"{key}_{split}": value for key, value in make(n, seed).items()})
    atomic_savez(cache, arrays)
    return arrays


def simulated_pair(signal: str, background: str, kind: str, source: DataSource, physics: int = 1,
                   threshold: float = 0.0, sampling: int = 0) -> RawData:
    """Signal (label 1) vs background (label 0) showers from the simulator, cached. ``physics``,
    ``threshold`` (MeV) and ``sampling`` (0/1) are :func:`~prunelab.hep.simulator.simulate`'s options,
    given in the dataset's name (``calo_eplus_gamma[physics=2,threshold=0.5]``); the defaults are the
    original events."""
    if sampling not in (0, 1):
        raise PrunelabError(f"dataset calo_{signal}_{background}: sampling must be 0 or 1, got {sampling!r}")
    options = {"physics": int(physics), "threshold_mev": float(threshold), "sampling": bool(sampling)}

    def make(n: int, seed: int) -> dict[str, np.ndarray]:
        from .simulator import simulate

        parts = [simulate(p, n, seed=seed, **options) for p in (background, signal)]
        return {"x": np.concatenate([_features(s, kind) for s in parts]),
                "y": np.repeat(np.arange(2, dtype=np.int64), n), "e": np.concatenate([s.energy for s in parts])}

    variant = "" if (physics, threshold, sampling) == (1, 0.0, 0) else f"_p{int(physics)}t{float(threshold):g}s{int(sampling)}"
    name = f"calo_{signal}_{background}_{kind}_n{TRAIN_PER_PARTICLE}-{TEST_PER_PARTICLE}_v{DATA_VERSION}{variant}"
    return _raw(_generated(source, name, make), kind, (background, signal))


def _raw(arrays: dict, kind: str, class_names: tuple[str, str]) -> RawData:
    from .metrics import energy_bin_labels

    x_train, x_test = arrays["x_train"], arrays["x_test"]
    if kind == "shapes":
        x_train, x_test = _standardise_columns(x_train, x_test)
    return RawData(x_train, arrays["y_train"], x_test, arrays["y_test"], class_names, validation=0.1,
                   test_attributes={"incident energy": energy_bin_labels(arrays["e_test"])})


CALOGAN_FILES = {"eplus": "eplus.hdf5", "gamma": "gamma.hdf5", "piplus": "piplus.hdf5"}
CALOGAN_TEST_FRACTION = 0.2


def calogan_pair(signal: str, background: str, kind: str, source: DataSource) -> RawData:
    """The published Geant4 CaloGAN files from the mirror; a fixed, seeded 20 % of each is the test split."""
    from .io import read_showers

    root = source.mirror_dir
    folders = [root, root / "calogan", root / "CaloGAN"] if root is not None else []
    paths = {}
    for particle in (background, signal):
        found = [f / CALOGAN_FILES[particle] for f in folders if (f / CALOGAN_FILES[particle]).is_file()]
        if not found:
            raise DataUnavailableError(
                f"dataset 'calogan_{signal}_{background}': {CALOGAN_FILES[particle]} not found; put the published "
                f"CaloGAN files in the mirror directory ({MIRROR_ENV}={root if root else '<unset>'}) or its "
                "calogan/ folder (they are not downloaded automatically)")
        paths[particle] = found[0]
    arrays: dict[str, list] = {k: [] for k in ("x_train", "y_train", "e_train", "x_test", "y_test", "e_test")}
    for label, particle in enumerate((background, signal)):
        showers = read_showers(paths[particle], particle=particle)
        order = np.random.default_rng(label).permutation(len(showers))
        n_test = int(round(CALOGAN_TEST_FRACTION * len(showers)))
        for split, index in (("test", np.sort(order[:n_test])), ("train", np.sort(order[n_test:]))):
            part = showers.take(index)
            arrays[f"x_{split}"].append(_features(part, kind))
            arrays[f"y_{split}"].append(np.full(len(part), label, dtype=np.int64))
            arrays[f"e_{split}"].append(part.energy)
    return _raw({k: np.concatenate(v) for k, v in arrays.items()}, kind, (background, signal))


def _register_pair(prefix: str, reader, signal: str, background: str, what: str) -> None:
    for kind, suffix in (("cells", ""), ("shapes", "_shapes")):
        if reader is simulated_pair:  # simulator options as variant options (calo_eplus_gamma[physics=2])
            def factory(source: DataSource, kind=kind, physics: int = 1, threshold: float = 0.0,
                        sampling: int = 0) -> RawData:
                return simulated_pair(signal, background, kind, source, physics, threshold, sampling)
        else:
            def factory(source: DataSource, kind=kind) -> RawData:
                return reader(signal, background, kind, source)

        features = "507 cell features" if kind == "cells" else "shower shapes"
        # the CaloGAN files are the user's own: their content enters identities by fingerprint
        factory.content_pinned = prefix != "calogan"
        DATASETS.register(f"{prefix}_{signal}_{background}{suffix}",
                          f"{what} {signal} (1) vs {background} (0), {features}")(factory)


ENERGY_POSITION_SIGMA_MM = 10.0
ENERGY_ANGLE_SIGMA_RAD = 0.03


@DATASETS.register("calo_energy", "regression: incident energy (GeV) of e+ showers, entry point and direction "
                                  "smeared, 507 cell features (simulated, offline)")
def calo_energy(source: DataSource) -> RawData:
    """e+ showers with the entry point smeared by 10 mm and the direction by 30 mrad per axis (so
    position and leakage vary as in a real beam); the target is the incident energy in GeV."""
    from .metrics import energy_bin_labels

    def make(n: int, seed: int) -> dict[str, np.ndarray]:
        from .simulator import simulate

        showers = simulate("eplus", n, seed=seed + 7, position_sigma=ENERGY_POSITION_SIGMA_MM,
                           angle_sigma=ENERGY_ANGLE_SIGMA_RAD)
        return {"x": cell_features(showers), "y": showers.energy.astype(np.float64)}

    name = (f"calo_energy_n{TRAIN_PER_PARTICLE}-{TEST_PER_PARTICLE}_pos{ENERGY_POSITION_SIGMA_MM:g}"
            f"_ang{ENERGY_ANGLE_SIGMA_RAD:g}_v{DATA_VERSION}")
    arrays = _generated(source, name, make)
    return RawData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], validation=0.1,
                   test_attributes={"incident energy": energy_bin_labels(arrays["y_test"])}, task="regression")


GAN_TRAIN_EVENTS, GAN_TEST_EVENTS = 40_000, 10_000
SHOWER_PARTICLES = ("eplus", "gamma", "piplus")
SHOWER_KEYS = ("energy", "layer_0", "layer_1", "layer_2", "overflow")
_SHOWER_ARRAYS: dict = {}  # per process: every GAN state's evaluation reads the held-out split


def shower_arrays(particle: str, source: DataSource | None = None) -> dict[str, np.ndarray]:
    """Raw simulated showers of one particle for generative models, cached: ``<key>_<split>`` for the
    CaloGAN keys, :data:`GAN_TRAIN_EVENTS` training and :data:`GAN_TEST_EVENTS` held-out events."""
    source = source or DataSource()
    name = f"showers_{particle}_n{GAN_TRAIN_EVENTS}-{GAN_TEST_EVENTS}_v{DATA_VERSION}"
    key = (str(source.cache_dir), name)
    if key not in _SHOWER_ARRAYS:
        def make(n: int, seed: int) -> dict[str, np.ndarray]:
            from .simulator import simulate

            showers = simulate(particle, n, seed=seed)
            return dict(zip(SHOWER_KEYS, (showers.energy, *showers.layers, showers.overflow)))

        splits = (("train", GAN_TRAIN_EVENTS, TRAIN_SEED + 11), ("test", GAN_TEST_EVENTS, TEST_SEED + 11))
        _SHOWER_ARRAYS[key] = _generated(source, name, make, splits)
    return _SHOWER_ARRAYS[key]


def _showers(arrays: dict, split: str, particle: str | None = None):
    from .simulator import Showers

    return Showers(arrays[f"energy_{split}"], tuple(arrays[f"layer_{i}_{split}"] for i in range(3)),
                   arrays[f"overflow_{split}"], particle)


def shower_split(dataset: str, split: str):
    """The raw :class:`~prunelab.hep.simulator.Showers` behind a ``calo_showers_*`` dataset."""
    particle = dataset.removeprefix("calo_showers_")
    if not dataset.startswith("calo_showers_") or particle not in SHOWER_PARTICLES:
        raise PrunelabError(f"{dataset!r} is not a shower dataset (calo_showers_{', calo_showers_'.join(SHOWER_PARTICLES)})")
    if split not in ("train", "test"):
        raise PrunelabError(f"shower datasets have a 'train' and a 'test' split, not {split!r}")
    return _showers(shower_arrays(particle), split, particle)


def _register_showers(particle: str) -> None:
    def factory(source: DataSource) -> RawData:
        from .metrics import energy_bin_labels

        a = shower_arrays(particle, source)
        x = {split: cell_features(_showers(a, split)) for split in ("train", "test")}
        return RawData(x["train"], a["energy_train"], x["test"], a["energy_test"], validation=0.1,
                       test_attributes={"incident energy": energy_bin_labels(a["energy_test"])}, task="regression")

    DATASETS.register(f"calo_showers_{particle}",
                      f"{particle} showers (simulated, offline) for generative models (model calogan); as a task: "
                      "the incident energy (GeV) from the 507 cell features")(factory)


for _particle in SHOWER_PARTICLES:
    _register_showers(_particle)

_register_pair("calo", simulated_pair, "eplus", "gamma", "calorimeter showers (simulated, offline):")
_register_pair("calo", simulated_pair, "eplus", "piplus", "calorimeter showers (simulated, offline):")
_register_pair("calogan", calogan_pair, "eplus", "gamma", "CaloGAN Geant4 files from the mirror:")
_register_pair("calogan", calogan_pair, "eplus", "piplus", "CaloGAN Geant4 files from the mirror:")


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 whose ``growth`` output channels are concatenated to its input (DenseNet)."""

    def __init__(self, g: Geometry, growth: int):
        super().__init__()
        in_channels = g.channels
        self.bn = g.batch_norm()
        self.conv = g.conv(growth, 3, bias=False)
        self.relu = nn.ReLU()
        g.channels = in_channels + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class _ImageBranch(nn.Module):
    """Stem conv, a dense block, pooled to a small grid. ``bottleneck``: DenseNet-BC layers
    (1x1 conv to 4 x growth first; about 8x the arithmetic)."""

    def __init__(self, shape: tuple[int, int], pooled: tuple[int, int], growth: int, layers: int, bottleneck: bool):
        super().__init__()
        self.shape = shape
        g = Geometry("calo_densenet", (1, *shape))
        modules: list[nn.Module] = [g.conv(2 * growth, 3, bias=False)]
        modules += [(DenseLayer if bottleneck else _DenseLayer)(g, growth) for _ in range(layers)]
        modules += [g.batch_norm(), nn.ReLU(), nn.AdaptiveAvgPool2d(pooled), nn.Flatten()]
        self.features = nn.Sequential(*modules)
        self.out_features = g.channels * pooled[0] * pooled[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.reshape(-1, 1, *self.shape))


class CaloDenseNet(nn.Module):
    POOLED = ((1, 12), (3, 3), (3, 3))

    def __init__(self, num_classes: int, growth: int, layers_per_block: int, head: int, bottleneck: bool):
        super().__init__()
        self.branches = nn.ModuleList(_ImageBranch(s, p, growth, layers_per_block, bottleneck)
                                      for s, p in zip(LAYER_SHAPES, self.POOLED))
        width = sum(b.out_features for b in self.branches) + len(LAYER_SHAPES)
        self.head = nn.Sequential(*mlp_layers([width, head, num_classes]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = torch.split(x, [*CELL_COUNTS, len(LAYER_SHAPES)], dim=1)
        features = [branch(image) for branch, image in zip(self.branches, images)]
        return self.head(torch.cat([*features, images[-1]], dim=1))


@register("calo_densenet", "calorimeter DenseNet: a dense block per layer image + layer energies (507 inputs)",
          "kaiming_normal", input_shape=(CELL_FEATURES,))
def calo_densenet(input_shape, num_classes, growth: int = 4, layers_per_block: int = 2, head: int = 64,
                  bottleneck: bool = False) -> nn.Module:
    if tuple(input_shape) != (CELL_FEATURES,):
        raise PrunelabError(f"model 'calo_densenet' takes the calorimeter's {CELL_FEATURES} cell features "
                            f"(datasets calo_eplus_gamma, calo_eplus_piplus, calogan_*); got inputs of shape "
                            f"{tuple(input_shape)}")
    return CaloDenseNet(num_classes, growth, layers_per_block, head, bottleneck)


@register("shower_shape_mlp", "fully connected net on shower-shape observables (the *_shapes datasets)",
          "glorot_normal")
def shower_shape_mlp(input_shape, num_classes, hidden: tuple[int, ...] = (64, 64)) -> nn.Module:
    size = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), *mlp_layers([size, *hidden, num_classes]))

