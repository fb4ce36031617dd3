"""A generator study's pruned generators scored the CaloChallenge way, cached in the store, and averaged
over seeds.

:func:`score_study` scores every finished studied state but the checkpoints (the trained generator, the
dense control, each IMP round, each one-shot target; :func:`.gan_study.gan_points`) against the first
``events`` held-out showers of the study's dataset: :func:`.generator_scores.score_model`, the parameter
counts and, unless turned off, :func:`.generator_scores.generation_timing`.

**Cache.** Each result is a probe record of its state (``probes/<state>/<identity>.json``, written
atomically with the digest of its content, as the store keeps every measurement of a state): its identity
is the state, the kind of score, :data:`FORMAT` and the settings, so the same settings never compute twice,
other settings get records of their own, and a crash loses at most the state being scored. ``prunelab
verify`` checks these records and quarantine moves them with their state. Timings are separate records
whose identity also names the machine (CPU, count, torch version): another machine measures again.

**A record read back is data.** Beyond the store's own checks (digest, identity) its content is validated
field by field (:class:`FidelityRecord`, :class:`TimingRecord`: format, keys, types, ranges, and the
number of showers it claims). A record failing any check is **recomputed and replaced**, with a note
naming the file and the reason: the computation is deterministic, so this costs time, never a different
answer (in a read-only store the result is used without being written).

:func:`aggregate` averages the scores of one studied point over its seeds: the mean of each metric and its
95 % t-interval (``scipy.stats.t``), no interval where there is one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import PrunelabError, StoreError
from .calochallenge_classifier import ClassifierSettings
from .generator_scores import BATCH_SIZES, CLASSIFIERS

FORMAT = 1
FIDELITY_PROBE = "calochallenge-score"
TIMING_PROBE = "generation-time"
MIN_EVENTS = 400  # FPD/KPD need 20 showers per high-level feature (19): below that they are not computed
KIND_ORDER = ("trained", "dense_control", "imp", "one_shot")


@dataclass(frozen=True)
class ScoreSettings:
    """What a score depends on (all of it is in the cache key)."""

    events: int = 10000  # the first `events` held-out showers of the study's dataset
    seed: int = 0  # the generated showers' noise and the evaluation's subsamples
    classifier: Optional[ClassifierSettings] = None  # default: the challenge's network, seeded with `seed`
    fpd: dict = field(default_factory=dict)  # options of calochallenge.fpd / kpd
    kpd: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.classifier is None:
            object.__setattr__(self, "classifier", ClassifierSettings(seed=self.seed))
        if self.events < MIN_EVENTS:
            raise PrunelabError(f"scoring needs at least {MIN_EVENTS} showers (FPD and KPD need 20 per high-level "
                                f"feature), got {self.events}")

    def identity(self) -> dict:
        return {"events": int(self.events), "seed": int(self.seed), "classifier": self.classifier.as_dict(),
                "fpd": dict(self.fpd), "kpd": dict(self.kpd)}


@dataclass(frozen=True)
class TimingSettings:
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    repeats: int = 5
    min_showers: int = 100
    max_batch: Optional[int] = None  # caps the largest batch (tests, small machines); recorded
    threads: Optional[int] = 1  # torch threads while generating

    def identity(self) -> dict:
        from .generator_scores import machine

        return {"batch_sizes": [int(b) for b in self.batch_sizes], "repeats": int(self.repeats),
                "min_showers": int(self.min_showers), "max_batch": self.max_batch, "threads": self.threads,
                "machine": machine()}


# --------------------------------------------------------------------------
# What a cached record must hold
# --------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _RangeAUC(_Strict):
    energy_range: str
    auc: Optional[Probability]
    auc_low: Optional[Probability]
    auc_high: Optional[Probability]
    test_events: int = Field(ge=0)


class _Classifier(_Strict):
    auc: Probability
    auc_low: Probability
    auc_high: Probability
    jsd: float = Field(le=1.0)  # slightly negative when calibration noise beats no information
    best_epoch: int = Field(ge=1)
    epochs_trained: int = Field(ge=1)
    test_events: int = Field(ge=1)
    by_energy: list[_RangeAUC]


class _Distances(_Strict):
    fpd: Optional[float] = Field(ge=0.0)
    fpd_error: Optional[float]
    kpd: Optional[float]
    kpd_error: Optional[float]
    fpd_reference_split: Optional[float] = Field(ge=0.0)
    fpd_reference_split_error: Optional[float]
    kpd_reference_split: Optional[float]
    kpd_reference_split_error: Optional[float]


class _Separation(_Strict):
    largest: Optional[float] = Field(ge=0.0, le=1.0)
    largest_feature: Optional[str]
    largest_floor: Optional[float] = Field(ge=0.0)
    median: Optional[float] = Field(ge=0.0, le=1.0)
    cells_above_twice_floor: int = Field(ge=0)
    cells: int = Field(ge=0)


class _Fidelity(_Strict):
    events: list[int]
    energy_edges_GeV: list[float]
    classifiers: dict[Literal["low-level", "high-level"], _Classifier]
    distances: _Distances
    separation: _Separation
    seconds: dict[str, float]


class _Parameters(_Strict):
    scope: Optional[str]
    parameters: int = Field(ge=0)
    parameters_remaining: int = Field(ge=0)
    weights: int = Field(ge=0)
    weights_remaining: int = Field(ge=0)
    weight_sparsity: Probability


class FidelityRecord(_Strict):
    format: Literal[1]
    fidelity: _Fidelity
    parameters: _Parameters


class _Batch(_Strict):
    batch: int = Field(ge=1)
    batch_used: int = Field(ge=1)
    showers: int = Field(ge=1)
    repeats: int = Field(ge=1)
    median: float = Field(gt=0.0)
    min: float = Field(gt=0.0)
    max: float = Field(gt=0.0)


class TimingRecord(_Strict):
    format: Literal[1]
    threads: int = Field(ge=1)
    load_average: Optional[float]
    machine: dict[str, Optional[str | int]]
    batches: list[_Batch]


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "record"
    return f"{where}: {first.get('msg', 'invalid')}"


def check_fidelity_record(result, events: int) -> str | None:
    """Why a cached score cannot be used (None: it can)."""
    try:
        record = FidelityRecord.model_validate(result)
    except ValidationError as exc:
        return _problem(exc)
    if record.fidelity.events != [events, events]:
        return f"it scores {record.fidelity.events} showers, not {events}"
    if set(record.fidelity.classifiers) != set(CLASSIFIERS):
        return f"it holds classifiers {sorted(record.fidelity.classifiers)}, not {list(CLASSIFIERS)}"
    p = record.parameters
    if p.parameters_remaining > p.parameters or p.weights_remaining > p.weights:
        return "it counts more parameters remaining than there are"
    return None


def check_timing_record(result, batch_sizes) -> str | None:
    try:
        record = TimingRecord.model_validate(result)
    except ValidationError as exc:
        return _problem(exc)
    if [b.batch for b in record.batches] != [int(b) for b in batch_sizes]:
        return f"it times batches {[b.batch for b in record.batches]}, not {list(batch_sizes)}"
    return None


# --------------------------------------------------------------------------
# Scoring a study
# --------------------------------------------------------------------------


@dataclass
class StudyScores:
    rows: "object"  # pandas: one row per scored state (gan_points' columns and the flattened scores)
    computed: int = 0  # scores computed now (fidelity and timing records)
    reused: int = 0  # read back from the store
    notes: list[str] = field(default_factory=list)  # records recomputed, results not cached, and why


def studied_points(results):
    """The finished studied states that are scored (all but checkpoints), in a stable order; PrunelabError
    when the store holds no generator study or none of its states has finished."""
    from .gan_study import gan_points, is_gan_store

    root = results.store.root
    if not is_gan_store(results):
        raise PrunelabError(f"{root}: not a generator study store (no study record; `prunelab calo train SPEC` "
                            "makes one)")
    points = gan_points(results)
    points = points[points["kind"] != "checkpoint"] if not points.empty else points
    if points.empty:
        raise PrunelabError(f"{root}: no finished generator to score yet (only checkpoints, or nothing, has "
                            "finished: run the study first)")
    order = {kind: k for k, kind in enumerate(KIND_ORDER)}
    return points.assign(_order=points["kind"].map(order).fillna(len(order)), _round=points["round"].fillna(0),
                         _target=points["target"].fillna(0)).sort_values(
        ["study", "seed", "_order", "_round", "_target"]).drop(columns=["_order", "_round", "_target"]).reset_index(
        drop=True)


class _Cache:
    """Probe records of the scored states: read through the reader's store, written through a writable one
    (opened on first write; a read-only store computes without keeping)."""

    def __init__(self, results, notes: list[str]):
        self.results, self.notes, self._writer, self._unwritable = results, notes, None, None

    def key(self, state: str, probe: str, params: dict) -> tuple[dict, str]:
        from ..experiment.store import probe_identity

        identity = {"state": state, "probe": probe, "version": FORMAT, "params": params}
        return identity, probe_identity(identity)

    def read(self, state: str, probe_hash: str, check: Callable[[object], str | None]):
        store = self.results.store
        path = store.probe_path(state, probe_hash)
        try:
            record = store.probe(state, probe_hash)
        except StoreError as exc:
            self.notes.append(f"{str(exc).split(';')[0]}; scored again")
            return None
        if record is None:
            return None
        problem = check(record.get("result"))
        if problem is not None:
            self.notes.append(f"{path}: cached score not usable ({problem}); scored again")
            return None
        return record["result"]

    def write(self, state: str, probe_hash: str, identity: dict, label: str, result: dict, seconds: float) -> None:
        from ..experiment.store import Store

        if self._unwritable is None and self._writer is None:
            try:
                self._writer = Store(self.results.store.root, create=False)
                if self._writer.read_only:
                    self._unwritable, self._writer = "the store is read-only here", None
            except StoreError as exc:
                self._unwritable = str(exc)
            if self._unwritable:
                self.notes.append(f"{self.results.store.root}: scores are not cached ({self._unwritable})")
        if self._writer is not None:
            self._writer.write_probe(state, probe_hash, {"probe": identity, "label": label, "result": result,
                                                         "seconds": seconds})


def _flat(point: dict, fidelity: dict, timing: dict | None) -> dict:
    """One row: the point's columns and every score a comparison reads, flattened."""
    row = {key: point.get(key) for key in ("study", "label", "kind", "seed", "round", "target", "sparsity", "hash")}
    fid = fidelity["fidelity"]
    for kind in CLASSIFIERS:
        c = fid["classifiers"][kind]
        prefix = kind.replace("-", "_")
        row.update({f"{prefix}_auc": c["auc"], f"{prefix}_auc_low": c["auc_low"], f"{prefix}_auc_high": c["auc_high"],
                    f"{prefix}_jsd": c["jsd"]})
        for r in c["by_energy"]:
            row[f"{prefix}_auc[{r['energy_range']}]"] = r["auc"]
    row.update(fid["distances"])
    sep = fid["separation"]
    row.update({"separation_largest": sep["largest"], "separation_largest_feature": sep["largest_feature"],
                "separation_largest_floor": sep["largest_floor"], "separation_median": sep["median"],
                "separation_cells_above_twice_floor": sep["cells_above_twice_floor"],
                "separation_cells": sep["cells"]})
    row.update({key: fidelity["parameters"][key] for key in
                ("parameters", "parameters_remaining", "weights", "weights_remaining", "weight_sparsity")})
    if row["sparsity"] is None or row["sparsity"] != row["sparsity"]:
        row["sparsity"] = fidelity["parameters"]["weight_sparsity"]
    if timing is not None:
        row["timing_threads"] = timing["threads"]
        for b in timing["batches"]:
            row[f"seconds_per_shower_batch_{b['batch']}"] = b["median"]
            row[f"seconds_per_shower_batch_{b['batch']}_min"] = b["min"]
            row[f"seconds_per_shower_batch_{b['batch']}_max"] = b["max"]
            row[f"batch_used_{b['batch']}"] = b["batch_used"]
    return row


def score_study(results, settings: ScoreSettings | None = None, timing: TimingSettings | None = TimingSettings(),
                *, events: int | None = None,
                progress: Callable[[int, int, dict, str], None] | None = None) -> StudyScores:
    """Score every finished non-checkpoint state of the study in ``results`` (see the module docstring) with
    ``settings`` (default :class:`ScoreSettings`; ``events`` overrides its number of showers); ``timing=None``
    skips generation time. ``progress(i, n, point, what)`` is told what happens to each state ("cached",
    "scored")."""
    import time
    from dataclasses import replace

    from .calochallenge_report import clean
    from .generation import is_shower_generator
    from .generator_scores import generation_timing, parameter_counts, score_model
    from .tasks import shower_split

    settings = settings or ScoreSettings()
    if events is not None:
        settings = replace(settings, events=events)
    points = studied_points(results)
    out = StudyScores(rows=None)
    cache = _Cache(results, out.notes)
    references: dict[str, object] = {}
    rows = []
    for i, point in enumerate(points.to_dict(orient="records")):
        state = point["hash"]
        manifest = results.store.manifest(state) or {}
        dataset = manifest.get("dataset")
        if not isinstance(dataset, str):
            raise PrunelabError(f"state {state[:12]}: its manifest names no dataset")
        if dataset not in references:
            held_out = shower_split(dataset, "test")
            if len(held_out) < settings.events:
                raise PrunelabError(f"{dataset} holds {len(held_out):,} held-out showers; cannot score on "
                                    f"{settings.events:,} (-n at most {len(held_out):,})")
            references[dataset] = held_out.take(np.arange(settings.events))
        reference = references[dataset]
        model = None

        def generator():
            nonlocal model
            if model is None:
                model = results.load_model(state)
                if not is_shower_generator(model):
                    raise PrunelabError(f"state {state[:12]} of {results.store.root} holds a "
                                        f"{type(model).__name__}, not a shower generator")
            return model

        identity, key = cache.key(state, FIDELITY_PROBE, settings.identity())
        fidelity = cache.read(state, key, lambda r: check_fidelity_record(r, settings.events))
        what = "cached"
        if fidelity is None:
            began = time.perf_counter()
            fidelity = clean({"format": FORMAT,
                              "fidelity": score_model(generator(), reference, seed=settings.seed,
                                                      classifier_settings=settings.classifier,
                                                      fpd_options=settings.fpd or None,
                                                      kpd_options=settings.kpd or None),
                              "parameters": parameter_counts(generator())})
            problem = check_fidelity_record(fidelity, settings.events)
            if problem is not None:  # what we write must be what we would accept back
                raise PrunelabError(f"state {state[:12]}: its score does not pass its own check ({problem})")
            cache.write(state, key, identity, f"{FIDELITY_PROBE} n={settings.events}", fidelity,
                        time.perf_counter() - began)
            out.computed += 1
            what = "scored"
        else:
            out.reused += 1
        timed = None
        if timing is not None:
            t_identity, t_key = cache.key(state, TIMING_PROBE, timing.identity())
            timed = cache.read(state, t_key, lambda r: check_timing_record(r, timing.batch_sizes))
            if timed is None:
                began = time.perf_counter()
                timed = clean({"format": FORMAT, **generation_timing(
                    generator(), timing.batch_sizes, repeats=timing.repeats, min_showers=timing.min_showers,
                    max_batch=timing.max_batch, threads=timing.threads, seed=settings.seed)})
                cache.write(state, t_key, t_identity, TIMING_PROBE, timed, time.perf_counter() - began)
                out.computed += 1
                what = "scored" if what == "scored" else "scored (timing)"
            else:
                out.reused += 1
        rows.append(_flat(point, fidelity, timed))
        if progress is not None:
            progress(i, len(points), point, what)
    import pandas as pd

    out.rows = pd.DataFrame(rows)
    return out


# --------------------------------------------------------------------------
# Over seeds
# --------------------------------------------------------------------------

# the metrics averaged over seeds (per-state columns; per-range AUCs are added when present)
METRICS = ("low_level_auc", "low_level_jsd", "high_level_auc", "high_level_jsd", "fpd", "kpd",
           "fpd_reference_split", "kpd_reference_split", "separation_largest", "separation_median",
           "separation_cells_above_twice_floor", "parameters", "parameters_remaining", "weights_remaining")


def _bounds(metric: str) -> tuple[float, float] | None:
    """A metric's range (the interval is clipped to it; the true mean lies inside)."""
    if "_auc" in metric:
        return (0.0, 1.0)
    if metric.endswith("_jsd") or metric in ("kpd", "kpd_reference_split"):
        return None  # estimates that go below 0 by chance
    return (0.0, float("inf"))


def mean_interval(values, metric: str = "", confidence: float = 0.95) -> tuple[float, float | None, float | None, int]:
    """(mean, low, high, n) of the finite ``values``: the Student-t interval of the mean over seeds
    (:func:`prunelab.analysis.stats.mean_ci`, clipped to the metric's range); no interval (None) for one value."""
    from ..analysis.stats import mean_ci

    x = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not x:
        return float("nan"), None, None, 0
    mean, low, high = mean_ci(x, confidence, method="t", bounds=_bounds(metric))
    if len(x) == 1:
        return mean, None, None, 1
    return mean, low, high, len(x)


def aggregate(rows, confidence: float = 0.95):
    """One row per studied point (study, kind, label: the trained generator, the dense control, each IMP round,
    each one-shot target) over its seeds: ``seeds``, the mean sparsity, and for each metric (:data:`METRICS`,
    per-range AUCs and generation times where present) its mean with ``_low``/``_high``: the t-interval over
    seeds, clipped to the metric's range (missing with one seed: ``interval`` says so)."""
    import pandas as pd

    if rows is None or len(rows) == 0:
        return pd.DataFrame()
    metrics = [m for m in METRICS if m in rows] + [c for c in rows.columns if "_auc[" in c] + [
        c for c in rows.columns if c.startswith("seconds_per_shower_batch_") and not c.endswith(("_min", "_max"))]
    order = {kind: k for k, kind in enumerate(KIND_ORDER)}
    out = []
    keys = ["study", "kind", "label"]
    for (study, kind, label), group in rows.groupby(keys, sort=False, dropna=False):
        n = len(group)
        row = {"study": study, "kind": kind, "label": label, "round": group["round"].iloc[0],
               "target": group["target"].iloc[0], "seeds": n,
               "interval": f"{100 * confidence:g} % t over {n} seeds" if n > 1 else "one seed: no interval",
               "sparsity": float(np.nanmean(group["sparsity"].to_numpy(dtype=float)))}
        for m in metrics:
            mean, low, high, _ = mean_interval(group[m].to_numpy(dtype=float), m, confidence)
            row.update({m: mean, f"{m}_low": low, f"{m}_high": high})
        out.append(row)
    frame = pd.DataFrame(out)
    frame["_order"] = frame["kind"].map(order).fillna(len(order))
    return frame.assign(_r=frame["round"].fillna(0), _t=frame["target"].fillna(0)).sort_values(
        ["study", "_order", "_r", "_t"]).drop(columns=["_order", "_r", "_t"]).reset_index(drop=True)
