"""One shower generator scored the CaloChallenge way: fidelity, generation time, parameter counts.

Works for any generator (a module with ``generate(energy, rng)``, see :mod:`.generation`): the GAN, the
flow, your own.

* :func:`score_model` — one shower per reference incident energy (fixed noise seed), the CaloChallenge
  evaluation (:func:`.calochallenge.evaluate`, both classifiers) against the reference, summarised as a
  compact JSON-able dict (:func:`summarise`);
* :func:`generation_timing` — seconds per shower at batch sizes 1, 100 and 10,000, as the challenge
  reports them: median and range over repeats, a warm-up call left out, the torch thread count recorded;
* :func:`parameter_counts` — the generator's parameters and those its masks leave (a model with an
  auxiliary network names its generator in ``sparsity_scope``: a GAN's critic does not count).
"""

from __future__ import annotations

import math
import os
import platform
import time
from contextlib import contextmanager

import numpy as np

from ..errors import PrunelabError

CLASSIFIERS = ("low-level", "high-level")
BATCH_SIZES = (1, 100, 10000)  # the challenge's batch sizes for generation time


def _number(value) -> float | None:
    """A float, or None for a missing or non-finite value (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _classifier_summary(result: dict) -> dict:
    low, high = result["auc_interval"]
    return {"auc": _number(result["auc"]), "auc_low": _number(low), "auc_high": _number(high),
            "jsd": _number(result["jsd"]), "best_epoch": int(result["best_epoch"]),
            "epochs_trained": int(result["epochs_trained"]), "test_events": int(result["test_events"]),
            "by_energy": [{"energy_range": str(row["energy_range"]), "auc": _number(row["auc"]),
                           "auc_low": _number(row["auc_low"]), "auc_high": _number(row["auc_high"]),
                           "test_events": int(row["test_events"])} for row in result["by_energy"]]}


def _separation_summary(separation) -> dict:
    """The largest separation power over all energies and its feature, the median over features, and how many
    feature × energy-range cells lie above twice their statistical floor (chance alone puts few there)."""
    overall = separation[separation["energy_range"] == "all"]
    if overall.empty:
        return {"largest": None, "largest_feature": None, "largest_floor": None, "median": None,
                "cells_above_twice_floor": 0, "cells": int(len(separation))}
    worst = overall.loc[overall["separation_power"].idxmax()]
    above = separation["separation_power"].to_numpy() > 2 * separation["floor"].to_numpy()
    return {"largest": _number(worst["separation_power"]), "largest_feature": str(worst["feature"]),
            "largest_floor": _number(worst["floor"]), "median": _number(overall["separation_power"].median()),
            "cells_above_twice_floor": int(above.sum()), "cells": int(len(separation))}


def summarise(evaluation) -> dict:
    """The numbers of a :class:`~.calochallenge.Evaluation` a comparison of many generators needs: each
    classifier's AUC with its interval, JSD and per-energy-range AUCs; FPD and KPD (± errors, and between
    two halves of the reference) over all showers; the separation-power summary."""
    first = evaluation.distances.iloc[0]
    if first["energy_range"] != "all":  # evaluate() puts "all" first; a changed layout must not go unseen
        raise PrunelabError(f"the evaluation's first distance row is {first['energy_range']!r}, not 'all'")
    distances = {key: _number(first[key]) for key in
                 ("fpd", "fpd_error", "kpd", "kpd_error", "fpd_reference_split", "fpd_reference_split_error",
                  "kpd_reference_split", "kpd_reference_split_error")}
    return {"events": [int(n) for n in evaluation.events],
            "energy_edges_GeV": [float(e) for e in evaluation.energy_edges],
            "classifiers": {kind: _classifier_summary(evaluation.classifiers[kind]) for kind in CLASSIFIERS
                            if kind in evaluation.classifiers},
            "distances": distances, "separation": _separation_summary(evaluation.separation)}


def score_model(model, reference, *, seed: int = 0, classifier_settings=None, energy_edges=None,
                fpd_options: dict | None = None, kpd_options: dict | None = None) -> dict:
    """Generate one shower per incident energy of ``reference`` (noise seed ``seed``) and evaluate them against
    it the CaloChallenge way (both classifiers); :func:`summarise`'s dict, with the seconds each part took."""
    from . import calochallenge
    from .calochallenge_classifier import ClassifierSettings
    from .generation import sample
    from .metrics import default_energy_edges

    began = time.perf_counter()
    generated = sample(model, reference.energy, seed=seed, particle=reference.particle)
    sampled = time.perf_counter()
    evaluation = calochallenge.evaluate(
        reference, generated, seed=seed, classifiers=CLASSIFIERS,
        classifier_settings=classifier_settings or ClassifierSettings(seed=seed),
        energy_edges=energy_edges or default_energy_edges(reference.energy), names=("reference", "generated"),
        fpd_options=fpd_options, kpd_options=kpd_options)
    out = summarise(evaluation)
    out["seconds"] = {"sampling": sampled - began, "evaluation": time.perf_counter() - sampled}
    return out


def simulator_generator(particle: str = "eplus", scale: tuple[int, float] | None = None):
    """The simulator posing as a generator (``generate(energy, rng)``: one simulation per requested energy,
    seeded from ``rng``): what a perfect generator scores with given settings — the floor of every score —
    and, with ``scale = (layer, factor)`` multiplying one layer's cells, a generator with a planted flaw."""
    import torch

    from .geometry import CALORIMETER
    from .simulator import Showers, simulate

    edges = np.cumsum([0] + [int(np.prod(layer.shape)) for layer in CALORIMETER.layers])

    class SimulatorGenerator(torch.nn.Module):
        def generate(self, energy_gev, rng):
            seeds = torch.randint(0, 2**62, (len(energy_gev),), generator=rng).tolist()
            showers = Showers.concat([simulate(particle, 1, energy=float(e), seed=s, threads=1)
                                      for e, s in zip(energy_gev.tolist(), seeds)])
            cells = showers.flat().copy()
            if scale is not None:
                layer, factor = scale
                cells[:, edges[layer]:edges[layer + 1]] *= np.float32(factor)
            return torch.from_numpy(cells), torch.from_numpy(showers.overflow.copy())

    return SimulatorGenerator()


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


def parameter_counts(model) -> dict:
    """Parameters of the generator (``model.sparsity_scope``'s submodule when set, else the whole model):
    all of them (weights and biases), those its pruning masks leave, and the prunable weights (Linear and
    Conv, what sparsity is quoted on) with those kept."""
    from ..pruning.masks import get_masks, sparsity_report

    scope = getattr(model, "sparsity_scope", None) or None
    try:
        module = model.get_submodule(scope) if scope else model
    except AttributeError:
        raise PrunelabError(f"{type(model).__name__}.sparsity_scope names {scope!r}, which it does not have") from None
    total = sum(p.numel() for p in module.parameters())  # a pruned weight counts once, as weight_orig
    inside = (lambda name: name.startswith(scope + ".")) if scope else (lambda name: True)
    masked_off = sum(int((~keep).sum()) for name, keep in get_masks(model).items() if inside(name))
    weights = sparsity_report(model, scope=scope)
    return {"scope": scope, "parameters": int(total), "parameters_remaining": int(total - masked_off),
            "weights": int(weights.total), "weights_remaining": int(weights.kept),
            "weight_sparsity": float(weights.sparsity)}


# --------------------------------------------------------------------------
# Generation time
# --------------------------------------------------------------------------


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` for the block (None: as they are), restored after."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise PrunelabError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def machine() -> dict:
    """What a timing depends on besides the model: the CPU, its count, torch's version."""
    import torch

    return {"system": platform.system(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__.split("+")[0]}


def generation_timing(model, batch_sizes=BATCH_SIZES, *, repeats: int = 5, min_showers: int = 100,
                      max_batch: int | None = None, threads: int | None = 1, seed: int = 0,
                      energy_range: tuple[float, float] = (1.0, 100.0)) -> dict:
    """Seconds per shower at each batch size, as the CaloChallenge reports generation time.

    Each repeat generates ``max(batch, min_showers)`` showers (rounded up to whole batches; a batch of 1 is
    timed over ``min_showers`` calls) at incident energies uniform in ``energy_range``, through
    :func:`.generation.sample` (noise, generation and the showers as arrays); one untimed call first warms
    up. A pruned model is timed with its masks made permanent, as it would be deployed: zeros in dense
    weights (no sparse kernels; unstructured sparsity is not expected to be faster). ``max_batch`` caps the
    batch size (tests; a small machine) and says so in the result."""
    from ..pruning.masks import clone_model, remove_pruning
    from .generation import sample

    if repeats < 1 or min_showers < 1:
        raise PrunelabError(f"generation timing needs repeats ≥ 1 and min_showers ≥ 1, got {repeats}, {min_showers}")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1 or (max_batch is not None and max_batch < 1):
        raise PrunelabError(f"batch sizes must be positive, got {batch_sizes} (max_batch {max_batch})")
    deployed = remove_pruning(clone_model(model))
    rng = np.random.default_rng(seed)
    rows = []
    with torch_threads(threads) as used_threads:
        for batch in sizes:
            used = min(batch, max_batch) if max_batch else batch
            showers = used * math.ceil(max(used, min_showers) / used)
            energies = rng.uniform(*energy_range, showers)
            sample(deployed, energies, seed=seed, batch=used)  # warm-up: first-call allocations, lazy imports
            per_shower = []
            for _ in range(repeats):
                began = time.perf_counter()
                sample(deployed, energies, seed=seed, batch=used)
                per_shower.append((time.perf_counter() - began) / showers)
            rows.append({"batch": batch, "batch_used": used, "showers": showers, "repeats": repeats,
                         "median": float(np.median(per_shower)), "min": float(min(per_shower)),
                         "max": float(max(per_shower))})
    return {"threads": int(used_threads), "load_average": float(os.getloadavg()[0]) if hasattr(os, "getloadavg")
            else None, "machine": machine(), "batches": rows}
