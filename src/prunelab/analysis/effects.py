"""Paired effects over seeds: the planned comparisons of a study, their corrections, and declared hypotheses.

A lottery-ticket claim is a paired difference (the ticket and its control
share a seed), so the main output is the mean paired difference with its
interval and a standardised size (Cohen's d_z); p-values come with a
multiple-comparison family the user chooses, and with the smallest p the
number of seeds can give (an exact sign-flip test over n seeds cannot go
below 2 / 2^n, and Holm over m tests multiplies that by m).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import PrunelabError
from .stats import holm, paired_test, random_sign_flip

TESTS = ("permutation", "wilcoxon", "t")
FLIPS = 9999  # random sign flips of the permutation test, from RANDOM_FLIPS_FROM seeds (2^14 > 9,999)
RANDOM_FLIPS_FROM = 14
FAMILIES = {"pair": "the levels of one planned comparison (default)",
            "level": "the comparisons at one round",
            "table": "every row of the table",
            "none": "no correction"}
ALPHA = 0.05


def paired_effect(diffs, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, low, high, d_z) of paired differences: Student t interval, d_z = mean / SD (nan below 2 values
    or when the SD is 0)."""
    from .tdist import t_quantile

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return (math.nan,) * 4
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, (mean / sd if sd > 0 else math.nan)


def paired_p(a, b, test: str, alternative: str = "two-sided", *, margin: float = 0.0) -> float:
    """p-value that the paired difference a − b (+ ``margin``) is nonzero (``two-sided``) or > 0 (``greater``)."""

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float) + margin
    if test not in TESTS:
        raise PrunelabError(f"test {test!r} must be one of {', '.join(TESTS)}")
    if len(diff) < 2:
        return math.nan
    if np.all(diff == diff[0]):
        if diff[0] == 0:
            return 1.0
        if test == "t":  # no spread: the t statistic is undefined (a constant offset is not evidence)
            return math.nan
    if alternative == "two-sided" and test != "t" and margin == 0:
        return paired_test(a, b, test)
    if test == "t":  # one-sample t on the differences (scipy.stats.ttest_1samp), from scipy.special
        from .tdist import t_sf

        n = len(diff)
        sd = float(diff.std(ddof=1))
        if sd == 0:  # values a rounding error apart: as without spread, t is undefined
            return math.nan
        t = float(diff.mean()) / (sd / math.sqrt(n))
        return min(1.0, 2 * t_sf(abs(t), n - 1)) if alternative == "two-sided" else t_sf(t, n - 1)
    from scipy import stats

    if test == "wilcoxon":
        return float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    if len(diff) < RANDOM_FLIPS_FROM:  # exact: every sign flip (scipy enumerates them)
        result = stats.permutation_test((diff,), np.mean, permutation_type="samples", alternative=alternative,
                                        n_resamples=FLIPS, random_state=np.random.default_rng(0))
        return float(result.pvalue)
    return random_sign_flip(diff, FLIPS, 0, alternative)


def min_attainable_p(n: int, test: str, alternative: str = "two-sided") -> float:
    """The smallest p a rank or sign-flip test can give with ``n`` paired seeds (0 for the t test):
    2^-n of the exact test (doubled two-sided); from 14 seeds the sign-flip test draws 9,999 random
    flips (:func:`prunelab.analysis.stats.paired_test`) and cannot go below 1 / 10,000."""
    if test == "t" or n < 1:
        return 0.0
    sides = 2.0 if alternative == "two-sided" else 1.0
    if test == "permutation" and n > RANDOM_FLIPS_FROM - 1:
        return min(1.0, sides / (FLIPS + 1))
    return min(1.0, math.ldexp(sides, -n))  # 2^-n without overflow (a thousand seeds)


def seeds_needed(family_size: int, test: str, alpha: float = ALPHA, alternative: str = "two-sided") -> int:
    """Seeds an exact test needs before the best result of a Holm family of ``family_size`` can reach ``alpha``."""
    if test == "t":
        return 2
    return next((n for n in range(1, 64) if family_size * min_attainable_p(n, test, alternative) < alpha), None)


def _adjust(table, family: str):
    if family not in FAMILIES:
        raise PrunelabError(f"family {family!r} must be one of {', '.join(FAMILIES)}")
    table["family"] = {"pair": table["config"].fillna("") + " | " + table["a"] + " vs " + table["b"],
                       "level": table["config"].fillna("") + " | round " + table["round"].astype(str),
                       "table": "table", "none": "none"}[family]
    if family == "none":
        table["p_adjusted"] = table["p"]
        return table
    table["p_adjusted"] = math.nan
    for _, rows in table.groupby("family", sort=False):
        valid = rows["p"].notna()
        if valid.any():
            table.loc[rows.index[valid], "p_adjusted"] = holm(rows.loc[valid, "p"].tolist())
    return table


def _pair_rows(points, metric: str, a: str, b: str, fixed: int | None, planned: bool, test: str):
    rows = []
    for config, group in points.groupby(points["config"].fillna(""), sort=False):
        pa, pb = group[group.branch == a], group[group.branch == b]
        for rnd in sorted(set(pa["round"])):
            la = pa[pa["round"] == rnd].drop_duplicates("seed").set_index("seed")
            lb = pb[pb["round"] == (rnd if fixed is None else fixed)].drop_duplicates("seed").set_index("seed")
            seeds = sorted(set(la.index) & set(lb.index))
            if not seeds:
                continue
            va, vb = la.loc[seeds, metric].to_numpy(float), lb.loc[seeds, metric].to_numpy(float)
            mean, lo, hi, d = paired_effect(va - vb)
            rows.append({"config": config or None, "a": a, "b": b, "round": int(rnd),
                         "remaining_a": float(la["remaining"].iloc[0]), "remaining_b": float(lb["remaining"].iloc[0]),
                         "seeds": len(seeds), "mean_a": float(va.mean()), "mean_b": float(vb.mean()),
                         "difference": mean, "ci_low": lo, "ci_high": hi, "d_z": d,
                         "p": paired_p(va, vb, test), "planned": planned})
    return rows


def compare_points(points, metric: str = "test.accuracy", comparisons=None, *, test: str = "permutation",
                   family: str = "pair", exploratory: bool = False):
    """Paired effects of the study's planned comparisons (``comparisons``: ``[a, b]`` pairs equal rounds,
    ``[a, b, r]`` every round of a with round r of b; default: the study record's), per configuration and
    round: mean difference a − b over shared seeds with its 95 % t interval, d_z, the ``test``'s two-sided
    p and the Holm-adjusted p within ``family``. ``exploratory`` adds every other pair of rows of one task
    at equal rounds, corrected in a family of their own and marked ``planned = False``."""
    import pandas as pd

    if test not in TESTS:
        raise PrunelabError(f"test {test!r} must be one of {', '.join(TESTS)}")
    if comparisons is None:
        comparisons = points.attrs.get("comparisons", [])
    labels = set(points["branch"])
    rows = []
    planned = set()
    for c in comparisons:
        a, b, *fixed = c
        planned.add((a, b))
        if a in labels and b in labels:
            rows += _pair_rows(points, metric, a, b, fixed[0] if fixed else None, True, test)
    if exploratory:
        for dataset, group in points.groupby("dataset", sort=False):
            names = [n for n in dict.fromkeys(group["branch"]) if (group[group.branch == n]["kind"] != "dense").all()]
            for a, b in itertools.combinations(names, 2):
                if (a, b) not in planned and (b, a) not in planned:
                    rows += _pair_rows(group, metric, a, b, None, False, test)
    if not rows:
        raise PrunelabError("no planned comparison has a pair of finished states on a shared seed"
                            + ("" if exploratory else " (--exploratory compares every pair of rows)"))
    table = pd.DataFrame(rows)
    parts = [_adjust(part.copy(), family) for _, part in table.groupby("planned", sort=False)]
    for part in parts:
        if not part["planned"].iloc[0]:
            part["family"] = "exploratory: " + part["family"]
    table = pd.concat(parts).sort_values(["planned"], ascending=False, kind="stable").reset_index(drop=True)
    table.attrs.update(test=test, family=family)
    return table


def power_note(table, test: str) -> str | None:
    """A sentence when the seeds make significance impossible, or nearly: the smallest attainable
    adjusted p and the seeds needed. None for the t test or when every family can reach p < 0.05."""
    if test == "t" or table.empty:
        return None
    worst = None
    for family, rows in table.groupby("family", sort=False):
        m = len(rows)
        n = int(rows["seeds"].min())
        floor = min(1.0, m * min_attainable_p(n, test))
        if floor >= ALPHA and (worst is None or floor > worst[0]):
            worst = (floor, n, m, family)
    if worst is None:
        return None
    floor, n, m, family = worst
    need = seeds_needed(m, test)
    return (f"with {n} paired seeds an exact {test} test cannot give p below {min_attainable_p(n, test):.3g}"
            + (f", and Holm over the {m} tests of a family ({family.strip(' |')}) no adjusted p below {floor:.3g}"
               if m > 1 else "")
            + f": nothing can reach p < {ALPHA} here. "
            + (f"That needs at least {need} seeds" if need is not None
               else "More seeds cannot help: the family is too large for 9,999 random sign flips")
            + ("" if m == 1 else " (or a smaller family: --family, or declared [[hypotheses]])")
            + "; the intervals still show the size of each effect.")


# ---------------------------------------------------------------- declared hypotheses


@dataclass(frozen=True)
class HypothesisResult:
    claim: str
    config: str | None
    rounds: tuple[int, ...]  # the levels of A the claim was tested on
    remaining: tuple[float, ...]
    n: int  # seeds
    mean: float  # mean over seeds of (A − B averaged over the levels)
    ci_low: float
    ci_high: float
    d_z: float
    p: float  # one-sided, in the claim's direction (with its margin)
    p_adjusted: float  # Holm over every declared hypothesis (and configuration) of the study
    test: str
    verdict: str  # supported, not supported, or "not testable: why"
    effect: str = ""  # what ``mean`` measures when it is not A − B (a population claim's slope)

    @property
    def supported(self) -> bool:
        return self.verdict == "supported"


def evaluate_hypotheses(frame, hypotheses: list[dict], value: str = "value", alpha: float = ALPHA,
                        metric: str | None = None, populations=None) -> list[HypothesisResult]:
    """Test declared hypotheses (``[[hypotheses]]``, as dicts) on a table with columns config, branch, kind,
    round, seed, remaining and ``value``: per seed, A − B averaged over A's selected levels (B at the same
    round, or round 0 when B is a dense reference); a one-sided paired test in the claim's direction; Holm
    over all hypotheses × configurations (one pre-declared family); supported when the adjusted p < alpha.

    ``A > B`` claims that A is *better* than B on ``metric`` (default: the ``value`` column's name): higher
    accuracy, lower perplexity or RMSE (:func:`prunelab.headline.metric_info`). The reported effect is
    A − B in the metric's own units, so for a lower-is-better metric a supported ``A > B`` has a negative
    mean.

    Population claims (``"class 3 pays in global"``, ``"pies grow in global"``) join the same family: the first
    needs the table's per-class ``recall`` and ``test.accuracy`` (a study_points table), the second the
    stored models' predictions (``populations``: an :class:`prunelab.analysis.population.Populations`);
    without them they are "not testable" and say why."""
    from ..headline import metric_info
    from ..spec import HypothesisSection

    orientation = metric_info(metric or value).sign

    pending = []
    labels = frame["config"].fillna("").astype(str)
    configs = list(dict.fromkeys(labels)) or [""]
    for raw in hypotheses:
        h = HypothesisSection.model_validate(raw)
        if h.population is not None:
            pending.extend(_population_claim(h, frame, config or None, populations) for config in configs)
            continue
        a, op, b = h.parts
        sign = (1.0 if op in (">", ">=") else -1.0) * orientation
        for config in configs:
            part = frame[labels == config]
            pa, pb = part[part.branch == a], part[part.branch == b]
            b_dense = bool(len(pb)) and (pb["kind"] == "dense").all()
            levels = []
            for rnd, rows in pa.groupby("round"):
                twice = rows["seed"][rows["seed"].duplicated()]
                if len(twice):
                    raise PrunelabError(f"hypothesis {h.claim!r}: {a!r} has seed {twice.iloc[0]} twice at round {rnd} "
                                        "(two studies or configurations in one table); choose one (--study, --config)")
                rem = float(rows["remaining"].mean())
                if h.rounds and rnd not in h.rounds:
                    continue
                if h.remaining_at_most is not None and rem > h.remaining_at_most:
                    continue
                if h.remaining_at_least is not None and rem < h.remaining_at_least:
                    continue
                other = pb[pb["round"] == (0 if b_dense else rnd)]
                if len(other):
                    levels.append((int(rnd), rem, rows.set_index("seed")[value], other.set_index("seed")[value]))
            seeds = sorted(set.intersection(*[set(x.index) & set(y.index) for _, _, x, y in levels])) if levels else []
            common = dict(claim=h.claim, config=config or None,
                          rounds=tuple(r for r, *_ in levels), remaining=tuple(round(m, 1) for _, m, *_ in levels),
                          test=h.test)
            if len(seeds) < 2:
                why = ("no level of " + repr(a) + " matches the selection" if not levels else
                       f"{len(seeds)} seed(s) shared by {a!r} and {b!r} (2 needed)")
                pending.append((common, len(seeds), (math.nan,) * 4, math.nan, f"not testable: {why}"))
                continue
            diffs = np.mean([[x[s] - y[s] for s in seeds] for _, _, x, y in levels], axis=0)
            effect = paired_effect(diffs)
            p = paired_p(sign * diffs, np.zeros_like(diffs), h.test, "greater", margin=h.margin)
            why = None if p == p else "not testable: the differences are identical on every seed (t undefined; " \
                                      "test = \"permutation\" still applies)"
            pending.append((common, len(seeds), effect, p, why))
    valid = [i for i, item in enumerate(pending) if item[4] is None]
    adjusted = dict(zip(valid, holm([pending[i][3] for i in valid]))) if valid else {}
    out = []
    for i, (common, n, (mean, lo, hi, d), p, verdict) in enumerate(pending):
        q = adjusted.get(i, math.nan)
        if verdict is None:
            verdict = "supported" if q < alpha else "not supported"
        out.append(HypothesisResult(**common, n=n, mean=mean, ci_low=lo, ci_high=hi, d_z=d, p=p, p_adjusted=q,
                                    verdict=verdict))
    return out


def _population_claim(h, frame, config: str | None, populations):
    """(common fields, seeds, (mean, low, high, d_z), one-sided p, None or "not testable: why") of a population
    claim (analysis.population), in :func:`evaluate_hypotheses`'s pending form."""
    from .population import class_pays_trend

    kind, cls, branch = h.population
    rows = frame[(frame["branch"] == branch) & (frame["config"].fillna("").astype(str) == (config or ""))]
    levels = sorted({(int(r), float(m)) for r, m in zip(rows["round"], rows["remaining"])})
    common = dict(claim=h.claim, config=config, rounds=tuple(r for r, _ in levels),
                  remaining=tuple(round(m, 1) for _, m in levels), test=h.test if kind == "class" else "jackknife")
    nothing = (math.nan,) * 4
    if kind == "class":
        common["effect"] = f"slope of class {cls}'s normalised recall change per round"
        if "recall" not in frame or "test.accuracy" not in frame:
            return common, 0, nothing, math.nan, ("not testable: needs each model's per-class recall "
                                                  "(prunelab compare or report reads it from the store)")
        seeds, _, slopes = class_pays_trend(frame, cls, branch, config)
        if len(seeds) < 2 or len(levels) < 2:
            return common, len(seeds), nothing, math.nan, f"not testable: {len(seeds)} seeds over {len(levels)} rounds"
        p = paired_p(-slopes, np.zeros_like(slopes), h.test, "greater")
        return common, len(seeds), paired_effect(slopes), p, None
    common["effect"] = "slope of the PIE count per round"
    if populations is None:
        return common, 0, nothing, math.nan, ("not testable: needs the stored models' predictions "
                                              "(prunelab compare or report computes them)")
    trend = populations.pies_trend(branch, config)
    return common, trend["n"], (trend["slope"], trend["ci_low"], trend["ci_high"], math.nan), trend["p"], None
