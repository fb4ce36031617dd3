"""Who pays for sparsity in a language model: the loss of each token (character) before and after.

A pruned language model's perplexity rises because some tokens become harder to predict. Per token
class c, with L_c the mean loss (nats) of the test positions whose next token is c and n_c their
count, the total loss rises by Σ_c n_c ΔL_c; :func:`token_costs` gives each class's ΔL_c (mean and
t interval over seeds, paired with the dense model of the same seed) and its *share* of the rise,
n_c ΔL_c / Σ n ΔL — which characters the perplexity increase is made of.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PrunelabError


def token_costs(dense: list[dict], pruned: list[dict]):
    """One row per token class, largest share of the loss increase first. ``dense`` and ``pruned`` are
    stored test evaluations of a language model (``metrics.test`` of a manifest), paired by position
    (the same seed). Columns: class, support, dense_loss, pruned_loss, delta (mean over pairs), ci_low,
    ci_high (95 % t interval over pairs), share (of the total loss increase: n_c × mean ΔL_c over
    Σ n × mean ΔL; shares sum to 1, and a share above 1 means other tokens got easier)."""
    import pandas as pd

    from .stats import mean_ci

    if not dense or len(dense) != len(pruned):
        raise PrunelabError(f"token_costs: {len(dense)} dense and {len(pruned)} pruned evaluations; give pairs")
    names = None
    deltas, dense_loss, pruned_loss, support = [], [], [], None
    for d, p in zip(dense, pruned):
        if d.get("task") != "language" or p.get("task") != "language":
            raise PrunelabError("token_costs reads language-model evaluations (task = 'language')")
        if d["class_names"] != p["class_names"] or (names is not None and d["class_names"] != names):
            raise PrunelabError("token_costs: the evaluations have different vocabularies")
        names = d["class_names"]
        n = np.array([row["support"] for row in d["per_class"]], dtype=float)
        if support is not None and not np.array_equal(n, support):
            raise PrunelabError("token_costs: the evaluations are of different test splits")
        support = n
        ld = np.array([np.nan if row["loss"] is None else row["loss"] for row in d["per_class"]], dtype=float)
        lp = np.array([np.nan if row["loss"] is None else row["loss"] for row in p["per_class"]], dtype=float)
        deltas.append(lp - ld)
        dense_loss.append(ld)
        pruned_loss.append(lp)
    mean_delta = np.mean(deltas, axis=0)
    rise = np.nansum(support * mean_delta)
    share = support * mean_delta / rise if rise != 0 else np.full_like(mean_delta, np.nan)
    rows = []
    for c, name in enumerate(names):
        if support[c] == 0:
            continue
        mean, lo, hi = mean_ci([float(x[c]) for x in deltas], method="t")
        rows.append({"class": name, "support": int(support[c]), "dense_loss": float(np.mean([x[c] for x in dense_loss])),
                     "pruned_loss": float(np.mean([x[c] for x in pruned_loss])), "delta": mean, "ci_low": lo,
                     "ci_high": hi, "share": float(share[c])})
    table = pd.DataFrame(rows)
    return table.sort_values("share", ascending=False, key=lambda s: s.fillna(-math.inf)).reset_index(drop=True)


def study_token_costs(results, points, branch: str, round: int = 1):
    """:func:`token_costs` of ``branch`` at ``round`` against the dense model of each seed (and sweep
    configuration), from a :func:`prunelab.analysis.tables.study_points` table of a language study."""
    configs = points["config"].fillna("")
    dense = {(c, s): h for c, s, b, h in zip(configs, points["seed"], points["branch"], points["hash"]) if b == "dense"}
    pairs = [(dense[(c, s)], h) for c, s, b, r, h in zip(configs, points["seed"], points["branch"], points["round"],
                                                          points["hash"])
             if b == branch and r == round and (c, s) in dense]
    if not pairs:
        raise PrunelabError(f"no finished state of {branch!r} at round {round} with a dense model of the same seed")

    def test_of(state_hash: str) -> dict:
        return results.store.manifest(state_hash)["metrics"]["test"]

    return token_costs([test_of(d) for d, _ in pairs], [test_of(p) for _, p in pairs])
