"""Seed variation and systematic variation (a declared hyperparameter sweep), kept apart.

For one branch at one level, the sweep gives ``k`` configurations with ``n_i``
seeds each. The *seed* spread is the pooled within-configuration standard
deviation; the *systematic* spread is how much the configuration means differ.
The raw standard deviation of the configuration means still contains seed noise
(``σ_seed² / n`` of it), so the systematic component is also given with that
part removed (the one-way random-effects estimate, floored at 0), and a one-way
ANOVA (``scipy.stats.f_oneway``) says whether the configurations differ more
than seeds alone would make them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import PrunelabError


def variance_components(groups: list[np.ndarray]) -> dict:
    """Seed and systematic spread of values grouped by configuration (one array per configuration)."""
    from scipy import stats

    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) < 2:
        raise PrunelabError("systematic variation needs at least 2 configurations with values")
    means = np.array([g.mean() for g in groups])
    sizes = np.array([len(g) for g in groups])
    dof = int((sizes - 1).sum())
    within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof) if dof else math.nan
    between = float(means.var(ddof=1))
    # E[var of the means] = σ_sys² + σ_seed² · mean(1/n_i): subtract the seed part.
    systematic = math.sqrt(max(0.0, between - within * float(np.mean(1.0 / sizes)))) if dof else math.nan
    p = math.nan
    if dof and all(len(g) >= 2 for g in groups) and within > 0:
        p = float(stats.f_oneway(*groups).pvalue)
    return {"configs": len(groups), "seeds": int(sizes.sum()), "mean": float(np.concatenate(groups).mean()),
            "seed_sd": math.sqrt(within) if dof else math.nan, "config_sd": math.sqrt(between),
            "systematic_sd": systematic, "range": float(means.max() - means.min()), "anova_p": p}


def _distinct_configurations(group: pd.DataFrame, config: str, state: str | None) -> pd.DataFrame:
    """Configurations that reach the very same states (a dense run when only a pruning rate is swept)
    are one configuration, not several: keep the first, and name configurations only by the swept
    values that still differ among those left (``lr=0.1`` rather than ``lr=0.1 rate=0.5``)."""
    if state is not None:
        sets = group.groupby(config, sort=False)[state].agg(lambda s: tuple(sorted(s)))
        keep = sets[~sets.duplicated()].index
        group = group[group[config].isin(keep)]
    labels = list(dict.fromkeys(group[config]))
    tokens = [str(label).split(" ") for label in labels]
    if len({len(t) for t in tokens}) == 1 and all("=" in x for t in tokens for x in t):
        varying = [i for i in range(len(tokens[0])) if len({t[i] for t in tokens}) > 1]
        short = {label: " ".join(t[i] for i in varying) for label, t in zip(labels, tokens)}
        if len(set(short.values())) == len(labels):
            group = group.assign(**{config: group[config].map(short)})
    return group


def seed_vs_systematic(frame: pd.DataFrame, value: str, by: tuple[str, ...] = ("branch", "round"),
                       config: str = "config", state: str | None = "state") -> pd.DataFrame:
    """One row per ``by`` group: seed spread, systematic spread and the best and worst configuration.

    ``frame`` has one row per (configuration, seed, ``by``...) with the measured ``value``;
    with a ``state`` column (the state's hash), configurations sharing their states count once.
    """
    state = state if state is not None and state in frame else None
    missing = [c for c in (*by, config, value) if c not in frame]
    if missing:
        raise PrunelabError(f"the table has no column(s) {missing}")
    rows = []
    for key, group in frame.groupby(list(by), sort=False):
        group = _distinct_configurations(group, config, state)
        per_config = group.groupby(config, sort=False)[value]
        if per_config.ngroups < 2:
            continue
        means = per_config.mean()
        stats = variance_components([v.to_numpy() for _, v in per_config])
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,))) | stats
                    | {"best_config": means.idxmax(), "best_mean": float(means.max()),
                       "worst_config": means.idxmin(), "worst_mean": float(means.min())})
    return pd.DataFrame(rows)
