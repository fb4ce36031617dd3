"""Tables read back from a study store (no spec needed): trained states by branch, seed, sparsity."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import PrunelabError
from ..experiment.query import Results, flatten
from ..study import remaining_percent
from .stats import holm, paired_test

TRAINED = ("Train", "Finetune")
_SKIP_TAGS = ("seed=", "consensus-source")


def study_points(results: Results, metric: str = "test.accuracy"):
    """One row per finished trained state: branch (its study tag), seed, weights remaining, metric.

    A trained state tagged only with its seed is the dense reference
    (branch ``"dense"``); partial trainings (``Train(stop=k)``) are left out.
    """
    import pandas as pd

    rows = []
    for m in results.states(status="done"):
        if m["recipe"]["type"] not in TRAINED or m["recipe"]["params"].get("stop") is not None:
            continue
        tags = m.get("tags", [])
        seeds = [t.split("=", 1)[1] for t in tags if t.startswith("seed=")]
        branches = [t for t in tags if not t.startswith(_SKIP_TAGS)]
        if "consensus-source" in tags:
            continue
        value = flatten(m.get("metrics") or {}).get(metric)
        if value is None:
            raise PrunelabError(f"state {m['hash'][:10]} has no metric {metric!r} (try test.accuracy, test.loss, "
                                "test.balanced_accuracy, test.macro_f1)")
        test = (m.get("metrics") or {}).get("test") or {}
        recall = [c["recall"] for c in test.get("per_class", [])]
        rows.append({"hash": m["hash"], "parent": m.get("parent"), "branch": branches[0] if branches else "dense",
                     "seed": int(seeds[0]) if seeds else None, "remaining": round(remaining_percent(m), 1),
                     metric: float(value), "recall": recall, "worst_recall": min(recall) if recall else math.nan,
                     "class_names": tuple(test.get("class_names", []))})
    if not rows:
        raise PrunelabError(f"{results.store.root}: no finished trained states to compare")
    return pd.DataFrame(rows)


def compare_branches(results: Results, metric: str = "test.accuracy", method: str = "permutation"):
    """Paired tests between every two branches at each shared sparsity level, paired over seeds.

    Holm correction across all comparisons in the table.
    """
    import pandas as pd

    points = study_points(results, metric).dropna(subset=["seed"])
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
    return table
