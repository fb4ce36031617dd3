"""Datasets by name: offline built-ins and checksummed download-backed sets.

A :class:`Dataset` holds train / validation / test splits as in-memory tensors
(these datasets are small), the class names and the input shape. The
validation split is carved out of the training data with a fixed seed, so it is
the same on every machine and every run.
"""

from __future__ import annotations

import inspect
import math
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import PrunelabError
from ..files import publish
from ..registry import Registry
from .download import DataSource, RemoteFile
from .formats import read_cifar10_binary, read_idx

VALIDATION_SEED = 0


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32, (N, *input_shape)
    y: torch.Tensor  # int64 class labels (N,); for regression float32 targets, standardised
    # Regression: y = (target - target_mean) / target_std; evaluation reports physical units.
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def regression(self) -> bool:
        return bool(self.y.is_floating_point())

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    validation: Split
    test: Split
    class_names: tuple[str, ...]
    # Per-test-example attributes (name -> one value per test example), e.g. the
    # incident-energy bin of a shower: the report shows accuracy per group of each.
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    task: str = "classification"  # or "regression" (one real target; class_names is empty)

    @property
    def num_classes(self) -> int:
        """The number of model outputs: the classes, or 1 for a regression target."""
        return 1 if self.task == "regression" else len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise PrunelabError(f"unknown split {name!r} (train, validation, test)")
        return getattr(self, name)


@dataclass(frozen=True)
class RawData:
    """What a dataset factory returns: arrays before splitting and scaling."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: Sequence[str] | None = None
    validation: int | float = 0.1  # examples (int) or fraction of train (float)
    test_attributes: Mapping[str, np.ndarray] | None = None  # see Dataset.attributes
    task: str = "classification"  # "regression": y are real targets (standardised on the training split)


DatasetFactory = Callable[..., "RawData | Dataset | tuple"]
DATASETS: Registry[DatasetFactory] = Registry("dataset", group="prunelab.datasets")


def is_builtin_dataset(name: str) -> bool:
    """A dataset whose content prunelab pins (published checksums, or a seeded generator), variants
    included. A factory that reads the user's own files (the ``calogan_*`` ones) says so with
    ``content_pinned = False``."""
    base = parse_variant(name)[0]
    if ":" in base or base not in DATASETS:
        return False
    factory = DATASETS.get(base)
    return getattr(factory, "__module__", "").startswith("prunelab.") and getattr(factory, "content_pinned", True)


def dataset_fingerprint(data: "Dataset") -> str:
    """sha256 over every split's tensors (dtype, shape, bytes) and the class names."""
    import hashlib

    digest = hashlib.sha256(repr(tuple(data.class_names)).encode())
    for split in (data.train, data.validation, data.test):
        for tensor in (split.x, split.y):
            t = tensor.detach().contiguous().cpu()
            digest.update(f"{t.dtype}|{list(t.shape)}|".encode())
            if t.numel():
                digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def load_dataset(
    name: str,
    *,
    source: DataSource | None = None,
    validation: int | float | None = None,
    trust_import: bool = True,
) -> Dataset:
    """Load a registered dataset (or ``package.module:factory``) by name.

    An import path given here is trusted (you named it); prunelab passes
    ``trust_import=False`` for names read from a store (registry.trust).

    ``validation`` overrides the dataset's default validation size: an int is
    a number of examples, a float in (0, 1) a fraction of the training set.
    A variant name (``"digits[resize=28x28]"``, see :func:`dataset_variant`)
    loads the base dataset and resizes its inputs before standardisation.
    """
    base, resize, channels = parse_variant(name)
    if trust_import:
        from ..registry import trust_names

        trust_names(base)
    factory = DATASETS.get(base)
    source = source or DataSource()
    params = inspect.signature(factory).parameters
    options = variant_options(name)
    produced = factory(source=source, **options) if "source" in params else factory(**options)
    keep = sampling_options(name)
    if isinstance(produced, Dataset):
        if resize is not None or channels is not None or keep:
            raise PrunelabError(f"dataset {base!r}: its factory returns a finished Dataset, which cannot be resized or "
                                "subsampled; return prunelab.RawData to allow resize / channels / keep / longtail")
        return produced
    if isinstance(produced, tuple) and len(produced) == 4:
        produced = RawData(*produced)
    if not isinstance(produced, RawData):
        raise PrunelabError(
            f"dataset factory {name!r} returned {type(produced).__name__}; expected prunelab.RawData, "
            "prunelab.Dataset or a tuple (x_train, y_train, x_test, y_test)"
        )
    if keep:
        produced = under_represent(name, produced, keep)
    if resize is not None or channels is not None:
        produced = replace(produced, x_train=reshape_inputs(name, produced.x_train, resize, channels),
                           x_test=reshape_inputs(name, produced.x_test, resize, channels))
    return build_dataset(name, produced, validation)


# --------------------------------------------------------------------------
# Under-represented classes: fewer training examples of chosen classes
# --------------------------------------------------------------------------

#: Variant options that thin out classes of the training data (the test split is never touched).
SAMPLING = ("keep", "longtail")
SAMPLING_SEED = 1  # which examples stay is fixed by the name: the same on every machine and run


def sampling_options(name: str) -> dict:
    """``"mnist[keep=3:0.1]"`` → ``{"keep": {3: 0.1}}`` (several classes: ``keep=3:0.1+7:0.5``);
    ``"mnist[longtail=0.01]"`` → ``{"longtail": 0.01}``: class c keeps the fraction ρ^(c/(C−1)) of its
    training examples, ρ the ratio of the rarest class to the most common (the long-tailed profile of
    Cao et al. 2019, arXiv 1906.07413)."""
    out: dict = {}
    for key, value in variant_items(name)[1]:
        if key not in SAMPLING:
            continue
        if key in out:
            raise PrunelabError(f"dataset {name[:120]!r}: give {key} once")
        try:
            if key == "longtail":
                ratio = float(value)
                if not 0 < ratio <= 1:
                    raise ValueError
                out[key] = ratio
            else:
                fractions = {}
                for part in value.split("+"):
                    label, _, fraction = part.partition(":")
                    label_, fraction_ = int(label), float(fraction)
                    if label_ < 0 or not 0 < fraction_ <= 1 or label_ in fractions:
                        raise ValueError
                    fractions[label_] = fraction_
                out[key] = fractions
        except ValueError:
            raise PrunelabError(f"dataset {name[:120]!r}: bad {key} {value[:40]!r} (keep=CLASS:FRACTION, several "
                                "joined by '+', e.g. keep=3:0.1+7:0.5, fractions in (0, 1]; longtail=RATIO in "
                                "(0, 1])") from None
    if len(out) > 1:
        raise PrunelabError(f"dataset {name[:120]!r}: give keep or longtail, not both")
    return out


def under_represent(name: str, raw: RawData, options: dict) -> RawData:
    """``raw`` with only a seeded fraction of the training examples of some classes (at least one each)."""
    if raw.task != "classification":
        raise PrunelabError(f"dataset {name!r}: keep / longtail thin out classes; a {raw.task} task has none")
    y = np.asarray(raw.y_train)
    classes = int(max(y.max(), np.asarray(raw.y_test).max())) + 1
    if "longtail" in options:
        ratio = options["longtail"]
        fractions = {c: ratio ** (c / max(classes - 1, 1)) for c in range(classes)}
    else:
        fractions = options["keep"]
        missing = sorted(c for c in fractions if c >= classes)
        if missing:
            raise PrunelabError(f"dataset {name!r}: keep names class {missing[0]}, but the labels are 0..{classes - 1}")
    rng = np.random.default_rng(SAMPLING_SEED)
    chosen = np.ones(len(y), dtype=bool)
    for c in range(classes):  # every class draws, kept or not: a class's sample never depends on another's
        where = np.flatnonzero(y == c)
        order = rng.permutation(len(where))
        if c in fractions and len(where):
            n = max(1, int(round(fractions[c] * len(where))))
            chosen[where[np.sort(order[n:])]] = False
    return replace(raw, x_train=np.asarray(raw.x_train)[chosen], y_train=y[chosen])


# --------------------------------------------------------------------------
# Variants: one architecture for tasks of different input shapes
# --------------------------------------------------------------------------


def dataset_variant(name: str, resize: Sequence[int] | None = None, channels: int | None = None) -> str:
    """The name of ``name`` with its inputs resized (and channels replicated or averaged).

    ``dataset_variant("digits", resize=[28, 28])`` is ``"digits[resize=28x28]"``.
    The name is what identifies the data everywhere (a state's identity, the
    store), so a resized task never shares results with the original.
    """
    if resize is None and channels is None:
        return name
    if "[" in name:
        raise PrunelabError(f"dataset {name!r} is already a variant; give resize / channels once")
    options = []
    if resize is not None:
        options.append("resize=" + "x".join(str(int(v)) for v in resize))
    if channels is not None:
        options.append(f"channels={int(channels)}")
    parse_variant(f"{name}[{','.join(options)}]")  # validates the values
    return f"{name}[{','.join(options)}]"


def variant_items(name: str) -> tuple[str, list[tuple[str, str]]]:
    """``"digits[resize=28x28,keep=3:0.1]"`` → ``("digits", [("resize", "28x28"), ("keep", "3:0.1")])``."""
    if not name.endswith("]") or "[" not in name:
        return name, []
    base, _, options = name[:-1].partition("[")
    return base, [(key, value) for key, _, value in (o.partition("=") for o in options.split(",") if o)]


def parse_variant(name: str) -> tuple[str, tuple[int, ...] | None, int | None]:
    """``"digits[resize=28x28,channels=3]"`` → ``("digits", (28, 28), 3)``."""
    base, items = variant_items(name)
    resize = channels = None
    for key, value in items:
        if key in SAMPLING:
            continue  # read by sampling_options
        if key not in ("resize", "channels"):
            _factory_option(name, base, key, value)  # an option of the dataset's own factory (block=128)
            continue
        try:
            if key == "resize":
                resize = tuple(int(v) for v in value.split("x"))
                if not 1 <= len(resize) <= 3 or min(resize) < 1 or max(resize) > MAX_SIDE:
                    raise ValueError
            elif key == "channels":
                channels = int(value)
                if not 1 <= channels <= MAX_CHANNELS:
                    raise ValueError
        except ValueError:
            raise PrunelabError(f"dataset {name[:120]!r}: bad {key} {value[:40]!r} (resize=HxW or resize=L with sizes "
                                f"1..{MAX_SIDE}, channels=N in 1..{MAX_CHANNELS})") from None
    if resize is not None and math.prod(resize) * (channels or 1) > MAX_VALUES:
        raise PrunelabError(f"dataset {name[:120]!r}: {'x'.join(map(str, resize))} inputs of {channels or 1} channels are "
                            f"{math.prod(resize) * (channels or 1):,} values an example (at most {MAX_VALUES:,})")
    return base, resize, channels


def variant_options(name: str) -> dict:
    """The options of a variant name that its dataset's factory takes itself, typed by the factory's
    annotations: ``"tinyshakespeare[block=128]"`` → ``{"block": 128}``."""
    base, items = variant_items(name)
    out = {}
    for key, value in items:
        if key not in ("resize", "channels") and key not in SAMPLING:
            out[key] = _factory_option(name, base, key, value)
    return out


def _factory_option(name: str, base: str, key: str, value: str):
    """``value`` converted for the factory's keyword ``key``, or a clear error naming the options there are."""
    params = {}
    if ":" not in base and base in DATASETS:  # an import path is never imported just to parse its name
        params = {k: p for k, p in inspect.signature(DATASETS.get(base)).parameters.items()
                  if k != "source" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}
    if key not in params:
        known = ", ".join(["resize=HxW", "channels=N"] + [f"{k}=…" for k in params])
        raise PrunelabError(f"dataset {name[:120]!r}: unknown option {key[:40]!r} ({known})")
    kind = params[key].annotation
    kind = {"int": int, "float": float, "str": str}.get(kind, kind) if isinstance(kind, str) else kind
    try:
        return kind(value) if kind in (int, float) else value
    except ValueError:
        raise PrunelabError(f"dataset {name[:120]!r}: option {key} needs a number, got {value[:40]!r}") from None


# Bounds on a variant's inputs: the name may come from a store, and a spec's typo should not try to
# allocate terabytes. 4M values an example is a 2048x2048 grey or 1182x1182 colour image.
MAX_SIDE, MAX_CHANNELS, MAX_VALUES = 4096, 64, 4 * 2**20


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**40


def reshape_inputs(name: str, x, resize: tuple[int, ...] | None, channels: int | None) -> np.ndarray:
    """Resize (C, *spatial) inputs by linear/bilinear interpolation (antialiased when shrinking)
    and replicate a single channel to ``channels`` (or average channels down to 1)."""
    import torch.nn.functional as F

    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim not in (3, 4):
        raise PrunelabError(f"dataset {name!r}: resize / channels need inputs of shape (N, C, L) or (N, C, H, W), "
                            f"got {x.shape}")
    spatial = x.shape[2:]
    if resize is not None and len(resize) != len(spatial):
        raise PrunelabError(f"dataset {name!r}: resize {list(resize)} has {len(resize)} sizes for "
                            f"{len(spatial)}-d inputs {tuple(spatial)}")
    c = x.shape[1]
    size = len(x) * (channels or c) * math.prod(resize or spatial) * 4
    if size > _memory_bytes() // 2:
        raise PrunelabError(f"dataset {name!r}: the resized inputs would take {size / 2**30:.1f} GiB, more than half "
                            f"of this machine's {_memory_bytes() / 2**30:.1f} GiB")
    if channels is not None and channels != c and c != 1 and channels != 1:
        raise PrunelabError(f"dataset {name!r}: cannot turn {c} channels into {channels} (replicate 1 → N or "
                            "average N → 1)")
    out = []
    for start in range(0, len(x), 4096):  # chunks: bounded memory for large sets
        chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + 4096], dtype=np.float32))
        if resize is not None and tuple(resize) != tuple(spatial):
            mode = "linear" if len(spatial) == 1 else "bilinear" if len(spatial) == 2 else "trilinear"
            shrinking = any(r < s for r, s in zip(resize, spatial))
            chunk = F.interpolate(chunk, size=tuple(resize), mode=mode, align_corners=False,
                                  antialias=shrinking and mode == "bilinear")
        if channels is not None and channels != c:
            chunk = chunk.expand(-1, channels, *chunk.shape[2:]) if c == 1 else chunk.mean(dim=1, keepdim=True)
        out.append(chunk.contiguous().numpy())
    return np.concatenate(out) if out else x.astype(np.float32)


def build_dataset(name: str, raw: RawData, validation: int | float | None = None) -> Dataset:
    if raw.task not in ("classification", "regression"):
        raise PrunelabError(f"dataset {name!r}: task {raw.task!r} must be 'classification' or 'regression'")
    regression = raw.task == "regression"
    x_train, y_train = _as_arrays(name, "train", raw.x_train, raw.y_train, regression)
    x_test, y_test = _as_arrays(name, "test", raw.x_test, raw.y_test, regression)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise PrunelabError(f"dataset {name!r}: train inputs {x_train.shape[1:]} and test inputs {x_test.shape[1:]} differ in shape")
    if regression:
        class_names: tuple[str, ...] = ()
    else:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
        class_names = tuple(raw.class_names) if raw.class_names is not None else tuple(str(i) for i in range(num_classes))
        if len(class_names) < num_classes:
            raise PrunelabError(f"dataset {name!r}: {len(class_names)} class names for labels up to {num_classes - 1}")

    n_val = _validation_count(name, validation if validation is not None else raw.validation, len(y_train))
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(y_train))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    # Standardise with statistics of the training portion only (per channel
    # for (C, ...) inputs), so validation and test never leak into scaling.
    x_train = x_train.astype(np.float32)
    x_test = x_test.astype(np.float32)
    fit = x_train[train_idx]
    axes = (0,) + tuple(range(2, fit.ndim)) if fit.ndim > 2 else (0, 1)
    mean = fit.mean(axis=axes, keepdims=True)
    std = fit.std(axis=axes, keepdims=True)
    std[std == 0] = 1.0

    target_mean, target_std = 0.0, 1.0
    if regression:  # targets standardised with the training portion's statistics too
        target_mean = float(y_train[train_idx].mean())
        target_std = float(y_train[train_idx].std()) or 1.0

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        inputs = torch.from_numpy((x - mean) / std).float().contiguous()
        if regression:
            return Split(inputs, torch.from_numpy((y - target_mean) / target_std).float(), target_mean, target_std)
        return Split(inputs, torch.from_numpy(y.astype(np.int64)))

    attributes = {}
    for key, values in (raw.test_attributes or {}).items():
        values = np.asarray(values)
        if values.shape != (len(y_test),):
            raise PrunelabError(f"dataset {name!r}: test attribute {key!r} has shape {values.shape}, "
                                f"expected one value per test example ({len(y_test)},)")
        attributes[str(key)] = values
    return Dataset(
        name=name,
        train=split(x_train[train_idx], y_train[train_idx]),
        validation=split(x_train[val_idx], y_train[val_idx]),
        test=split(x_test, y_test),
        class_names=class_names,
        attributes=attributes,
        task=raw.task,
    )


def _as_arrays(name: str, which: str, x, y, regression: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x.ndim < 2:
        raise PrunelabError(f"dataset {name!r}: {which} inputs must be (N, ...) with N examples, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise PrunelabError(f"dataset {name!r}: {which} labels shape {y.shape} does not match {len(x)} inputs")
    if regression:
        if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all():
            raise PrunelabError(f"dataset {name!r}: {which} regression targets must be finite numbers")
        return x, y.astype(np.float64)
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise PrunelabError(f"dataset {name!r}: {which} labels must be non-negative integers")
    return x, y


def _validation_count(name: str, validation: int | float, n_train: int) -> int:
    if isinstance(validation, float) and not isinstance(validation, bool):
        if not 0.0 <= validation < 1.0:
            raise PrunelabError(f"dataset {name!r}: validation fraction {validation} must be in [0, 1)")
        count = int(round(validation * n_train))
    else:
        count = int(validation)
    if not 0 <= count < n_train:
        raise PrunelabError(f"dataset {name!r}: validation size {validation} leaves no training data ({n_train} examples)")
    return count


# --------------------------------------------------------------------------
# Offline built-ins
# --------------------------------------------------------------------------


@DATASETS.register("digits", "scikit-learn 8x8 handwritten digits, 10 classes, offline")
def digits(source: DataSource) -> RawData:
    # Cached as .npz: importing scikit-learn would slow the start of every fresh worker process.
    cache = source.cache_dir / "digits" / "digits_v1.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = bunch.images.astype(np.float32).reshape(-1, 1, 8, 8)
        y = bunch.target.astype(np.int64)
        atomic_savez(cache, {"x": x, "y": y})
    # scikit-learn ships one set; hold out a fixed, seeded 20 % as the test split.
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(y))
    n_test = len(y) // 5
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return RawData(x[train], y[train], x[test], y[test], [str(i) for i in range(10)], validation=0.1)


MNIST1D_SAMPLES = 5000  # the published MNIST-1D configuration: 4000 train / 1000 test


@DATASETS.register("mnist1d", "MNIST-1D (Greydanus 2020), 40-step signals, 10 classes, generated locally")
def mnist1d(source: DataSource) -> RawData:
    """Generate MNIST-1D with the package's own generator (never its download).

    The generator seeds numpy's and Python's global RNGs; their state is
    restored afterwards. The result is cached as .npz (no pickle).
    """
    cache = source.cache_dir / "mnist1d" / f"mnist1d_n{MNIST1D_SAMPLES}_seed42.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = MNIST1D_SAMPLES
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            generated = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = {k: np.asarray(generated[k]) for k in ("x", "y", "x_test", "y_test")}
        atomic_savez(cache, arrays)
    x, x_test = arrays["x"].astype(np.float32), arrays["x_test"].astype(np.float32)
    return RawData(
        x[:, None, :], arrays["y"].astype(np.int64), x_test[:, None, :], arrays["y_test"].astype(np.int64),
        [str(i) for i in range(10)], validation=0.1,
    )


def atomic_savez(path: Path, arrays: dict) -> None:
    """Write a cache file atomically. Each writer uses its own temporary file, so
    processes filling the same cache at once (two studies starting together)
    never rename each other's half-written file away; the last rename wins."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".part.npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# Download-backed (checksums are the published MD5s of the original files)
# --------------------------------------------------------------------------


def _idx_files(bases: tuple[str, ...], md5s: dict[str, tuple]) -> dict[str, RemoteFile]:
    """``{key: (filename, md5 of the .gz, md5 of the uncompressed IDX or None)}``."""
    return {
        key: RemoteFile(filename, md5, tuple(base + filename for base in bases), raw_md5)
        for key, (filename, md5, *rest) in md5s.items()
        for raw_md5 in [rest[0] if rest else None]
    }


@dataclass(frozen=True)
class IdxSpec:
    files: dict[str, RemoteFile]
    class_names: tuple[str, ...]
    aliases: tuple[str, ...]  # mirror folder names (torchvision layout)


IDX_DATASETS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        _idx_files(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            {
                # (file, md5 of the published .gz, md5 of the uncompressed IDX file)
                "x_train": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                            "6bbc9ace898e44ae57da46a324031adb"),
                "y_train": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                            "a25bea736e30d166cdddb491f175f624"),
                "x_test": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                           "2646ac647ad5339dbf082846283269ea"),
                "y_test": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                           "27ae3e4e09519cfbb04c329615203637"),
            },
        ),
        tuple(str(i) for i in range(10)),
        ("MNIST",),
    ),
    "fashion_mnist": IdxSpec(
        _idx_files(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            {
                "x_train": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                "y_train": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                "x_test": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                "y_test": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            },
        ),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("FashionMNIST", "fashion-mnist", "fashion"),
    ),
    "kmnist": IdxSpec(
        _idx_files(
            ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            {
                "x_train": ("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
                "y_train": ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
                "x_test": ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
                "y_test": ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134"),
            },
        ),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ("KMNIST",),
    ),
}


def _idx_loader(key: str):
    def factory(source: DataSource) -> RawData:
        spec = IDX_DATASETS[key]
        paths = source.fetch_all(key, spec.files, spec.aliases)
        arrays = {part: read_idx(path) for part, path in paths.items()}
        return RawData(
            arrays["x_train"][:, None], arrays["y_train"], arrays["x_test"][:, None], arrays["y_test"],
            spec.class_names, validation=5000,  # 55K/5K as in Frankle & Carbin
        )

    return factory


DATASETS.register("mnist", "MNIST handwritten digits 28x28 (download or mirror, MD5-checked)")(_idx_loader("mnist"))
DATASETS.register("fashion_mnist", "Fashion-MNIST 28x28 (download or mirror, MD5-checked)")(_idx_loader("fashion_mnist"))
DATASETS.register("kmnist", "Kuzushiji-MNIST 28x28 (download or mirror, MD5-checked)")(_idx_loader("kmnist"))

CIFAR10_FILE = RemoteFile(
    "cifar-10-binary.tar.gz",
    "c32a1d4ab5d03f1284b67883e8d87530",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@DATASETS.register("cifar10", "CIFAR-10 32x32 colour, binary version (download or mirror, MD5-checked)")
def cifar10(source: DataSource) -> RawData:
    archive = source.fetch("cifar10", CIFAR10_FILE, ("cifar-10", "CIFAR10", "cifar-10-batches-bin"))
    x_train, y_train, x_test, y_test = read_cifar10_binary(archive)
    return RawData(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, validation=5000)
