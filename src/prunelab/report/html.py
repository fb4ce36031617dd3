"""One self-contained HTML file for a study store: images and CSVs embedded, opens offline.

The page leads with what the study found (its question, each declared hypothesis's answer with
effect, interval and p, the caveat that matters most), then the headline figure, then the
statistics and the other figures. Tables are formatted for reading (rounded numbers, units,
intervals as ``mean [low, high]``); each keeps its raw CSV as a download.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..analysis.fairness import group_impact, load_groups
from ..analysis.tables import (check_efficiency, configurations, first_seeds, headline_metric, select_configuration,
                               study_points, study_records, with_efficiency)
from ..analysis.variation import seed_vs_systematic
from ..errors import DataUnavailableError, PrunelabError
from ..experiment.query import Results, open_store
from ..headline import metric_info
from ..analysis.stats import check_interval
from . import plots
from .html_parts import (CHECK, STYLE, _LISTS, _Raw, _anchor, _decimals, _interval, _levels, _missing, _num, _p,
                         _p_is, _pct, display, section, table_section)
from .kinds import report_kind_for
from .population import open_populations, population_sections

_INTERVAL_TEXT = {"auto": "Student t below 30 seeds, bootstrap (BCa) from 30", "t": "Student t",
                  "bootstrap": "bootstrap (BCa, scipy.stats.bootstrap); below ~30 seeds it is too narrow "
                               "(docs/analysis.md)"}

TENSOR_SEEDS = 30  # the seeds whose tensors the report reads by default (build_report's tensor_seeds)
TREE_LINES = 400  # lines of the experiment tree shown in the page

# ---------------------------------------------------------------- the study's statistics, in words


def _claim_words(claim: str, margin: float, info) -> tuple[str, str, str, str]:
    """(A, B, the claim as a question, the claim as a statement)."""
    from ..spec import population_claim

    population = population_claim(claim)
    if population is not None:
        kind, cls, branch = population
        if kind == "class":
            return (branch, "dense", f"does class {cls} pay more than its share as {branch} prunes further",
                    f"class {cls} loses more recall than the model overall, more with each round of {branch}")
        return (branch, "dense", f"does {branch} forget more examples as it prunes further",
                f"the number of pruning-identified exemplars grows with each round of {branch}")
    a, op, b = claim.split(" ")[0], None, None
    for candidate in (" >= ", " <= ", " > ", " < "):
        if candidate in claim:
            a, b = claim.split(candidate, 1)
            op = candidate.strip()
            break
    metric = info.label
    if op == ">":
        return a, b, f"does {a} beat {b}", f"{a} has better {metric} than {b}"
    if op == "<":
        return a, b, f"is {a} worse than {b}", f"{a} has worse {metric} than {b}"
    if op == ">=":
        return (a, b, f"is {a} no worse than {b} (within {margin:g})",
                f"{a} is no worse than {b} by more than {margin:g} {metric}")
    return (a, b, f"is {a} no better than {b} (within {margin:g})",
            f"{a} is no better than {b} by more than {margin:g} {metric}")


COMPARISONS = "Planned comparisons: paired effects over seeds"
_TEST_WORDS = {"t": "one-sided paired t test", "permutation": "one-sided exact sign-flip permutation test",
               "jackknife": "one-sided t test on the slope's jackknife standard error over seeds"}


def _verdict_badge(verdict: str) -> str:
    cls = ("v-supported" if verdict == "supported" else "v-not" if verdict == "not supported" else "v-untestable")
    return f"<span class='verdict {cls}'>{html.escape(verdict.split(':')[0])}</span>"


def _hypothesis_line(r, info, family: int, margins: dict) -> str:
    a, b, _, statement = _claim_words(r.claim, margins.get(r.claim, 0.0), info)
    where = f" ({html.escape(r.config)})" if r.config else ""
    if r.verdict.startswith("not testable"):
        return (f"<li>{_verdict_badge(r.verdict)} <b>{html.escape(statement)}</b>{where}: "
                f"{html.escape(r.verdict.split(': ', 1)[-1])}.</li>")
    direction = "" if info.higher_is_better else f" ({info.label}: lower is better, so a negative difference favours {a})"
    levels = _levels(r.remaining)
    if r.effect:  # a population claim: its effect is a slope over the rounds, not A − B
        return (f"<li>{_verdict_badge(r.verdict)} <b>{html.escape(statement)}</b>{where} "
                f"over {html.escape(levels)} of the weights remaining: {html.escape(r.effect)} = "
                f"<b>{_interval(r.mean, r.ci_low, r.ci_high, signed=True)}</b> (95 % CI over {r.n} seeds); "
                f"{_TEST_WORDS.get(r.test, r.test)} p {html.escape(_p_is(r.p))}, Holm-adjusted over the {family} "
                f"declared hypotheses p <b>{html.escape(_p_is(r.p_adjusted))}</b>.</li>")
    return (f"<li>{_verdict_badge(r.verdict)} <b>{html.escape(statement)}</b>{where} "
            f"at {html.escape(levels)} of the weights remaining: {html.escape(a)} − {html.escape(b)} = "
            f"<b>{_interval(r.mean, r.ci_low, r.ci_high, signed=True)}</b> {html.escape(info.label)} "
            f"(95 % CI over {r.n} seeds){html.escape(direction)}; {_TEST_WORDS.get(r.test, r.test)} "
            f"p {html.escape(_p_is(r.p))}, Holm-adjusted over the {family} declared hypotheses "
            f"p <b>{html.escape(_p_is(r.p_adjusted))}</b>.</li>")


def _hypotheses_shown(results, info, margins: dict) -> pd.DataFrame:
    rows = []
    d = _decimals(*[x for r in results for x in (r.mean, r.ci_low, r.ci_high)], small=4)
    for r in results:
        margin = margins.get(r.claim, 0.0)
        row = {"claim": r.claim + (f" (margin {margin:g})" if margin else "")}
        if len({x.config for x in results}) > 1:
            row["configuration"] = r.config or "–"
        row |= {"weights remaining": _levels(r.remaining), "seeds": str(r.n),
                "A − B [95 % CI]": (_interval(r.mean, r.ci_low, r.ci_high, signed=True, decimals=d)
                                    + (f" ({r.effect})" if r.effect else "")),
                "d_z": _num(r.d_z, decimals=2), "test": _TEST_WORDS.get(r.test, r.test).replace("one-sided ", ""),
                "p (one-sided)": _p(r.p), "Holm p": _p(r.p_adjusted),
                "verdict": _Raw(_verdict_badge(r.verdict) + (html.escape(": " + r.verdict.split(": ", 1)[1])
                                                            if ": " in r.verdict else ""))}
        rows.append(row)
    return pd.DataFrame(rows)


def _comparisons_shown(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    configs = table["config"].fillna("").nunique() > 1  # one configuration: the summary names it
    d = _decimals(*table["difference"], *table["ci_low"], *table["ci_high"], small=4)
    for r in table.itertuples():
        level = _pct(r.remaining_a) + ("" if abs(r.remaining_a - r.remaining_b) < 0.05
                                       else f" vs {_pct(r.remaining_b)}")
        excludes = not _missing(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)
        diff = _interval(r.difference, r.ci_low, r.ci_high, signed=True, decimals=d)
        row = {"comparison (A − B)": f"{r.a} − {r.b}"}
        if configs:
            row["configuration"] = r.config or "–"
        if "planned" in table and not table["planned"].all():
            row["planned"] = "planned" if r.planned else "exploratory"
        row |= {"weights remaining": level, "seeds": str(r.seeds), "A": _num(r.mean_a), "B": _num(r.mean_b),
                "A − B [95 % CI]": _Raw(f"<b>{html.escape(diff)}</b>") if excludes else diff,
                "d_z": _num(r.d_z, decimals=2), "p (exact, two-sided)": _p(r.p), "Holm p": _p(r.p_adjusted)}
        rows.append(row)
    return pd.DataFrame(rows)


def _family_floor(table: pd.DataFrame) -> tuple[int, float, int, float] | None:
    """(seeds, the exact test's smallest two-sided p, the largest Holm family, its smallest adjusted p),
    or None when every family of the table can reach p < 0.05."""
    from ..analysis.effects import ALPHA, min_attainable_p

    worst = None
    for _, rows in table.groupby("family", sort=False):
        n, m = int(rows["seeds"].min()), len(rows)
        floor = min_attainable_p(n, "permutation")
        if min(1.0, m * floor) >= ALPHA and (worst is None or m * floor > worst[1] * worst[2]):
            worst = (n, floor, m, min(1.0, m * floor))
    return worst


def _effects(points: pd.DataFrame, metric: str, populations=None):
    """(hypothesis results, each claim's margin, planned comparisons table or None)."""
    from ..analysis.effects import compare_points, evaluate_hypotheses

    declared = points.attrs.get("hypotheses") or []
    margins = {h["claim"]: float(h.get("margin") or 0.0) for h in declared}
    results = (evaluate_hypotheses(points, declared, value=metric, metric=metric, populations=populations)
               if declared else [])
    try:
        table = compare_points(points, metric, test="permutation", family="pair")
    except PrunelabError:
        table = None
    return results, margins, table


def _superscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _effects_sections(results, margins: dict, table, tables: dict, info) -> list[str]:
    """Declared hypotheses (one family) and the planned comparisons (Holm within each comparison), each
    saying which test it uses and why their p-values differ."""
    sections = []
    if results:
        frame = pd.DataFrame([vars(r) for r in results])
        tables["hypotheses"] = frame
        tests = sorted({r.test for r in results})
        sections.append(table_section(
            "Declared hypotheses", frame, "hypotheses",
            f"Declared in the spec before the run and tested as one family. Per seed, A − B ({info.label}) is "
            "averaged over the listed levels of A (B at the same round, or the dense model); a population claim's "
            "effect is a slope over the rounds instead (its column says which); the test runs in the "
            "claim's direction: " + " and ".join(_TEST_WORDS[t] for t in tests) + ". "
            + ("The t test has no floor with few seeds (it assumes the per-seed differences are roughly normal), "
               "which is why these p-values can be small where the exact test of the next table cannot go below "
               "its floor. " if "t" in tests else "")
            + f"Holm's correction runs over all {len(results)} hypotheses; supported: Holm p < 0.05.",
            shown=_hypotheses_shown(results, info, margins)))
    if table is None:
        return sections
    tables["comparisons"] = table
    floor = _family_floor(table)
    power = ""
    if floor is not None:
        from ..analysis.effects import RANDOM_FLIPS_FROM, seeds_needed

        n, p_min, m, adjusted = floor
        need = seeds_needed(m, "permutation")
        why = (f"2 / 2{_superscript(n)}" if n < RANDOM_FLIPS_FROM else "it draws 9,999 random sign flips")
        power = (f" With {n} seeds the exact test cannot give p below {_p(p_min)} ({why})"
                 + (f", and Holm over a comparison's {m} levels no adjusted p below {_p(adjusted)}" if m > 1 else "")
                 + ": no row of this table can reach p < 0.05 here"
                 + (f" ({need} seeds would be needed)" if need else "") + ".")
    sections.append(table_section(
        COMPARISONS, table, "comparisons",
        "Every planned pair at every level, as a description of the effect sizes: each pruned branch vs the dense "
        "model and its controls, each consensus vs its random masks, each transferred ticket vs the target's dense "
        "model and random masks. A − B: mean over shared seeds with its 95 % t interval (bold where it excludes 0); "
        "d_z: A − B / SD of the per-seed differences. p: exact two-sided sign-flip permutation test "
        "(distribution-free, but an exact test over n seeds cannot go below 2/2ⁿ); Holm p: Holm's correction "
        "over the levels of that comparison. This table tests every level, two-sided, with the exact test; the "
        + ("declared hypotheses above test one claim each, one-sided, averaged over a range of levels, "
           "mostly with the t test — hence their smaller p-values." if results else
           "study declared no hypotheses, so no p-value here is a confirmatory test.") + power
        + " The intervals show the size of each effect whatever p says.",
        shown=_comparisons_shown(table)))
    return sections


def _variation_note(table: pd.DataFrame, labels: list[str]) -> str:
    if table.empty:
        return f"{len(labels)} configurations, but no branch was run in two distinct ones."
    deepest = table.sort_values("round").groupby("branch", sort=False).tail(1)
    parts = [f"{r.branch} round {r.round}: seed SD {r.seed_sd:.3f}, systematic SD {r.systematic_sd:.3f}, "
             f"best {r.best_config} ({r.best_mean:.3f}), ANOVA p {_p(r.anova_p)}" for r in deepest.itertuples()]
    return ("Seed SD: the spread between seeds within a configuration (pooled). Systematic SD: the spread of the "
            "configuration means with their seed noise removed (one-way random effects). At each branch's last round — "
            + "; ".join(parts) + ".")


def _group_note(impact: pd.DataFrame, attribute: str) -> str:
    pruned = impact[impact.branch != "dense"]
    dense = impact[impact.branch == "dense"]["difference"].mean()
    if pruned.empty:
        return ""
    worst = pruned.groupby(["branch", "remaining"])["difference"].mean().idxmax()
    gap = pruned.groupby(["branch", "remaining"])["difference"].mean().max()
    return (f"Computed with Fairlearn's MetricFrame from the stored weights' predictions. Dense models: mean "
            f"accuracy gap between {attribute} groups {dense:.3f}; the largest gap among pruned states is {gap:.3f} "
            f"({worst[0]} at {worst[1]:g} % weights remaining).")


def dataset_attribute(results: Results, points) -> tuple[str, Sequence] | None:
    """``(name, values)`` of the first test-example attribute of the study's dataset, if it has one."""
    from ..experiment.context import dataset_cache

    if points.empty:
        return None
    manifest = results.get(points["hash"].iloc[0])
    attributes = getattr(dataset_cache(manifest["dataset"], download=False), "attributes", None) or {}
    for name, values in attributes.items():
        return name, values
    return None


# ---------------------------------------------------------------- the summary at the top


def _within(metric: str, tolerance: float, dense: float) -> str:
    """'within 0.01' for a metric in [0, 1]; 'within 1 % (0.222)' for one whose limit is relative."""
    info = metric_info(metric)
    if info.bounds == (0.0, 1.0) or not dense:
        return f"within {tolerance:.3g}"
    return f"within {100 * tolerance / abs(dense):.3g} % ({tolerance:.3g})"


def _curve_sentence(table: pd.DataFrame, order: list[str], metric: str, tolerance: float) -> str:
    """The dense value; the pruned branch that stays within ``tolerance`` of it to the fewest weights
    (every level down to there within it); the branches at the sparsest level any branch reached."""
    info = metric_info(metric)
    dense = table[table.branch == "dense"]
    if dense.empty or not order:
        return ""
    d = dense.iloc[0]
    parts = [f"The dense model reaches {html.escape(info.label)} {_interval(d['mean'], d['ci_low'], d['ci_high'])}."]
    reach = {}  # branch → its last level of a run within the tolerance, from its densest level down
    for branch in order:
        mine = table[table.branch == branch].sort_values("remaining", ascending=False)
        ok = (info.sign * (mine["mean"] - d["mean"]) >= -tolerance - 1e-12).tolist()
        run = next((i for i, good in enumerate(ok) if not good), len(ok))
        if run:
            reach[branch] = mine.iloc[run - 1]
    if reach:
        best = min(reach, key=lambda b: (reach[b]["remaining"], -info.sign * reach[b]["mean"]))
        row = reach[best]
        parts.append(f"<b>{html.escape(best)}</b> stays {_within(metric, tolerance, d['mean'])} of it down to "
                     f"<b>{row['remaining']:g} %</b> "
                     f"of the weights ({_num(row['mean'])}), the fewest of any branch.")
    else:
        parts.append(f"No pruned branch stays {_within(metric, tolerance, d['mean'])} of it even at its densest level.")
    pruned = table[table.branch != "dense"]
    deepest = pruned["remaining"].min()
    at = pruned[(pruned["remaining"] - deepest).abs() < 0.05]
    at = at.assign(_o=info.sign * at["mean"]).sort_values("_o", ascending=False)
    shown = [f"{html.escape(r.branch)} {_interval(r.mean, r.ci_low, r.ci_high)}" for r in at.head(5).itertuples()]
    parts.append(f"At the sparsest level, {deepest:g} % of the weights: " + "; ".join(shown)
                 + (f" (and {len(at) - 5} more)" if len(at) > 5 else "") + ".")
    return " ".join(parts)


def _summary(results_h, margins: dict, comparisons, accuracy: pd.DataFrame, order: list[str], info, metric: str, *,
             name: str, model: str, dataset: str, n_seeds: int, branches: list[str], config_note: str,
             tensor_note: str, damaged: int, tolerance: float) -> str:
    """The report's abstract: the question, each declared hypothesis's answer with its numbers, the
    headline curve in one or two sentences, and the caveats, most important first."""
    rows = ", ".join(html.escape(b) for b in (["dense"] + branches)[:8]) + (
        f" and {len(branches) - 7} more" if len(branches) > 7 else "")
    setting = (f"<b>{html.escape(name)}</b>: {html.escape(model)} on {html.escape(dataset)}, {n_seeds} seed"
               f"{'s' if n_seeds != 1 else ''}, rows {rows}; headline metric {html.escape(plots.metric_label(metric))}.")
    parts = [f"<p>{setting}</p>"]
    if results_h:
        questions = list(dict.fromkeys(_claim_words(r.claim, margins.get(r.claim, 0.0), info)[2] for r in results_h))
        parts.append("<p><b>Question</b> (declared before the run): "
                     + html.escape(" ".join(q[:1].upper() + q[1:] + "?" for q in questions)) + "</p>")
        supported = sum(r.verdict == "supported" for r in results_h)
        parts.append(f"<p><b>Answer</b>: {supported} of {len(results_h)} declared hypotheses supported.</p><ul>"
                     + "".join(_hypothesis_line(r, info, len(results_h), margins) for r in results_h) + "</ul>")
    else:
        parts.append(f"<p><b>Question</b>: how does {html.escape(info.label)} change as weights are removed, and how do "
                     "the pruned branches compare with their controls? The spec declares no hypothesis, so the "
                     "numbers below describe effects; none is a confirmatory test (declare <code>[[hypotheses]]</code>"
                     " before a run for that).</p>")
        if comparisons is not None and len(comparisons):
            deepest = comparisons.loc[comparisons.groupby(["a", "b"], sort=False)["remaining_a"].idxmin()]
            lines = [f"{html.escape(r.a)} − {html.escape(r.b)} at {r.remaining_a:g} %: "
                     f"{_interval(r.difference, r.ci_low, r.ci_high, signed=True)}" for r in deepest.head(6).itertuples()]
            parts.append("<p><b>Planned comparisons at each one's sparsest level</b> (95 % CI over seeds): "
                         + "; ".join(lines) + ".</p>")
    curve = _curve_sentence(accuracy, order, metric, tolerance)
    if curve:
        parts.append(f"<p><b>Curve</b> (figure 1): {curve}</p>")
    caveats = []
    floor = _family_floor(comparisons) if comparisons is not None else None
    uses_t = any(r.test == "t" for r in results_h)
    if floor is not None:
        n, p_min, m, adjusted = floor
        caveats.append(f"{n} seeds: no planned comparison can reach p &lt; 0.05 with the exact permutation test "
                       f"(its smallest two-sided p is {_p(p_min)}"
                       + (f"; Holm over a comparison's {m} levels: {_p(adjusted)})" if m > 1 else ")")
                       + f" — see <a href='#{_anchor(COMPARISONS)}'>Planned comparisons</a>."
                       + (" The declared hypotheses use the one-sided t test, which has no such floor but assumes "
                          "the per-seed differences are roughly normal." if uses_t else ""))
    elif n_seeds < 5:
        caveats.append(f"Only {n_seeds} seeds: every interval is wide and rests on a t distribution with "
                       f"{n_seeds - 1} degrees of freedom.")
    untestable = [r for r in results_h if r.verdict.startswith("not testable")]
    if untestable:
        caveats.append(f"{len(untestable)} declared hypothes{'is' if len(untestable) == 1 else 'es'} could not be "
                       "tested (see the list above).")
    if damaged:
        caveats.append(f"{damaged} stored file{'s' if damaged != 1 else ''} could not be read; the sections that "
                       "needed them say so.")
    if config_note:
        caveats.append(config_note)
    if tensor_note:
        caveats.append(tensor_note)
    if caveats:
        parts.append(f"<p class=caveat><b>Caveat</b>: {caveats[0]}</p>")
        if len(caveats) > 1:
            parts.append("<p class=note>Also: " + " ".join(caveats[1:]) + "</p>")
    return "<section class=summary id=summary><h2>Summary</h2>" + "".join(parts) + "</section>"


# ---------------------------------------------------------------- the formatted tables behind the figures


def _levels_shown(table: pd.DataFrame, order: list[str], info) -> pd.DataFrame:
    keyed = {b: i for i, b in enumerate(["dense"] + order)}
    ranked = table.assign(_o=table["branch"].map(lambda b: keyed.get(b, len(keyed)))).sort_values(
        ["_o", "remaining"], ascending=[True, False])
    return pd.DataFrame({"branch": ranked["branch"].tolist(), "weights remaining": [_pct(v) for v in ranked["remaining"]],
                         "seeds": ranked["seeds"].astype(int).astype(str).tolist(),
                         f"{info.label} [95 % CI]": [_interval(m, lo, hi) for m, lo, hi
                                                     in zip(ranked["mean"], ranked["ci_low"], ranked["ci_high"])]})


def _pareto_shown(candidates: pd.DataFrame, choice: dict, efficiency: str, info) -> pd.DataFrame:
    chosen = {key: (row["branch"], row["remaining"]) if row is not None else None
              for key, row in (("a", choice["without_fairness"]), ("b", choice["with_fairness"]))}
    rows = []
    for r in candidates.sort_values([efficiency, "mean"], ascending=[True, not info.higher_is_better]).itertuples():
        mark = []
        if chosen["a"] == (r.branch, r.remaining):
            mark.append("chosen" + ("" if chosen["a"] == chosen["b"] or not choice["limits"][1:]
                                    else f" ({info.label} limit only)"))
        if chosen["b"] == (r.branch, r.remaining) and chosen["a"] != chosen["b"] and choice["limits"][1:]:
            mark.append("chosen (+ worst-class limit)")
        row = {"branch": r.branch, "weights remaining": _pct(r.remaining)}
        if efficiency != "sparsity":
            row[plots.EFFICIENCY_REMAINING[efficiency].split(" (")[0]] = _pct(100 - getattr(r, efficiency))
        row |= {f"{info.label} [95 % CI]": _interval(r.mean, r.ci_low, r.ci_high),
                "worst-class recall [95 % CI]": _interval(r.worst_recall, r.worst_recall_low, r.worst_recall_high),
                "Pareto-optimal": "yes" if r.pareto else "", "chosen": "; ".join(mark)}
        rows.append(row)
    shown = pd.DataFrame(rows)
    if candidates["worst_recall"].isna().all():
        shown = shown.drop(columns="worst-class recall [95 % CI]")
    return shown


def _structure_shown(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The deepest round of each masked row, best row first, tensors in layer order (every round is in
    the CSV)."""
    deepest = table.groupby([table["config"].fillna(""), "branch"])["round"].transform("max")
    rank = {b: i for i, b in enumerate(order)}
    table = table[table["round"] == deepest]
    table = table.assign(_r=table["branch"].map(lambda b: rank.get(b, len(rank)))).sort_values("_r", kind="stable")
    shown = pd.DataFrame({"branch": table["branch"], "round": table["round"].astype(str),
                          "weights remaining": table["remaining"].map(_pct), "tensor": table["tensor"],
                          "group": table["group"], "group size": table["size"].astype(str),
                          "seeds": table["seeds"].astype(str),
                          "fully pruned [95 % CI]": [_interval(m, lo, hi) for m, lo, hi in
                                                     zip(table["fraction"], table["fraction_low"],
                                                         table["fraction_high"])],
                          "chance (exact)": table["expected"].map(lambda v: "< 0.001" if 0 < v < 1e-3 else _num(v)),
                          "p": table["p"].map(_p)})
    if "config" in table and table["config"].fillna("").nunique() > 1:
        shown.insert(0, "configuration", table["config"].fillna("–"))
    if "random_masks" in table and table["random_masks"].notna().any():
        shown["random masks [95 % CI]"] = [_interval(m, lo, hi) for m, lo, hi in
                                           zip(table["random_masks"], table["random_masks_low"],
                                               table["random_masks_high"])]
        shown["p vs random masks"] = table["p_random"].map(_p)
    return shown


def _choice_sentence(choice: dict, efficiency: str, info) -> str:
    """The operating point chosen, in weights (or FLOPs, parameters) remaining, and what the worst-class
    limit changed."""
    what = plots.EFFICIENCY_REMAINING[efficiency].split(" (")[0]
    a, b = choice["without_fairness"], choice["with_fairness"]

    def point(row):
        return (f"{row['branch']} at {100 - row[efficiency]:.1f} % {what} ({info.label} {_num(row['mean'])}"
                + (f", worst-class recall {_num(row['worst_recall'])}" if row.get("worst_recall") == row.get("worst_recall")
                   else "") + ")")

    if a is None:
        return f"No branch and level meets the limit ({choice['limits'][0]})."
    text = f"Within the {info.label} limit the most efficient point is {point(a)}."
    if len(choice["limits"]) > 1:
        if b is None:
            text += " No point also meets the worst-class limit."
        elif b is a:
            text += " Adding the worst-class limit does not change the choice."
        else:
            text += f" Adding the worst-class limit changes it to {point(b)}."
    return text


# ---------------------------------------------------------------- the report


def _token_costs(results: Results, points: pd.DataFrame, top: int = 5) -> pd.DataFrame | None:
    """A language study's :func:`~prunelab.analysis.text.study_token_costs`, top characters per pruned row."""
    from ..analysis.text import study_token_costs

    frames = []
    for branch, rows in points[points["kind"] != "dense"].groupby("branch", sort=False):
        last = int(rows["round"].max())
        try:
            table = study_token_costs(results, points, branch, last).head(top)
        except PrunelabError:
            continue  # no dense model of the same seed (a transfer target's row)
        shown = table["class"].map(lambda c: {" ": "␣", "\n": "⏎"}.get(c, c.encode("unicode_escape").decode()))
        frames.append(pd.DataFrame({
            "row": branch, "round": last, "weights remaining (%)": round(float(rows["remaining"].mean()), 1),
            "character": shown, "count": table["support"], "dense loss": table["dense_loss"].round(3),
            "pruned loss": table["pruned_loss"].round(3),
            "Δ loss [95 % CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if lo == lo else f"{d:+.3f}"
                                 for d, lo, hi in zip(table["delta"], table["ci_low"], table["ci_high"])],
            "share of the rise": (100 * table["share"]).round(1).astype(str) + " %"}))
    return pd.concat(frames, ignore_index=True) if frames else None


def build_report(store: str | Path | Results, out: str | Path, csv_dir: str | Path | None = None, *,
                 config: str | None = None, groups: str | Path | tuple[str, Sequence] | None = None,
                 group_column: str | None = None, interval: str = "auto", efficiency: str = "sparsity",
                 tensor_seeds: int | None = TENSOR_SEEDS) -> Path:
    """Write the report of a study store to ``out`` (HTML); optionally every table as CSV to ``csv_dir``.

    ``config``: in a swept study, the configuration the main sections show
    (default: the first label); every configuration appears in the variation
    section. ``groups``: a CSV file with a sensitive attribute per test example
    (``group_column`` picks the column), or ``(name, values)``; adds the group
    fairness section. ``interval``: ``auto``, ``t`` or ``bootstrap`` (see
    :func:`prunelab.analysis.stats.mean_ci`). ``efficiency``: the Pareto section's efficiency
    axis, ``sparsity``, ``flops_removed`` or ``params_removed``. ``tensor_seeds``: the
    sections that read stored tensors (group fairness, mask similarity, emergent structure, weight
    stability) read the first this many seeds (None or 0: every seed) and say so; every other
    section reads every seed, from the index. That keeps a report of a 100,000-state study within
    a minute and bounded memory (docs/benchmarks/store_scale.md).
    """
    results = store if isinstance(store, Results) else open_store(store)
    kind = report_kind_for(results)
    if kind is not None:  # e.g. a shower-GAN study: fidelity against sparsity instead of accuracy
        return kind.build(results, out)
    check_interval(interval)  # bad options fail before any work
    check_efficiency(efficiency)
    if _is_regression(results):
        return _regression_report(results, out, csv_dir, interval)
    metric = headline_metric(results)
    info = metric_info(metric)
    everything = study_points(results, metric=metric)
    labels = configurations(everything)
    if labels and config is None:
        config = labels[0]
    selected = select_configuration(everything, config, results.store.root) if config is not None else everything
    main = everything.attrs.get("main_dataset")
    points = selected[selected["dataset"] == main] if main in set(selected["dataset"]) else selected
    points.attrs.update(everything.attrs)
    selected.attrs.update(everything.attrs)
    targets = [d for d in dict.fromkeys(selected["dataset"]) if d != main]
    if efficiency != "sparsity":
        points = with_efficiency(results, points)
    attribute, impact, data_note = None, None, ""
    if groups is None:  # the dataset's own per-example attributes (e.g. a shower's incident energy bin)
        try:
            groups = dataset_attribute(results, points)
        except DataUnavailableError as exc:  # everything else reads the store alone: go on without them
            data_note = (f"The study's dataset is not in the cache or mirror here, so its per-example groups (if it "
                         f"has any) are left out ({html.escape(str(exc).split('. ')[0])}).")
    if groups is not None:  # first, so a bad group file fails before the slow part
        attribute, group_values = (load_groups(groups, group_column) if isinstance(groups, (str, Path))
                                   else (groups[0], groups[1]))
        try:
            impact = group_impact(results, first_seeds(points, tensor_seeds), group_values)
        except PrunelabError as exc:
            raise PrunelabError(f"{groups if isinstance(groups, (str, Path)) else 'groups'}: {exc}") from None
    branches = plots.branches_by_merit(points, metric)
    sections, tables = [], {}
    sampled = first_seeds(points, tensor_seeds)  # what the sections reading tensors read
    read = _tensor_note(points, sampled)
    n_seeds = int(points["seed"].nunique())
    populations, population_note = open_populations(results, points)
    if populations is None and "dataset" in population_note:
        data_note = " ".join(filter(None, (data_note, f"The population sections (per-class tests over seeds, PIEs) "
                                                      f"are left out: {html.escape(population_note)}.")))
    hypotheses, margins, comparisons = _effects(selected, metric, populations)

    levels = [x for r in hypotheses for x in r.remaining]
    fig, t = plots.accuracy_vs_remaining(points, interval, metric=metric,
                                         highlight=(min(levels), max(levels)) if levels else None)
    tables["accuracy"] = t
    title = (f"Figure 1: {info.label[:1].upper() + info.label[1:]} vs weights remaining"
             + (f" on {main}" if targets else ""))
    sections.append(section(title, fig, t, "accuracy",
                             "Mean over seeds with its 95 % interval (band) per branch; dense: dashed, with its band"
                             + ("; shaded: the levels the declared hypotheses average over" if levels else "")
                             + f". Branches are listed best first (mean {info.label} at their sparsest level).",
                             shown=_levels_shown(t, branches, info)))
    for i, target in enumerate(targets, start=1):  # consensus and transfer targets: their own axes
        on = selected[selected["dataset"] == target]
        fig, t = plots.accuracy_vs_remaining(on, interval, metric=metric)
        tables[f"accuracy_target{i}"] = t
        sections.append(section(f"{info.label[:1].upper() + info.label[1:]} vs weights remaining on {target}", fig, t,
                                 f"accuracy_target{i}",
                                 f"Rows trained and evaluated on {target} (a transfer or consensus target), each "
                                 "beside that task's own dense model and random masks.",
                                 shown=_levels_shown(t, plots.branches_by_merit(on, metric), info)))
    sections += _effects_sections(hypotheses, margins, comparisons, tables, info)
    if labels:
        table = seed_vs_systematic(everything.rename(columns={"hash": "state"}), metric)
        tables["variation"] = table
        sections.append(section("Seed variation vs systematic variation (the sweep)",
                                 plots.variation_plot(everything, metric=metric),
                                 table, "variation", _variation_note(table, labels)))
    if metric.endswith(".perplexity"):
        t = _token_costs(results, points)
        if t is not None:
            tables["who_pays_tokens"] = t
            sections.append(table_section(
                "Who pays for sparsity: the characters whose loss rises most", t, "who_pays_tokens",
                "Each pruned row at its sparsest level against the dense model of the same seed: the mean loss "
                "(nats) of the test positions whose next character is c, its rise Δ with a 95 % t interval over "
                "seeds, and its share of the whole rise (count × mean Δ over the sum of them: shares add up to 100 %, "
                "and one above 100 % means other characters got easier); five characters a row, largest share "
                "first. ␣ is a space, ⏎ a line break."))
    if branches and points["recall"].map(lambda r: bool(len(r)) if isinstance(r, (list, tuple)) else False).any():
        fig, t = plots.per_class_heatmaps(points, branches, headline=metric)
        tables["per_class"] = t
        sections.append(section("Who pays for sparsity: per-class recall change", fig, t, "per_class",
                                 "One panel per branch, best first, on one colour scale; each cell is the mean over "
                                 "seeds of the class's recall minus the dense model's (same seed). Blue: the class "
                                 "gained recall, red: it lost."))
    if populations is not None:
        more, population_tables = population_sections(populations, branches)
        sections += more
        tables.update(population_tables)
    if "roc_auc" in points and points["roc_auc"].notna().any():
        fig, t = plots.binary_metrics_vs_remaining(points, interval)
        tables["binary"] = t
        sections.append(section("ROC AUC and background rejection vs weights remaining", fig, t, "binary",
                                 "Two classes: class 1 is the signal. Rejection = 1/FPR at the threshold keeping 90 % "
                                 "of the signal; where no background event passes it is unbounded and left out of the "
                                 "mean (column rejection_90_unbounded counts those seeds)."))
    fig, t = plots.disparity_vs_remaining(points, interval, metric=metric)
    tables["disparity"] = t
    sections.append(section("Disparity vs weights remaining", fig, t, "disparity",
                             "Four summaries of the per-class recalls of each model, mean and 95 % interval over seeds.",
                             missing="the study stores no per-class recall"))
    if impact is not None:
        fig, t = plots.group_plot(impact, branches[0] if branches else "dense", attribute, interval)
        tables["groups"] = impact
        sections.append(section(f"Group fairness: accuracy by {attribute}", fig, impact, "groups",
                                 _group_note(impact, attribute) + read))
    fig, t, choice = plots.pareto_plot(points, interval=interval, efficiency=efficiency, metric=metric)
    tables["pareto"] = t
    limits = " and ".join(choice["limits"])
    sections.append(section(f"Pareto operating points ({efficiency.replace('_', ' ')}, {info.label}"
                             + (", worst-class recall)" if len(choice["limits"]) > 1 else ")"),
                             fig, t, "pareto",
                             f"Each branch at each level (mean over seeds). Constraints: {limits}. "
                             + (f"Worst-class recall is {_num(choice['constant_worst'])} for every point, so it is no "
                                "axis here. " if choice.get("constant_worst") is not None else "")
                             + _choice_sentence(choice, efficiency, info),
                             shown=_pareto_shown(t, choice, efficiency, info)))
    fig, t, unread = _from_tensors(results, lambda: plots.mask_similarity(results, sampled, metric=metric))
    tables["similarity"] = t
    sections.append(section("Mask similarity between branches", fig, t, "similarity",
                             "Jaccard of the kept weights (1: the same mask). Chance: the expected Jaccard of two "
                             "random masks with the same kept count in every tensor (exact per tensor; overall from "
                             "4,000 seeded hypergeometric draws), not the overall density, which understates it when "
                             "layers are pruned to different densities. z (table): (observed − chance) / SD of chance."
                             + read, missing=unread or "needs two or more pruned branches"))
    fig, t, unread = _from_tensors(results, lambda: plots.structure_plot(results, sampled, interval, metric=metric))
    tables["structure"] = t
    sections.append(section("Emergent structure vs random pruning", fig, t, "structure",
                             "Fraction of groups (units, filters, input channels, kernels) with every weight pruned, "
                             "over seeds, for every masked row and round (table), in layer order. Chance: the exact "
                             "expectation for random pruning of the same count in that tensor, C(m, g) / C(n, g); "
                             "random masks: the same fraction in the study's random-pruning control of that row. "
                             "p: paired t over seeds of observed − chance; p vs random masks: of observed − control. "
                             "The table shows each row's deepest round; the CSV has every round." + read, missing=unread or "needs a pruned row",
                             shown=_structure_shown(t, branches) if t is not None and not t.empty else None))
    fig, t, unread = _from_tensors(results, lambda: plots.stability_plot(results, sampled, interval, metric=metric))
    tables["stability"] = t
    summary_t = plots.stability_summary(t, interval) if t is not None and not t.empty else None
    sections.append(section("Weight stability", fig, t, "stability",
                             "Over the weights each mask keeps: sign agreement and relative distance between the "
                             "rewind point and the trained weights (rewinding branches), and the cosine similarity "
                             "of the trained weights of consecutive rounds (every pruned branch). The table: mean "
                             "and 95 % interval over seeds per branch and level (the CSV has one row per state)." + read,
                             missing=unread or "needs a pruned branch with two or more rounds, or one that rewinds",
                             shown=None if summary_t is None else display(summary_t)))

    first = points[points.branch != "dense"] if (points.branch != "dense").any() else points
    manifest = results.get(first["hash"].iloc[0])
    record = study_records(results)[0]
    config_note = (f"Sweep: {len(labels)} configurations; every section but the variation section shows "
                   f"<b>{html.escape(config)}</b> (<code>prunelab report --config</code> picks another)."
                   if labels else "")
    tolerance, _ = plots.operating_tolerance(metric, choice.get("dense", float("nan")), 0.01)
    summary = _summary(hypotheses, margins, comparisons, tables["accuracy"], branches, info, metric,
                       name=str(record.get("name", "study")), model=str((manifest.get("spec") or {}).get("model", "")),
                       dataset=str(main or manifest.get("dataset", "")), n_seeds=n_seeds, branches=branches,
                       config_note=" ".join(filter(None, (config_note, data_note))), damaged=len(results.damaged),
                       tensor_note=(f"The sections that read stored tensors (mask similarity, emergent structure, "
                                    f"weight stability{', group fairness' if impact is not None else ''}) use the "
                                    f"first {sampled['seed'].nunique()} of {n_seeds} seeds." if read else ""),
                       tolerance=tolerance)
    title = f"{record.get('name', 'study')}: study report"
    header = (f"{html.escape(str(results.store.root))} · {len(results):,} stored states · {n_seeds} seeds · "
              f"intervals are 95 % over seeds ({_INTERVAL_TEXT[interval]})")
    return _write_page(results, header, [summary] + sections, tables, out, csv_dir, title=title)


def _from_tensors(results: Results, make) -> tuple:
    """(figure, table, "") of a section that reads stored tensors, or (None, None, why) when one of its
    files cannot be read: the file is reported as damaged (the command exits 2) and the rest of the
    report is written."""
    from ..errors import StoreError

    try:
        return (*make(), "")
    except StoreError as exc:
        where, _, why = str(exc).partition(": ")
        results.damaged.setdefault(Path(where), why or str(exc))
        return None, None, f"a stored file could not be read ({exc})"


def _is_regression(results: Results) -> bool:
    """Whether the study's trained points are regressions (read from the first finished one)."""
    hashes = (p["hash"] for record in study_records(results) for p in record["points"])
    for summary in results.each_summary(hashes, chunk=64):
        if summary is not None and summary["status"] == "done":
            return summary["scalars"].get("test.task") == "regression"
    return False


def _tensor_note(points, sampled) -> str:
    total, read = points["seed"].nunique(), sampled["seed"].nunique()
    if read == total:
        return ""
    return (f" Read from the stored tensors of the first {read} of {total} seeds "
            "(`prunelab report --tensor-seeds N`; 0 reads every seed).")


def _tree_text(results: Results) -> str:
    """The collapsed experiment tree as plain text, its first ``TREE_LINES`` lines (``prunelab
    tree`` prints it all)."""
    lines, max_lines = [], TREE_LINES
    for i, line in enumerate(results.tree_lines(markup=False)):
        if i == max_lines:
            return "\n".join(lines) + (f"\n… the tree continues ({len(results)} states in all): "
                                       f"prunelab tree {results.store.root}")
        lines.append(line)
    return "\n".join(lines)


def _nav(sections: list[str]) -> str:
    import re

    links = re.findall(r"<section[^>]* id=([\w-]+)[^>]*><h2>(.*?)</h2>", "".join(sections))
    return ("<nav>Contents: " + " ".join(f"<a href='#{a}'>{t}</a>" for a, t in links)
            + " <a href='#experiment-tree'>Experiment tree</a></nav>") if links else ""


def _write_page(results: Results, header: str, sections: list[str], tables: dict, out, csv_dir,
                title: str = "prunelab report") -> Path:
    """The HTML page (sections, then the experiment tree), written atomically; each table as CSV."""
    tree_text = html.escape(_tree_text(results))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>report</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=sub>{header}</p>{_nav(sections)}"
            + "".join(sections)
            + f"<section id=experiment-tree><h2>Experiment tree</h2><pre>{tree_text}</pre></section>{CHECK}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(page)
    tmp.replace(out)
    if csv_dir is not None:
        csv_dir = Path(csv_dir)
        csv_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            if frame is not None and not frame.empty:
                frame.drop(columns=[c for c in _LISTS if c in frame], errors="ignore").to_csv(
                    csv_dir / f"{name}.csv", index=False)
    return out


def _regression_report(results: Results, out, csv_dir, interval: str) -> Path:
    """A regression study (e.g. calo_energy): the summary (hypotheses and curve on the resolution, lower
    is better), resolution and RMSE vs weights remaining, the statistics, and bias and resolution per
    bin of the true target, each with intervals over seeds."""
    metric = "test.resolution"
    info = metric_info(metric)
    points = study_points(results, metric=metric)
    summaries = results.summaries(points["hash"])
    points["test.rmse"] = [summaries[h]["scalars"]["test.rmse"] for h in points["hash"]]
    hypotheses, margins, comparisons = _effects(points, metric)
    order = plots.branches_by_merit(points, metric)
    sections, tables = [], {}
    fig, t = plots.metric_vs_remaining(points, metric, "test resolution σ(prediction/target)", interval)
    tables["resolution"] = t
    sections.append(section("Figure 1: Resolution vs weights remaining", fig, t, "resolution",
                             "Standard deviation of prediction/target on the test split (lower is better)."))
    fig, t = plots.metric_vs_remaining(points, "test.rmse", "test RMSE (target units)", interval)
    tables["rmse"] = t
    sections.append(section("RMSE vs weights remaining", fig, t, "rmse"))
    sections += _effects_sections(hypotheses, margins, comparisons, tables, info)
    fig, t = plots.regression_bins(results, points, interval)
    tables["bins"] = t
    sections.append(section("Who pays for sparsity: bias and resolution per target bin", fig, t, "bins",
                             "Bins are quintiles of the true target on the test split; the branch shown is the one "
                             "with the best resolution at its sparsest level."))
    levels = plots._branch_levels(points, interval, metric)
    dense = levels[levels.branch == "dense"]["mean"]
    tolerance, _ = plots.operating_tolerance(metric, float(dense.iloc[0]) if len(dense) else float("nan"), 0.01)
    record = study_records(results)[0]
    manifest = results.get(points["hash"].iloc[0])
    n_seeds = int(points["seed"].nunique())
    summary = _summary(hypotheses, margins, comparisons, levels, order, info, metric,
                       name=str(record.get("name", "study")), model=str((manifest.get("spec") or {}).get("model", "")),
                       dataset=str(record.get("dataset") or manifest.get("dataset", "")), n_seeds=n_seeds,
                       branches=order, config_note="", tensor_note="", damaged=len(results.damaged),
                       tolerance=tolerance)
    header = (f"{html.escape(str(results.store.root))} · {len(results):,} stored states · a regression study · "
              f"{n_seeds} seeds · intervals are 95 % over seeds ({_INTERVAL_TEXT[interval]})")
    return _write_page(results, header, [summary] + sections, tables, out, csv_dir,
                       title=f"{record.get('name', 'study')}: study report")
