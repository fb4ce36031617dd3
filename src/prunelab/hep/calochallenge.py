"""The CaloChallenge evaluation (arXiv 2410.21611) for showers of this calorimeter.

* **High-level features**, per shower, as the challenge defines them: the energy in
  each layer, the total energy over the incident energy, the centre of energy in x
  and y per layer (the challenge's η and φ: this grid is Cartesian) and its width
  (energy-weighted RMS), and the sparsity per layer — the fraction of its voxels
  with no energy (the challenge's ``1 - mean(voxel > threshold)``). An empty layer
  has centre and width 0, as the challenge's ``+1e-16`` in the denominator gives.
* **Separation power** per feature and incident-energy range:
  ``0.5 Σ_i (h1_i - h2_i)² / (h1_i + h2_i)`` over the two histograms normalised to
  unit sum on shared bins — 0 for identical histograms, 1 for disjoint ones. Bins
  follow the challenge (40 log-spaced for energies, 100 linear otherwise), spanning
  the reference; values beyond the edges count in the edge bins, so a generator
  cannot hide mass outside the range. Two samples of one distribution still differ
  by chance: about ``(B - 1)/4 · (1/n1 + 1/n2)`` for B occupied bins (the
  multinomial expectation), reported beside each value as its *statistical floor*.
* **FPD and KPD** (Kansal et al., arXiv 2211.10295) on the high-level features,
  each divided by the reference's largest absolute value (as the paper's code does):
  the Fréchet distance of Gaussians fitted to both, measured on subsamples of
  several sizes n and extrapolated linearly in 1/n to infinite n (value ± the fit's
  standard error); and the unbiased MMD² with the polynomial kernel ``(x·y/d + 1)⁴``
  (degree 4 as in the paper's code; 3, KID's, on request), the median over batches ±
  half the 16–84 % spread. Subsamples
  are drawn without replacement: a repeated shower would bias both. Those errors
  leave out that two finite samples of one distribution differ by chance (with a
  thousand showers per side, by several quoted errors: docs/hep.md), so both are
  also computed between two random halves of the reference.
* **Classifier tests**: :mod:`.calochallenge_classifier`.

Everything is computed per incident-energy range and over all showers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PrunelabError
from .calochallenge_classifier import (MIN_EVENTS, ClassifierSettings, classifier_test, high_level_inputs,
                                       low_level_inputs)
from .geometry import CALORIMETER, Calorimeter
from .metrics import default_energy_edges, energy_masks

LINEAR_BINS, LOG_BINS = 100, 40  # the challenge's histograms


def feature_names(calorimeter: Calorimeter = CALORIMETER) -> list[str]:
    layers = [layer.index for layer in calorimeter.layers]
    return ([f"E_layer_{i}" for i in layers] + ["E_tot/E_inc"] + [f"EC_x_{i}" for i in layers]
            + [f"EC_y_{i}" for i in layers] + [f"width_x_{i}" for i in layers] + [f"width_y_{i}" for i in layers]
            + [f"sparsity_{i}" for i in layers])


def feature_label(name: str) -> str:
    """How a physicist reads the column ``name``."""
    if name == "E_tot/E_inc":
        return "E_tot / E_inc"
    kind, layer = name.rsplit("_", 1)
    return {"E_layer": f"energy in layer {layer} (MeV)", "EC_x": f"centre of energy in x (η), layer {layer} (mm)",
            "EC_y": f"centre of energy in y (φ), layer {layer} (mm)",
            "width_x": f"width in x (η), layer {layer} (mm)", "width_y": f"width in y (φ), layer {layer} (mm)",
            "sparsity": f"sparsity (fraction of empty voxels), layer {layer}"}[kind]


def high_level_features(showers, calorimeter: Calorimeter = CALORIMETER, threshold: float = 0.0):
    """The challenge's high-level features, one row per shower (a pandas table; MeV and mm).

    ``threshold`` (MeV): a voxel counts as filled for the sparsity only above it (the challenge's default: 0).
    """
    import pandas as pd

    n = len(showers)
    columns: dict[str, np.ndarray] = {}
    energies, centres, widths, sparsity = [], {"x": [], "y": []}, {"x": [], "y": []}, []
    for layer, image in zip(calorimeter.layers, showers.layers):
        img = image.astype(np.float64).reshape(n, *layer.shape)
        e = img.sum(axis=(1, 2))
        cx, cy = layer.centres()
        for axis, profile, coordinate in (("x", img.sum(axis=2), cx), ("y", img.sum(axis=1), cy)):
            mean = profile @ coordinate / (e + 1e-16)
            square = profile @ coordinate**2 / (e + 1e-16)
            centres[axis].append(mean)
            widths[axis].append(np.sqrt(np.clip(square - mean**2, 0.0, None)))
        energies.append(e)
        sparsity.append(1.0 - (img.reshape(n, -1) > threshold).mean(axis=1))
    names = iter(feature_names(calorimeter))
    for values in energies:
        columns[next(names)] = values
    columns[next(names)] = np.sum(energies, axis=0) / (1000.0 * np.asarray(showers.energy, dtype=np.float64))
    for group in (centres["x"], centres["y"], widths["x"], widths["y"], sparsity):
        for values in group:
            columns[next(names)] = values
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------
# Histograms and separation power
# --------------------------------------------------------------------------


def feature_bins(name: str, reference: np.ndarray, linear: int = LINEAR_BINS, log: int = LOG_BINS) -> np.ndarray:
    """Shared bin edges for ``name``, spanning the reference: log-spaced for layer energies (from the smallest
    non-zero deposit), linear otherwise (over the reference's 0.1–99.9 % range)."""
    reference = np.asarray(reference, dtype=np.float64)
    positive = reference[reference > 0]
    if name.startswith("E_layer") and positive.size and positive.max() > positive.min():
        return np.geomspace(np.quantile(positive, 0.001), positive.max(), log + 1)
    low, high = np.quantile(reference, [0.001, 0.999])
    if high <= low:
        low, high = reference.min(), reference.max()
    if high <= low:  # a constant reference: one bin around it
        return np.array([low - 0.5, low + 0.5]) if low == 0 else np.array([low - abs(low) / 2, low + abs(low) / 2])
    return np.linspace(low, high, linear + 1)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin, values beyond the edges counted in the edge bins."""
    values = np.asarray(values, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1).astype(np.float64)


def separation_power(counts_1: np.ndarray, counts_2: np.ndarray) -> float:
    """``0.5 Σ (h1 - h2)² / (h1 + h2)`` of two histograms on the same bins, each normalised to unit sum."""
    h1, h2 = np.asarray(counts_1, dtype=np.float64), np.asarray(counts_2, dtype=np.float64)
    if h1.shape != h2.shape or h1.sum() <= 0 or h2.sum() <= 0:
        raise PrunelabError(f"separation power needs two non-empty histograms on the same bins, got {h1.shape} "
                            f"with {h1.sum():g} entries and {h2.shape} with {h2.sum():g}")
    h1, h2 = h1 / h1.sum(), h2 / h2.sum()
    total = h1 + h2
    filled = total > 0
    return float(0.5 * np.sum((h1[filled] - h2[filled]) ** 2 / total[filled]))


def separation_floor(counts_1: np.ndarray, counts_2: np.ndarray) -> float:
    """The separation power two samples of these sizes show by chance: ``(B - 1)/4 · (1/n1 + 1/n2)``, B the bins
    either fills (the expectation for one multinomial, to first order)."""
    c1, c2 = np.asarray(counts_1), np.asarray(counts_2)
    occupied = int(np.count_nonzero(c1 + c2))
    return max(occupied - 1, 0) / 4.0 * (1.0 / c1.sum() + 1.0 / c2.sum())


# --------------------------------------------------------------------------
# FPD and KPD (arXiv 2211.10295)
# --------------------------------------------------------------------------


def frechet_distance(mu_1, cov_1, mu_2, cov_2) -> float:
    """``|μ1 - μ2|² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^½)``: the Fréchet (2-Wasserstein²) distance of two Gaussians.

    ``Tr (Σ1 Σ2)^½`` is taken as ``Σ √λ`` over the eigenvalues of the symmetric ``Σ1^½ Σ2 Σ1^½`` (similar to
    ``Σ1 Σ2``), which stays real and stable when a covariance is singular — a feature constant in an energy
    range, such as the sparsity of a layer the showers never reach."""
    mu_1, mu_2 = np.atleast_1d(mu_1).astype(np.float64), np.atleast_1d(mu_2).astype(np.float64)
    cov_1, cov_2 = np.atleast_2d(cov_1).astype(np.float64), np.atleast_2d(cov_2).astype(np.float64)
    values, vectors = np.linalg.eigh(cov_1)
    root_1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_1 @ cov_2 @ root_1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu_1 - mu_2
    return float(diff @ diff + np.trace(cov_1) + np.trace(cov_2) - 2.0 * trace_root)


def _scaled(reference: np.ndarray, generated: np.ndarray, normalise: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(reference, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise PrunelabError(f"FPD/KPD need two (events, features) arrays with the same features, got {x.shape} "
                            f"and {y.shape}")
    if normalise:
        scale = np.abs(x).max(axis=0)
        scale[scale == 0] = 1.0
        x, y = x / scale, y / scale
    return x, y


def fpd(reference: np.ndarray, generated: np.ndarray, *, min_samples: int | None = None,
        max_samples: int | None = None, num_batches: int = 20, num_points: int = 10, normalise: bool = True,
        seed: int = 0) -> tuple[float, float]:
    """Fréchet physics distance extrapolated to infinite sample size: (value, standard error).

    At ``num_points`` sizes n evenly spaced in 1/n between ``min_samples`` and ``max_samples`` (default: the
    smaller sample, at most 50,000, and a fifth of it but at least 10 per feature: the bias is linear in 1/n
    only well above the number of features), the mean Fréchet distance of ``num_batches`` pairs of
    subsamples; a least-squares line in 1/n, bounded below by 0 as in the paper's code, gives the value at
    1/n = 0.
    """
    from scipy.optimize import curve_fit

    x, y = _scaled(reference, generated, normalise)
    largest = min(len(x), len(y))
    max_samples = min(largest, 50_000) if max_samples is None else int(max_samples)
    min_samples = max(max_samples // 5, 10 * x.shape[1]) if min_samples is None else int(min_samples)
    if not x.shape[1] + 2 <= min_samples <= max_samples <= largest:
        raise PrunelabError(f"FPD subsample sizes {min_samples}–{max_samples}: need {x.shape[1] + 2} ≤ min ≤ max "
                            f"≤ {largest} (the smaller sample)")
    sizes = np.unique((1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype(np.int64))
    rng = np.random.default_rng(seed)
    means = []
    for n in sizes:
        values = []
        for _ in range(num_batches):
            a = x[rng.choice(len(x), n, replace=False)]
            b = y[rng.choice(len(y), n, replace=False)]
            values.append(frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
        means.append(np.mean(values))
    if len(sizes) < 2:
        return float(means[0]), float("nan")
    (intercept, _), covariance = curve_fit(lambda inv, a, b: a + b * inv, 1.0 / sizes, np.asarray(means),
                                           bounds=([0.0, 0.0], [np.inf, np.inf]))
    return float(intercept), float(np.sqrt(covariance[0, 0]))


KERNEL_DEGREE = 4  # the paper's code (jetnet's kpd) uses degree 4; KID, which KPD follows, uses 3


def _polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int) -> np.ndarray:
    t = a @ b.T / a.shape[1] + 1.0
    out = t.copy()
    for _ in range(degree - 1):  # repeated products: several times faster than t ** degree, which goes through pow
        out *= t
    return out


def _kernel_sum(a: np.ndarray, b: np.ndarray, degree: int, block: int = 1024) -> float:
    """Σ_ij k(a_i, b_j), a block of rows at a time: memory stays flat for batches of thousands."""
    return float(sum(_polynomial_kernel(a[i:i + block], b, degree).sum() for i in range(0, len(a), block)))


def mmd_squared(x: np.ndarray, y: np.ndarray, degree: int = KERNEL_DEGREE) -> float:
    """The unbiased MMD² of two samples with the polynomial kernel ``(x·y/d + 1)^degree`` (no self-pairs)."""
    m, n = len(x), len(y)
    d = x.shape[1]
    self_x, self_y = ((np.einsum("ij,ij->i", v, v) / d + 1.0) ** degree for v in (x, y))  # k(v_i, v_i)
    return ((_kernel_sum(x, x, degree) - self_x.sum()) / (m * (m - 1))
            + (_kernel_sum(y, y, degree) - self_y.sum()) / (n * (n - 1)) - 2.0 * _kernel_sum(x, y, degree) / (m * n))


def kpd(reference: np.ndarray, generated: np.ndarray, *, num_batches: int = 10, batch_size: int | None = None,
        degree: int = KERNEL_DEGREE, normalise: bool = True, seed: int = 0) -> tuple[float, float]:
    """Kernel physics distance: median of the unbiased MMD² over ``num_batches`` pairs of subsamples of
    ``batch_size`` (default: half the smaller sample, at most 5,000, so that batches differ), and half the
    16–84 % spread of the batches."""
    x, y = _scaled(reference, generated, normalise)
    size = min(min(len(x), len(y)) // 2, 5000) if batch_size is None else int(batch_size)
    if not 2 <= size <= min(len(x), len(y)):
        raise PrunelabError(f"KPD batch size {size}: need 2 ≤ size ≤ {min(len(x), len(y))} (the smaller sample)")
    if int(degree) != degree or degree < 1:
        raise PrunelabError(f"KPD kernel degree {degree!r}: must be a positive integer")
    rng = np.random.default_rng(seed)
    values = np.array([mmd_squared(x[rng.choice(len(x), size, replace=False)],
                                   y[rng.choice(len(y), size, replace=False)], int(degree))
                       for _ in range(num_batches)])
    low, high = np.percentile(values, [16.275, 83.725])
    return float(np.median(values)), float((high - low) / 2)


def distance_features(table, energy) -> np.ndarray:
    """The high-level features as FPD/KPD see them: layer energies as fractions of the incident energy
    (``energy``, GeV), so showers of all energies share one scale; the rest as they are."""
    out = table.copy()
    incident = 1000.0 * np.asarray(energy, dtype=np.float64)
    for column in [c for c in out.columns if c.startswith("E_layer")]:
        out[column] = out[column].to_numpy() / incident
    return out.to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------


@dataclass
class Evaluation:
    names: tuple[str, str]  # reference, generated
    events: tuple[int, int]
    energy_edges: tuple[float, ...]
    separation: "object"  # pandas: feature, energy_range, separation_power, floor, events on each side
    distances: "object"  # pandas: energy_range, events, fpd, fpd_error, kpd, kpd_error
    classifiers: dict = field(default_factory=dict)  # "low-level"/"high-level" -> calochallenge_classifier result
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"reference": self.names[0], "generated": self.names[1], "events": list(self.events),
                "energy_edges_GeV": list(self.energy_edges), "settings": self.settings,
                "separation_power": self.separation.to_dict(orient="records"),
                "fpd_kpd": self.distances.to_dict(orient="records"), "classifiers": self.classifiers}


def _check(showers, side: str) -> None:
    energy = np.asarray(showers.energy, dtype=np.float64)
    if len(showers) < 2 * MIN_EVENTS:
        raise PrunelabError(f"the {side} sample has {len(showers)} showers; the evaluation needs at least "
                            f"{2 * MIN_EVENTS}")
    bad = np.flatnonzero(~np.isfinite(energy) | (energy <= 0))
    if bad.size:
        raise PrunelabError(f"{side} shower {int(bad[0])} has incident energy {float(energy[bad[0]])!r} GeV; "
                            "it must be positive")


def separation_table(ref_table, gen_table, ref_masks, gen_masks):
    import pandas as pd

    rows = []
    for (label, in_r), (_, in_g) in zip(ref_masks, gen_masks):
        if in_r.sum() < MIN_EVENTS or in_g.sum() < MIN_EVENTS:
            continue  # too few showers in this range to compare distributions
        for name in ref_table.columns:
            a, b = ref_table[name].to_numpy()[in_r], gen_table[name].to_numpy()[in_g]
            edges = feature_bins(name, a)
            ca, cb = histogram(a, edges), histogram(b, edges)
            rows.append({"feature": name, "energy_range": label, "separation_power": separation_power(ca, cb),
                         "floor": separation_floor(ca, cb), "reference_events": int(in_r.sum()),
                         "generated_events": int(in_g.sum()), "reference_mean": float(a.mean()),
                         "generated_mean": float(b.mean())})
    return pd.DataFrame(rows)


def distance_table(ref_x, gen_x, ref_masks, gen_masks, *, seed: int = 0, fpd_options=None, kpd_options=None):
    """FPD and KPD per energy range, and the same between two random halves of the reference: the quoted
    errors are the extrapolation's and the batches' only, while two finite samples of one distribution also
    differ by chance — the reference split shows how much, at half the showers."""
    import pandas as pd

    enough = 20 * ref_x.shape[1]  # subsamples of 10 per feature and up to twice that
    sizes = ("min_samples", "max_samples", "batch_size")  # fitted to the full samples, not to halves
    split_fpd = {k: v for k, v in (fpd_options or {}).items() if k not in sizes}
    split_kpd = {k: v for k, v in (kpd_options or {}).items() if k not in sizes}
    rng = np.random.default_rng(seed)
    rows = []
    for (label, in_r), (_, in_g) in zip(ref_masks, gen_masks):
        a, b = ref_x[in_r], gen_x[in_g]
        row = {"energy_range": label, "reference_events": len(a), "generated_events": len(b),
               "fpd": None, "fpd_error": None, "kpd": None, "kpd_error": None,
               "fpd_reference_split": None, "fpd_reference_split_error": None,
               "kpd_reference_split": None, "kpd_reference_split_error": None}
        if min(len(a), len(b)) >= enough:
            row["fpd"], row["fpd_error"] = fpd(a, b, seed=seed, **(fpd_options or {}))
            row["kpd"], row["kpd_error"] = kpd(a, b, seed=seed, **(kpd_options or {}))
        if len(a) // 2 >= enough:
            order = rng.permutation(len(a))
            one, two = a[order[: len(a) // 2]], a[order[len(a) // 2: 2 * (len(a) // 2)]]
            row["fpd_reference_split"], row["fpd_reference_split_error"] = fpd(one, two, seed=seed, **split_fpd)
            row["kpd_reference_split"], row["kpd_reference_split_error"] = kpd(one, two, seed=seed, **split_kpd)
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(reference, generated, *, energy_edges=None, seed: int = 0,
             classifiers: tuple[str, ...] = ("low-level", "high-level"), classifier_settings=None,
             names: tuple[str, str] = ("reference", "generated"),
             fpd_options: dict | None = None, kpd_options: dict | None = None) -> Evaluation:
    """The CaloChallenge evaluation of ``generated`` showers against ``reference`` ones (see the module docstring):
    separation powers, FPD/KPD and the classifier tests named in ``classifiers`` (``()``: none), per
    incident-energy range (``energy_edges`` in GeV; default :func:`default_energy_edges`) and over all showers."""
    _check(reference, "reference")
    _check(generated, "generated")
    edges = tuple(float(e) for e in (energy_edges or default_energy_edges(reference.energy, generated.energy)))
    ref_masks, gen_masks = energy_masks(reference.energy, edges), energy_masks(generated.energy, edges)
    ref_table, gen_table = high_level_features(reference), high_level_features(generated)
    separation = separation_table(ref_table, gen_table, ref_masks, gen_masks)
    distances = distance_table(distance_features(ref_table, reference.energy),
                               distance_features(gen_table, generated.energy), ref_masks, gen_masks,
                               seed=seed, fpd_options=fpd_options, kpd_options=kpd_options)
    settings = {"seed": seed, "bins": {"linear": LINEAR_BINS, "log": LOG_BINS},
                "fpd": fpd_options or {}, "kpd": kpd_options or {}}
    inputs = {"low-level": (low_level_inputs, False), "high-level": (high_level_inputs, True)}
    unknown = [kind for kind in classifiers if kind not in inputs]
    if unknown:
        raise PrunelabError(f"classifier {unknown[0]!r}: choose from {', '.join(inputs)}")
    results = {}
    if classifiers:
        chosen = classifier_settings or ClassifierSettings(seed=seed)
        settings["classifier"] = chosen.as_dict()
        for kind in classifiers:
            make, standardise = inputs[kind]
            results[kind] = classifier_test(make(reference, ref_table), make(generated, gen_table), reference.energy,
                                            generated.energy, edges, chosen, standardise=standardise)
    return Evaluation(names, (len(reference), len(generated)), edges, separation, distances, results, settings)
