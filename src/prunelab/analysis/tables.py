"""Tables read back from a study store (no spec needed): trained states by branch, seed, sparsity."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import PrunelabError
from ..experiment.query import Results, flatten
from ..study import CONFIG_TAG, remaining_percent
from .stats import holm, paired_test

TRAINED = ("Train", "Finetune")
_SKIP_TAGS = ("seed=", "consensus-source", CONFIG_TAG)


def recall_disparity(recall: list[float]) -> dict[str, float]:
    """Disparity summaries of per-class recall (arXiv 2009.09936): worst class, max − min gap, std, min/max."""
    if not recall:
        return {"worst_recall": math.nan, "gap": math.nan, "recall_std": math.nan, "min_max_ratio": math.nan}
    r = np.asarray(recall, dtype=float)
    return {"worst_recall": float(r.min()), "gap": float(r.max() - r.min()), "recall_std": float(r.std()),
            "min_max_ratio": float(r.min() / r.max()) if r.max() > 0 else 0.0}


def class_impact(points, threshold: float = 0.01, metric: str = "test.accuracy"):
    """Per trained state and class: recall, precision and F1 against the dense model of the same seed
    (and configuration), Δ_c, Δ_c − Δ (Δ: the change of ``metric``, overall accuracy by default) and
    whether the class is disproportionately hurt (recall's Δ_c − Δ < −threshold).

    ``points`` is a :func:`study_points` table; one row per (state, class).
    """
    import pandas as pd

    records = points.to_dict("records")
    dense = {(r["config"] or "", r["seed"]): r for r in records if r["branch"] == "dense"}
    rows = []
    for p in records:
        ref = dense.get((p["config"] or "", p["seed"]))
        if p["branch"] == "dense" or ref is None or not p["recall"]:
            continue
        overall = p[metric] - ref[metric]
        for c, name in enumerate(p["class_names"]):
            row = {"config": p["config"], "branch": p["branch"], "seed": p["seed"], "round": p["round"],
                   "remaining": p["remaining"], "class": name, "overall_delta": overall}
            for m in ("recall", "precision", "f1"):
                row[m], row[f"dense_{m}"] = p[m][c], ref[m][c]
                row[f"delta_{m}"] = row[m] - row[f"dense_{m}"]
            row["relative"] = row["delta_recall"] - overall
            row["hurt"] = bool(row["relative"] < -threshold)
            rows.append(row)
    return pd.DataFrame(rows)


def _number(value, unbounded: bool = False) -> float:
    """A stored metric as a float: missing is NaN; a stored null rejection (no background passed) is inf."""
    if value is None:
        return float("inf") if unbounded else float("nan")
    return float(value)


def study_points(results: Results, metric: str = "test.accuracy", config: str | None = None):
    """One row per finished trained state: branch (its study tag), seed, round, weights remaining, metric.

    A trained state tagged only with its seed is the dense reference
    (branch ``"dense"``); partial trainings (``Train(stop=k)``) are left out.
    In a swept study (``config:`` tags) a state shared by several
    configurations gives one row per configuration (column ``config``);
    ``config`` keeps one of them. ``round`` counts the branch's trained
    states of one seed and configuration from the densest (dense: 0).
    """
    import pandas as pd

    rows = []
    for m in results.states(status="done"):
        if m["recipe"]["type"] not in TRAINED or m["recipe"]["params"].get("stop") is not None:
            continue
        tags = m.get("tags", [])
        seeds = [t.split("=", 1)[1] for t in tags if t.startswith("seed=")]
        branches = [t for t in tags if not t.startswith(_SKIP_TAGS)]
        configs = [t[len(CONFIG_TAG):] for t in tags if t.startswith(CONFIG_TAG)] or [None]
        if "consensus-source" in tags:
            continue
        value = flatten(m.get("metrics") or {}).get(metric)
        if value is None:
            raise PrunelabError(f"state {m['hash'][:10]} has no metric {metric!r} (try test.accuracy, test.loss, "
                                "test.balanced_accuracy, test.macro_f1)")
        test = (m.get("metrics") or {}).get("test") or {}
        per_class = {k: [c[k] for c in test.get("per_class", [])] for k in ("recall", "precision", "f1")}
        binary = {"roc_auc": _number(test.get("roc_auc")),  # two-class tasks (e.g. the calorimeter's)
                  "rejection_90": _number((test.get("rejection") or {}).get("0.9", float("nan")), unbounded=True)}
        for label in configs:
            rows.append({"hash": m["hash"], "parent": m.get("parent"), "config": label,
                         "branch": branches[0] if branches else "dense",
                         "seed": int(seeds[0]) if seeds else None, "remaining": round(remaining_percent(m), 1),
                         metric: float(value), **per_class, **recall_disparity(per_class["recall"]), **binary,
                         "class_names": tuple(test.get("class_names", []))})
    if not rows:
        raise PrunelabError(f"{results.store.root}: no finished trained states to compare")
    frame = pd.DataFrame(rows)
    keys = frame["config"].fillna("").astype(str) + "\0" + frame["branch"] + "\0" + frame["seed"].astype(str)
    frame["round"] = (frame.groupby(keys)["remaining"].rank(method="first", ascending=False).astype(int)
                      - (frame["branch"] == "dense").astype(int))
    return frame if config is None else select_configuration(frame, config, results.store.root)


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


def compare_branches(results: Results, metric: str = "test.accuracy", method: str = "permutation",
                     config: str | None = None):
    """Paired tests between every two branches at each shared sparsity level, paired over seeds.

    Holm correction across all comparisons in the table. In a swept study the
    comparison is within one configuration: ``config``, else the first label.
    """
    import pandas as pd

    points = study_points(results, metric)
    if config is None and configurations(points):
        config = configurations(points)[0]
    if config is not None:
        points = select_configuration(points, config, results.store.root)
    points = points.dropna(subset=["seed"])
    rows = []
    branches = list(dict.fromkeys(points["branch"]))
    for a, b in itertools.combinations(branches, 2):
        pa, pb = points[points.branch == a], points[points.branch == b]
        for level in sorted(set(pa.remaining) & set(pb.remaining), reverse=True):
            la = pa[pa.remaining == level].set_index("seed")[metric]
            lb = pb[pb.remaining == level].set_index("seed")[metric]
            seeds = sorted(set(la.index) & set(lb.index))
            if len(seeds) < 2:
                continue
            va, vb = la.loc[seeds].to_numpy(), lb.loc[seeds].to_numpy()
            rows.append({"a": a, "b": b, "remaining": level, "seeds": len(seeds), "mean_a": va.mean(),
                         "mean_b": vb.mean(), "difference": float(np.mean(va - vb)),
                         "p": paired_test(va, vb, method)})
    if not rows:
        raise PrunelabError("no two branches share a sparsity level on at least 2 seeds")
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"].tolist())
    table.attrs["config"] = config
    return table


EFFICIENCY = {"sparsity": "sparsity (% of prunable weights removed)",
              "flops_removed": "FLOPs removed (% of dense multiply-accumulates per example)",
              "params_removed": "parameters removed (% of all, biases and norms included)"}


def with_efficiency(results: Results, points):
    """``points`` plus ``flops_removed`` and ``params_removed`` (percent), measured on each stored model.

    FLOPs are multiply-accumulates for one example (a kept weight costs one per
    output position; :func:`prunelab.pruning.sparsity_report`); parameters count
    every parameter, so a layer that is not pruned (biases, norms) keeps them.
    """
    from ..pruning.masks import sparsity_report

    measured = {}
    for state_hash in dict.fromkeys(points["hash"]):
        snapshot = results.snapshot(state_hash)
        model = snapshot.model()
        report = sparsity_report(model, snapshot.spec.input_shape)
        total = sum(p.numel() for p in model.parameters())  # weight_orig counts in full, masks are buffers
        removed = report.total - report.kept
        flops = 100.0 * (1 - report.kept_flops / report.flops) if report.flops else math.nan
        measured[state_hash] = (flops, 100.0 * removed / total if total else math.nan)
    out = points.copy()
    out["flops_removed"] = [measured[h][0] for h in out["hash"]]
    out["params_removed"] = [measured[h][1] for h in out["hash"]]
    return out
