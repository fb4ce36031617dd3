"""Tables read back from a study store (no spec needed): trained states by branch, seed, sparsity."""

from __future__ import annotations

import math

import numpy as np

from ..errors import PrunelabError, printable
from ..experiment.containment import is_hash
from ..experiment.query import Results
from .. import labels



def recall_disparity(recall: list[float]) -> dict[str, float]:
    """Disparity summaries of per-class recall (arXiv 2009.09936): worst class, max − min gap, std, min/max."""
    if not recall:
        return {"worst_recall": math.nan, "gap": math.nan, "recall_std": math.nan, "min_max_ratio": math.nan}
    r = np.asarray(recall, dtype=float)
    return {"worst_recall": float(r.min()), "gap": float(r.max() - r.min()), "recall_std": float(r.std()),
            "min_max_ratio": float(r.min() / r.max()) if r.max() > 0 else 0.0}


def _disparities(recalls: list[list[float]]):
    """:func:`recall_disparity` of each list, as columns; vectorised when the lists have one length."""
    import pandas as pd

    if recalls and len({len(r) for r in recalls}) == 1 and recalls[0]:
        r = np.asarray(recalls, dtype=float)
        low, high = r.min(axis=1), r.max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(high > 0, low / high, 0.0)
        return pd.DataFrame({"worst_recall": low, "gap": high - low, "recall_std": r.std(axis=1),
                             "min_max_ratio": ratio})
    return pd.DataFrame([recall_disparity(r) for r in recalls], columns=list(recall_disparity([])))


def class_impact(points, threshold: float = 0.01, metric: str = "test.accuracy"):
    """Per trained state and class: recall, precision and F1 against the dense model of the same seed
    (and configuration), Δ_c, Δ_c − Δ (Δ: the change of ``metric``, overall accuracy by default) and
    whether the class is disproportionately hurt (recall's Δ_c − Δ < −threshold).

    ``points`` is a :func:`study_points` table; one row per (state, class).
    """
    import pandas as pd

    configs = [c or "" for c in points["config"]]
    # the study's dense model (not a consensus target's, not a transfer's); a table made without the
    # rows' structure (by hand, from elsewhere) names it by its label
    named = points["section"] == "dense" if "section" in points else points["branch"] == labels.dense().label
    reference = named.tolist()
    dense = {(c, seed): i for i, (c, seed, ref) in enumerate(zip(configs, points["seed"], reference)) if ref}
    recall = points["recall"].tolist()
    pairs = [(i, dense[(c, seed)]) for i, (c, seed, ref) in enumerate(zip(configs, points["seed"], reference))
             if not ref and (c, seed) in dense and recall[i]]
    columns = ["config", "branch", "seed", "round", "remaining", "class", "overall_delta"] + [
        f"{prefix}{m}" for m in ("recall", "precision", "f1") for prefix in ("", "dense_", "delta_")] + ["relative", "hurt"]
    if not pairs:
        return pd.DataFrame(columns=columns)
    # one row per (state, class), built column by column: a study of 40,000 trained states has 400,000
    mine, ref = (np.array(v) for v in zip(*pairs))
    counts = np.array([len(recall[i]) for i in mine])
    value = points[metric].to_numpy(dtype=float)
    out = {name: np.repeat(points[name].to_numpy()[mine], counts) for name in ("config", "branch", "seed", "round",
                                                                               "remaining")}
    names = points["class_names"].tolist()
    out["class"] = [name for i in mine for name in names[i]]
    out["overall_delta"] = np.repeat(value[mine] - value[ref], counts)
    for m in ("recall", "precision", "f1"):
        lists = points[m].tolist()
        out[m] = np.concatenate([lists[i] for i in mine]).astype(float)
        out[f"dense_{m}"] = np.concatenate([lists[j][:n] for j, n in zip(ref, counts)]).astype(float)
        out[f"delta_{m}"] = out[m] - out[f"dense_{m}"]
    out["relative"] = out["delta_recall"] - out["overall_delta"]
    out["hurt"] = out["relative"] < -threshold
    return pd.DataFrame(out, columns=columns)


def _number(value, unbounded: bool = False) -> float:
    """A stored metric as a float: missing is NaN; a stored null rejection (no background passed) is inf."""
    if value is None:
        return float("inf") if unbounded else float("nan")
    return float(value)


_POINT_KEYS = {"hash": str, "branch": str, "seed": int, "round": int, "kind": str, "dataset": str}
_ROW_TEXT = ("label", "section", "kind", "name", "subject", "task")  # a row's other field: tau, a number


def _check_rows(rows, where: str) -> None:
    """The record's ``rows`` (:meth:`prunelab.labels.Row.record`): each row's structure, by label."""
    if not isinstance(rows, list):
        raise PrunelabError(f"{where}: 'rows' must be a list")
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and set(row) <= {*_ROW_TEXT, "tau"}
                and all(isinstance(row.get(k), str) for k in ("label", "section", "kind"))
                and all(row.get(k) is None or (isinstance(row[k], str) and printable(row[k]) == row[k])
                        for k in _ROW_TEXT)
                and (row.get("tau") is None or type(row["tau"]) in (int, float))
                and row["section"] in labels.SECTIONS and row["kind"] in labels.KINDS):
            raise PrunelabError(f"{where}: rows[{i}] must be a study row (label, section, kind; name, subject, "
                                "task, tau where they apply)")


def _row_fields(record: dict) -> dict[str, dict]:
    """Each row label's structure: section, name and tau. A record written before rows were recorded
    names only the study's dense reference for sure (its label is fixed); its other rows have none."""
    rows = record.get("rows")
    if rows is None:
        rows = [labels.dense().record()]
    return {row["label"]: {"section": row["section"], "row_name": row.get("name"), "tau": row.get("tau")}
            for row in rows}


def _check_hypothesis(raw, where: str) -> None:
    from pydantic import ValidationError

    from ..spec import HypothesisSection

    try:
        HypothesisSection.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise PrunelabError(f"{where}: {error.get('msg', 'invalid')}") from None


def study_records(results: Results) -> list[dict]:
    """The study records of a store (``documents/study-*.json``, written by ``prunelab run``), checked.

    Each names, for every trained point, its row label, kind, round, seed,
    configuration, control-of and task, and for every row its structure (``rows``);
    nothing is parsed back from tags or labels.
    """
    from ..spec import RECORD_FORMAT, STUDY_DOCUMENT_PREFIX

    if results._study_records is not None:  # a report asks more than once; the view is of the store as opened
        return results._study_records
    records = []
    for name, doc in results.store.documents().items():
        if not name.startswith(STUDY_DOCUMENT_PREFIX):
            continue
        where = results.store.document_path(name)
        if doc.get("format") != RECORD_FORMAT:
            raise PrunelabError(f"{where}: format {doc.get('format')!r} is not {RECORD_FORMAT!r}")
        points = doc.get("points")
        if not isinstance(points, list):
            raise PrunelabError(f"{where}: 'points' must be a list")
        for i, p in enumerate(points):
            for key, kind in _POINT_KEYS.items():
                if not isinstance(p, dict) or not isinstance(p.get(key), kind) or isinstance(p.get(key), bool):
                    raise PrunelabError(f"{where}: points[{i}].{key} must be a {kind.__name__}, "
                                        f"got {None if not isinstance(p, dict) else p.get(key)!r}")
            if not (p.get("config") is None or isinstance(p["config"], str)) or \
                    not (p.get("of") is None or isinstance(p["of"], str)):
                raise PrunelabError(f"{where}: points[{i}]: config and of must be strings or null")
            if not is_hash(p["hash"]):
                raise PrunelabError(f"{where}: points[{i}].hash is not a state hash")
            if any(isinstance(v, str) and printable(v) != v for v in p.values()):
                raise PrunelabError(f"{where}: points[{i}] holds control characters")
        for key in ("comparisons", "hypotheses"):
            if not isinstance(doc.get(key, []), list):
                raise PrunelabError(f"{where}: {key!r} must be a list")
        for i, c in enumerate(doc.get("comparisons", [])):
            if not (isinstance(c, list) and len(c) in (2, 3) and all(isinstance(x, str) and printable(x) == x
                                                                      for x in c[:2])
                    and (len(c) == 2 or (type(c[2]) is int))):
                raise PrunelabError(f"{where}: comparisons[{i}] must be [row A, row B] or [row A, row B, round]")
        for i, h in enumerate(doc.get("hypotheses", [])):
            _check_hypothesis(h, f"{where}: hypotheses[{i}]")
        if "rows" in doc:
            _check_rows(doc["rows"], where)
        records.append(doc)
    if not records:
        raise PrunelabError(f"{results.store.root}: no study record (documents/study-*.json); it is written by "
                            "`prunelab run SPEC --store STORE`, which reruns nothing that is already stored")
    results._study_records = records
    return records


def headline_metric(results: Results, split: str = "test") -> str:
    """The dotted headline metric of a study's trained states (``test.accuracy``; ``test.perplexity``
    for a language model; ``test.resolution`` / ``test.rmse`` for a regression): what ``compare`` and
    the report show unless asked for another."""
    from ..headline import headline

    prefix = f"{split}."
    wanted = (p["hash"] for record in study_records(results) for p in record["points"])
    for summary in results.each_summary(wanted, chunk=64):  # the first finished point decides
        if summary is None or summary["status"] != "done":
            continue
        evaluation = {k[len(prefix):]: v for k, v in summary["scalars"].items() if k.startswith(prefix)}
        try:
            return prefix + headline(evaluation)[0]
        except KeyError:  # an evaluation without a headline (a generator's): the default
            break
    return f"{split}.accuracy"


def study_points(results: Results, metric: str = "test.accuracy", config: str | None = None,
                 study: str | None = None):
    """One row per finished trained point of the study record(s): its row label (``branch``), kind, round,
    seed, configuration, control-of (``of``) and task (``dataset``), the row's structure (``section``:
    dense, branches, consensus or transfer; ``row_name``: the branch's or transfer's; ``tau``: a consensus
    row's), weights remaining and metrics.

    A state that plays two roles (a dense model that is also a consensus
    source, a configuration shared by a sweep) gives one row per role.
    ``remaining`` is the mean over the seeds of a (configuration, row, round),
    so rows never split by per-seed rounding; ``remaining_seed`` is each
    state's own. Partial trainings never appear.
    """
    import pandas as pd

    rows, seen, records = [], set(), study_records(results)
    if study is not None:
        records = [r for r in records if r.get("name") == study] or records
    wanted = []
    for record in records:
        structure = _row_fields(record)
        wanted += [(p, structure) for p in record["points"]]
    unknown = {"section": None, "row_name": None, "tau": None}
    for (p, structure), summary in zip(wanted, results.each_summary(p["hash"] for p, _ in wanted)):
        key = (p["hash"], p["branch"], p["seed"], p["round"], p.get("config"))
        if key in seen:
            continue
        seen.add(key)
        if summary is None and p["hash"] not in results:
            # named by the record, not in the store: a table without it would quietly lose a seed
            results.damaged.setdefault(results.store.manifest_path(p["hash"]),
                                       f"a point of the study ({p['branch']}, round {p['round']}, seed {p['seed']}) "
                                       "that is not in the store; `prunelab run` of the study's spec computes it")
        if summary is None or summary["status"] != "done":
            continue
        value = summary["scalars"].get(metric)
        if value is None:
            raise PrunelabError(f"state {p['hash'][:10]} has no metric {metric!r} (try test.accuracy, test.loss, "
                                "test.balanced_accuracy, test.macro_f1)")
        scalars = summary["scalars"]
        per_class = {k: summary[k] for k in ("recall", "precision", "f1")}
        binary = {"roc_auc": _number(scalars.get("test.roc_auc")),  # two-class tasks (e.g. the calorimeter's)
                  "rejection_90": _number(scalars.get("test.rejection.0.9", float("nan")), unbounded=True)}
        rows.append({"hash": p["hash"], "parent": results.row(p["hash"])["parent"], "config": p.get("config"),
                     "branch": p["branch"], "kind": p["kind"], "of": p.get("of"), "dataset": p["dataset"],
                     "seed": p["seed"], "round": p["round"], "remaining_seed": summary["remaining"],
                     metric: float(value), **per_class, **binary, "class_names": tuple(summary["class_names"]),
                     **structure.get(p["branch"], unknown)})
    if not rows:
        raise PrunelabError(f"{results.store.root}: no finished trained states to compare")
    frame = pd.DataFrame(rows)
    frame = frame.join(_disparities(frame["recall"].tolist()))
    order = list(frame.columns[:frame.columns.get_loc("f1") + 1]) + list(recall_disparity([]))
    frame = frame[order + [c for c in frame.columns if c not in order]]
    keys = [frame["config"].fillna("").astype(str), frame["branch"], frame["round"]]
    frame["remaining"] = frame.groupby(keys)["remaining_seed"].transform("mean").round(1)
    frame.attrs["main_dataset"] = records[0].get("dataset")
    frame.attrs["comparisons"] = [c for r in records for c in r.get("comparisons", [])]
    frame.attrs["hypotheses"] = [h for r in records for h in r.get("hypotheses", [])]
    return frame if config is None else select_configuration(frame, config, results.store.root)


def first_seeds(points, n: int | None):
    """The rows of ``points`` whose seed is among its first ``n`` seeds (sorted); every row where
    ``n`` is None or 0, or the table has no more seeds than that. ``attrs`` are kept."""
    seeds = sorted(points["seed"].dropna().unique())
    if not n or len(seeds) <= n:
        return points
    out = points[points["seed"].isin(seeds[:n])]
    out.attrs.update(points.attrs)
    return out


def configurations(points) -> list[str]:
    """The sweep's configuration labels in a :func:`study_points` table (empty without a sweep)."""
    return sorted(points["config"].dropna().unique())


def select_configuration(points, config: str, where="store"):
    """The rows of one sweep configuration (rounds are counted per configuration, so they stay valid)."""
    known = configurations(points)
    if config not in known:
        raise PrunelabError(f"{where}: no configuration {config!r} "
                            f"(known: {', '.join(known) or 'none, the study has no sweep'})")
    return points[points["config"] == config].reset_index(drop=True)


def check_efficiency(name: str) -> str:
    if name not in EFFICIENCY:
        raise PrunelabError(f"efficiency {name!r} must be one of {', '.join(EFFICIENCY)}")
    return name


EFFICIENCY = {"sparsity": "sparsity (% of prunable weights removed)",
              "flops_removed": "FLOPs removed (% of dense multiply-accumulates per example)",
              "params_removed": "parameters removed (% of all, biases and norms included)"}


def with_efficiency(results: Results, points):
    """``points`` plus ``flops_removed`` and ``params_removed`` (percent) of each stored model.

    FLOPs are multiply-accumulates for one example (a kept weight costs one per
    output position; :func:`prunelab.pruning.sparsity_report`); parameters count
    every parameter, so a layer that is not pruned (biases, norms) keeps them.
    What depends on the architecture (each layer's size and output positions, the
    parameter count) is measured once on a model built from it; what depends on the
    state (each layer's kept weights) is the ``kept`` count its manifest records per
    mask, so no state's model has to be loaded and run (which grows with the seeds).
    """
    from ..experiment.snapshot import ModelSpec

    layouts: dict = {}
    measured = {}
    for state_hash in dict.fromkeys(points["hash"]):
        manifest = results.get(state_hash)  # a full hash: one lookup, verified, cached
        spec = ModelSpec.from_json(manifest["spec"])
        layout = layouts.get(spec)
        if layout is None:
            layout = layouts[spec] = _efficiency_layout(spec)
        layers, parameters = layout
        masks = manifest.get("masks") or {}
        kept = {name: entry.get("kept") for name, entry in masks.items()}
        if any(count is None for count in kept.values()):  # a store that did not record counts: count them
            kept = {name: int(mask.sum()) for name, mask in results.snapshot(state_hash).masks.items()}
        weights = sum(total for _, total, _ in layers)
        removed = weights - sum(kept.get(name, total) for name, total, _ in layers)
        known = all(positions is not None for _, _, positions in layers)
        flops = sum(total * positions for _, total, positions in layers) if known else 0
        kept_flops = sum(kept.get(name, total) * positions for name, total, positions in layers) if known else 0
        measured[state_hash] = (100.0 * (1 - kept_flops / flops) if flops else math.nan,
                                100.0 * removed / parameters if parameters else math.nan)
    out = points.copy()
    out["flops_removed"] = [measured[h][0] for h in out["hash"]]
    out["params_removed"] = [measured[h][1] for h in out["hash"]]
    return out


def _efficiency_layout(spec) -> tuple[list[tuple[str, int, int | None]], int]:
    """(each prunable weight's (name, entries, output positions: None where the forward pass did not
    reach it), the model's parameter count)."""
    from ..pruning.masks import sparsity_report

    model = spec.build()
    report = sparsity_report(model, spec.input_shape)
    layers = [(layer.name, layer.total, None if layer.flops is None else layer.flops // max(1, layer.total))
              for layer in report.layers]
    return layers, sum(p.numel() for p in model.parameters())


def structure_table(results: Results, points, interval: str = "auto"):
    """Emergent structure of every masked row (imp, consensus, transfer) over all seeds and rounds, per
    tensor and kind of group: the fully pruned fraction's mean and 95 % interval over seeds (clipped to
    [0, 1]), the exact random-pruning expectation at each mask's own per-tensor count, and where the study
    has them, the same fraction in its random-pruning controls (``kind = random`` rows of that row). ``p``:
    two-sided paired t test over seeds of observed − expected; ``p_random``: of observed − control."""
    import pandas as pd

    from .stats import mean_ci
    from .effects import paired_p
    from .masks import emergent_structure

    cache: dict[str, list] = {}

    def measure(state_hash):
        if state_hash not in cache:
            cache[state_hash] = emergent_structure(results.store.load(state_hash).masks)
        return cache[state_hash]

    masked = points[points.kind.isin(["imp", "consensus", "transfer"]) & (points.remaining < 100)]
    controls = points[points.kind == "random"]
    rows = []
    for (config, branch, rnd), group in masked.groupby([masked["config"].fillna(""), "branch", "round"], sort=False):
        per_seed = {int(p.seed): {(s.tensor, s.group): s for s in measure(p.hash)} for p in group.itertuples()}
        mine = controls[(controls["of"] == branch) & (controls["round"] == rnd)
                        & (controls["config"].fillna("") == config)]
        random_seed = {int(p.seed): {(s.tensor, s.group): s for s in measure(p.hash)} for p in mine.itertuples()}
        keys = list(next(iter(per_seed.values())))
        for key in keys:
            seeds = sorted(s for s in per_seed if key in per_seed[s])
            observed = [per_seed[s][key].fraction for s in seeds]
            expected = [per_seed[s][key].expected for s in seeds]
            mean, lo, hi = mean_ci(observed, method=interval, bounds=(0.0, 1.0))
            row = {"config": config or None, "branch": branch, "round": int(rnd),
                   "remaining": float(group["remaining"].iloc[0]), "tensor": key[0], "group": key[1],
                   "size": per_seed[seeds[0]][key].size, "seeds": len(seeds), "fraction": mean,
                   "fraction_low": lo, "fraction_high": hi, "expected": float(np.mean(expected)),
                   "p": paired_p(observed, expected, "t") if len(seeds) >= 2 else math.nan}
            both = [s for s in seeds if key in random_seed.get(s, {})]
            if both:
                control = [random_seed[s][key].fraction for s in both]
                c_mean, c_lo, c_hi = mean_ci(control, method=interval, bounds=(0.0, 1.0))
                row |= {"random_masks": c_mean, "random_masks_low": c_lo, "random_masks_high": c_hi,
                        "p_random": (paired_p([per_seed[s][key].fraction for s in both], control, "t")
                                     if len(both) >= 2 else math.nan)}
            rows.append(row)
    return pd.DataFrame(rows)
