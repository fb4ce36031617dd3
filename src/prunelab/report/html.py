"""One self-contained HTML file for a study store: images and CSVs embedded, opens offline."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from ..analysis.fairness import group_impact, load_groups
from ..analysis.tables import (check_efficiency, configurations, first_seeds, select_configuration, study_points,
                               study_records, with_efficiency)
from ..analysis.variation import seed_vs_systematic
from ..errors import PrunelabError
from ..experiment.query import Results, open_store
from ..study import check_interval
from . import plots

_INTERVAL_TEXT = {"auto": "Student t below 30 seeds, bootstrap (BCa) from 30", "t": "Student t",
                  "bootstrap": "bootstrap (BCa, scipy.stats.bootstrap); below ~30 seeds it is too narrow "
                               "(docs/analysis.md)"}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}h1{margin-bottom:0}.sub{color:#666;margin-top:.3em}section{margin:2.2em 0}
img{max-width:100%;border:1px solid #eee}table{border-collapse:collapse;font-size:12px;margin-top:.6em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f5f5f5}
pre{background:#fafafa;border:1px solid #eee;padding:.6em;font-size:11px;overflow-x:auto;max-height:420px}
details summary{cursor:pointer;color:#357}.note{color:#555;font-size:13px}
"""

# Sets the page title to "report: N/M images loaded" once every image has decoded,
# so a headless browser can check the report really renders.
_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `report: ${ok}/${imgs.length} images loaded`;
});
</script>"""


TENSOR_SEEDS = 30  # the seeds whose tensors the report reads by default (build_report's tensor_seeds)
TREE_LINES = 400  # lines of the experiment tree shown in the page

_LISTS = ("recall", "precision", "f1", "class_names")  # per-class lists: in the per-class table instead


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(frame: pd.DataFrame, name: str, max_rows: int = 60) -> str:
    if frame is None or frame.empty:
        return ""
    shown = frame.drop(columns=[c for c in _LISTS + ("hash", "parent") if c in frame], errors="ignore")
    csv = base64.b64encode(shown.to_csv(index=False).encode()).decode()
    body = shown.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
    more = f" (first {max_rows} of {len(shown)} rows)" if len(shown) > max_rows else ""
    return (f'<details><summary>table behind the plot{more} — '
            f'<a download="{name}.csv" href="data:text/csv;base64,{csv}">download CSV</a></summary>{body}</details>')


def _section(title: str, fig, table: pd.DataFrame | None, name: str, note: str = "", missing: str = "") -> str:
    if fig is None:
        return f"<section><h2>{html.escape(title)}</h2><p class=note>not available for this store: {html.escape(missing)}</p></section>"
    return (f"<section><h2>{html.escape(title)}</h2>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'
            + (f"<p class=note>{html.escape(note)}</p>" if note else "") + _table(table, name) + "</section>")


def _table_section(title: str, frame: pd.DataFrame, name: str, note: str = "", max_rows: int = 40) -> str:
    """A section whose content is a table (shown open, not behind a plot)."""
    if frame is None or frame.empty:
        return ""
    shown = frame.drop(columns=[c for c in _LISTS + ("hash", "parent") if c in frame], errors="ignore")
    body = shown.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
    return (f"<section><h2>{html.escape(title)}</h2>" + (f"<p class=note>{html.escape(note)}</p>" if note else "")
            + body + f'<p class=note><a download="{name}.csv" href="data:text/csv;base64,'
            + base64.b64encode(shown.to_csv(index=False).encode()).decode() + '">download CSV</a>'
            + (f" (first {max_rows} of {len(shown)} rows shown)" if len(shown) > max_rows else "") + "</p></section>")


def _effects_sections(points: pd.DataFrame, tables: dict) -> list[str]:
    """Declared hypotheses (one family) and the planned comparisons (Holm within each comparison)."""
    from ..analysis.effects import compare_points, evaluate_hypotheses, power_note

    sections = []
    declared = points.attrs.get("hypotheses") or []
    if declared:
        results = evaluate_hypotheses(points, declared, value=plots.METRIC)
        frame = pd.DataFrame([vars(r) for r in results])
        tables["hypotheses"] = frame
        verdicts = "; ".join(f"{r.claim}{' (' + r.config + ')' if r.config else ''}: {r.verdict}" for r in results)
        sections.append(_table_section(
            "Declared hypotheses", frame, "hypotheses",
            "Declared in the spec before the run and tested as one family: per seed, A − B averaged over the "
            "selected levels; one-sided test in the claim's direction; Holm over all hypotheses. " + verdicts + "."))
    try:
        table = compare_points(points, plots.METRIC, test="permutation", family="pair")
    except PrunelabError:
        return sections
    tables["comparisons"] = table
    note = power_note(table, "permutation")
    sections.append(_table_section(
        "Planned comparisons: paired effects over seeds", table, "comparisons",
        "Each pruned branch vs the dense model and its controls, each consensus vs its random masks, each "
        "transferred ticket vs the target's dense model and random masks. difference: mean of A − B over shared "
        "seeds with its 95 % t interval (ci_low, ci_high); d_z: difference / SD of the differences; p: exact "
        "two-sided sign-flip test; p_adjusted: Holm within each comparison's levels (family)."
        + (" " + note if note else "")))
    return sections


def _variation_note(table: pd.DataFrame, labels: list[str]) -> str:
    if table.empty:
        return f"{len(labels)} configurations, but no branch was run in two distinct ones."
    deepest = table.sort_values("round").groupby("branch", sort=False).tail(1)
    parts = [f"{r.branch} round {r.round}: seed SD {r.seed_sd:.3f}, systematic SD {r.systematic_sd:.3f}, "
             f"best {r.best_config} ({r.best_mean:.3f}), ANOVA p {r.anova_p:.2g}" for r in deepest.itertuples()]
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
    :func:`prunelab.study.mean_ci`). ``efficiency``: the Pareto section's efficiency
    axis, ``sparsity``, ``flops_removed`` or ``params_removed``. ``tensor_seeds``: the
    sections that read stored tensors (group fairness, mask similarity, emergent structure, weight
    stability) read the first this many seeds (None or 0: every seed) and say so; every other
    section reads every seed, from the index. That keeps a report of a 100,000-state study within
    a minute and bounded memory (docs/benchmarks/store_scale.md).
    """
    results = store if isinstance(store, Results) else open_store(store)
    from ..hep.gan_study import is_gan_store

    if is_gan_store(results):  # a shower-GAN study: fidelity against sparsity instead of accuracy
        from ..hep.gan_report import store_report

        return store_report(results, out)
    check_interval(interval)  # bad options fail before any work
    check_efficiency(efficiency)
    if _is_regression(results):
        return _regression_report(results, out, csv_dir, interval)
    everything = study_points(results)
    labels = configurations(everything)
    if labels and config is None:
        config = labels[0]
    selected = select_configuration(everything, config, results.store.root) if config is not None else everything
    main = everything.attrs.get("main_dataset")
    points = selected[selected["dataset"] == main] if main in set(selected["dataset"]) else selected
    points.attrs.update(everything.attrs)
    targets = [d for d in dict.fromkeys(selected["dataset"]) if d != main]
    if efficiency != "sparsity":
        points = with_efficiency(results, points)
    attribute, impact = None, None
    if groups is None:  # the dataset's own per-example attributes (e.g. a shower's incident energy bin)
        groups = dataset_attribute(results, points)
    if groups is not None:  # first, so a bad group file fails before the slow part
        attribute, group_values = (load_groups(groups, group_column) if isinstance(groups, (str, Path))
                                   else (groups[0], groups[1]))
        try:
            impact = group_impact(results, first_seeds(points, tensor_seeds), group_values)
        except PrunelabError as exc:
            raise PrunelabError(f"{groups if isinstance(groups, (str, Path)) else 'groups'}: {exc}") from None
    branches = plots.branches_by_merit(points)
    sections, tables = [], {}
    sampled = first_seeds(points, tensor_seeds)  # what the sections reading tensors read
    read = _tensor_note(points, sampled)

    fig, t = plots.accuracy_vs_remaining(points, interval)
    tables["accuracy"] = t
    sections.append(_section("Accuracy vs weights remaining" + (f" on {main}" if targets else ""), fig, t, "accuracy"))
    for i, target in enumerate(targets, start=1):  # consensus and transfer targets: their own axes
        on = selected[selected["dataset"] == target]
        fig, t = plots.accuracy_vs_remaining(on, interval)
        tables[f"accuracy_target{i}"] = t
        sections.append(_section(f"Accuracy vs weights remaining on {target}", fig, t, f"accuracy_target{i}",
                                 f"Rows trained and evaluated on {target} (a transfer or consensus target), each "
                                 "beside that task's own dense model and random masks."))
    sections += _effects_sections(selected, tables)
    if labels:
        table = seed_vs_systematic(everything.rename(columns={"hash": "state"}), plots.METRIC)
        tables["variation"] = table
        sections.append(_section("Seed variation vs systematic variation (the sweep)", plots.variation_plot(everything),
                                 table, "variation", _variation_note(table, labels)))
    if branches:
        fig, t = plots.per_class_heatmaps(points, branches)
        tables["per_class"] = t
        sections.append(_section("Who pays for sparsity: per-class recall change", fig, t, "per_class",
                                 "One panel per branch, best first (mean accuracy at its sparsest level), on one colour "
                                 "scale; blue: the class gained, red: it lost recall against the dense model of the "
                                 "same seed."))
    if "roc_auc" in points and points["roc_auc"].notna().any():
        fig, t = plots.binary_metrics_vs_remaining(points, interval)
        tables["binary"] = t
        sections.append(_section("ROC AUC and background rejection vs weights remaining", fig, t, "binary",
                                 "Two classes: class 1 is the signal. Rejection = 1/FPR at the threshold keeping 90 % "
                                 "of the signal; where no background event passes it is unbounded and left out of the "
                                 "mean (column rejection_90_unbounded counts those seeds)."))
    fig, t = plots.disparity_vs_remaining(points, interval)
    tables["disparity"] = t
    sections.append(_section("Disparity vs weights remaining", fig, t, "disparity"))
    if impact is not None:
        fig, t = plots.group_plot(impact, branches[0] if branches else "dense", attribute, interval)
        tables["groups"] = impact
        sections.append(_section(f"Group fairness: accuracy by {attribute}", fig, impact, "groups",
                                 _group_note(impact, attribute) + read))
    fig, t, choice = plots.pareto_plot(points, interval=interval, efficiency=efficiency)
    tables["pareto"] = t
    sections.append(_section(f"Pareto operating points ({efficiency.replace('_', ' ')}, accuracy, worst-class recall)",
                             fig, t, "pareto",
                             "Constraints: accuracy drop ≤ 1 pp and worst-class recall drop ≤ 2 pp vs the dense mean. "
                             + choice["statement"][:1].upper() + choice["statement"][1:] + "."))
    fig, t, unread = _from_tensors(results, lambda: plots.mask_similarity(results, sampled))
    tables["similarity"] = t
    sections.append(_section("Mask similarity between branches", fig, t, "similarity",
                             "Jaccard of the kept weights. Chance (in brackets): the expected Jaccard of two random "
                             "masks with the same kept count in every tensor (exact per tensor; overall from 4,000 "
                             "seeded hypergeometric draws), not the overall density, which understates it when "
                             "layers are pruned to different densities. z: (observed − chance) / SD of chance."
                             + read, missing=unread or "needs two or more pruned branches"))
    fig, t, unread = _from_tensors(results, lambda: plots.structure_plot(results, sampled, interval))
    tables["structure"] = t
    sections.append(_section("Emergent structure vs random pruning", fig, t, "structure",
                             "Fraction of groups (units, filters, input channels, kernels) with every weight pruned, "
                             "over seeds, for every masked row and round (table). Expected: the exact chance for "
                             "random pruning of the same count in that tensor, C(m, g) / C(n, g); random_masks: the "
                             "same fraction in the study's random-pruning control of that row. p: paired t over seeds "
                             "of observed − expected; p_random: of observed − control." + read,
                             missing=unread or "needs a pruned row"))
    fig, t, unread = _from_tensors(results, lambda: plots.stability_plot(results, sampled))
    tables["stability"] = t
    sections.append(_section("Weight stability", fig, t, "stability", read.strip(),
                             missing=unread or "needs a pruned branch with two or more rounds, or one that rewinds"))

    n_seeds = points["seed"].nunique()
    shown = (f" Sweep: {len(labels)} configurations; the sections other than the variation section show "
             f"<b>{html.escape(config)}</b>.") if labels else ""
    header = (f"{html.escape(str(results.store.root))} — {len(results)} states, {len(branches)} branches, "
              f"{n_seeds} seeds. Intervals are 95 % over seeds: {_INTERVAL_TEXT[interval]}.{shown}")
    return _write_page(results, header, sections, tables, out, csv_dir)


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


def _write_page(results: Results, header: str, sections: list[str], tables: dict, out, csv_dir) -> Path:
    """The HTML page (sections, then the experiment tree), written atomically; each table as CSV."""
    tree_text = html.escape(_tree_text(results))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>report</title><style>{_STYLE}</style></head><body>"
            f"<h1>prunelab report</h1><p class=sub>{header}</p>"
            + "".join(sections)
            + f"<section><h2>Experiment tree</h2><pre>{tree_text}</pre></section>{_CHECK}</body></html>")
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
    """A regression study (e.g. calo_energy): resolution and RMSE vs weights remaining, and bias and
    resolution per bin of the true target, each with intervals over seeds."""
    points = study_points(results, metric="test.resolution")
    summaries = results.summaries(points["hash"])
    points["test.rmse"] = [summaries[h]["scalars"]["test.rmse"] for h in points["hash"]]
    sections, tables = [], {}
    fig, t = plots.metric_vs_remaining(points, "test.resolution", "test resolution σ(prediction/target)", interval)
    tables["resolution"] = t
    sections.append(_section("Resolution vs weights remaining", fig, t, "resolution",
                             "Standard deviation of prediction/target on the test split (lower is better)."))
    fig, t = plots.metric_vs_remaining(points, "test.rmse", "test RMSE (target units)", interval)
    tables["rmse"] = t
    sections.append(_section("RMSE vs weights remaining", fig, t, "rmse"))
    fig, t = plots.regression_bins(results, points, interval)
    tables["bins"] = t
    sections.append(_section("Who pays for sparsity: bias and resolution per target bin", fig, t, "bins",
                             "Bins are quintiles of the true target on the test split; the branch shown is the one "
                             "with the best resolution at its sparsest level."))
    header = (f"{html.escape(str(results.store.root))} — {len(results)} states, a regression study, "
              f"{points['seed'].nunique()} seeds. Intervals are 95 % over seeds: {_INTERVAL_TEXT[interval]}.")
    return _write_page(results, header, sections, tables, out, csv_dir)
