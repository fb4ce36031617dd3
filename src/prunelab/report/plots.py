"""Figures of a study, each returned as (matplotlib Figure, table behind it as a DataFrame).

Every figure is drawn to be read at 100 % zoom in the report (about 990 px wide at the
report's 110 dpi, text at 8 pt or more) and stays readable for large studies: at most
:data:`MAX_LINES` branches (or configurations, or groups) get a colour and a legend entry,
the rest are drawn in light grey; heatmaps and bar charts cap their rows and say so in the
title. Which way is better comes from :func:`prunelab.headline.metric_info`, so a
lower-is-better headline metric (perplexity, RMSE) ranks, labels and selects correctly.
"""

from __future__ import annotations

import functools
import re

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.masks import similarity_matrix
from ..analysis.pareto import pareto_front, select_operating_point
from ..analysis.stability import weight_stability
from ..analysis.tables import check_efficiency, class_impact, structure_table
from ..errors import PrunelabError
from ..headline import metric_info
from ..analysis.stats import mean_ci, mean_cis

METRIC = "test.accuracy"  # the default headline column of a classification study
_TICKS = [100, 70, 50, 30, 20, 10, 5, 3, 2, 1, 0.5, 0.3, 0.2, 0.1]
WIDTH = 9.0  # inches: 990 px at the report's 110 dpi, shown unscaled in its 1,040 px column
MAX_LINES = 8  # branches / configurations / groups with their own colour and legend entry
MAX_CLASSES = 20  # rows of a per-class heatmap
MAX_PANELS = 4  # per-class heatmap panels (branches, best first)
MAX_MATRIX = 8  # labels of a similarity matrix
MAX_BARS = 30  # rows of the emergent-structure chart
GREY = (0.72, 0.72, 0.72, 1.0)
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]

RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5,
      "legend.fontsize": 8.5, "figure.titlesize": 10.5, "axes.spines.top": False, "axes.spines.right": False,
      "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6}


def styled(function):
    """Draw ``function``'s figure with the report's type sizes (:data:`RC`), whatever the caller's rcParams."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return function(*args, **kwargs)

    return wrapper


def metric_label(metric: str, split: str = "test") -> str:
    """``"test accuracy (higher is better)"``: an axis label that says which way is better."""
    info = metric_info(metric)
    return f"{split} {info.label} ({'higher' if info.higher_is_better else 'lower'} is better)"


def natural_key(text) -> list:
    """Sort key that orders the numbers inside names as numbers: layers.2 before layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _percent_axis(ax, values, label: str = "weights remaining (%)") -> None:
    """Log scale from 100 % down, with plain percentages as tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    finite = [v for v in values if v == v and v > 0]
    low = max(min(finite), 1e-3) if finite else 1.0
    ticks = [t for t in _TICKS if t >= low * 0.9]
    below = next((t for t in _TICKS if t < low * 0.9), None)
    end = low * 0.9
    if below is not None and below >= low / 1.6:  # the sparsest points get a tick beyond them
        ticks.append(below)
        end = below * 0.95
    if len(ticks) > 8:  # a long range: the 1-2-5 ticks only
        ticks = [t for t in ticks if f"{t:g}".strip("0.")[:1] in "125"]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(105, end)
    ax.set_xlabel(label)


def branch_colours(branches) -> dict[str, tuple]:
    """One colour per branch name, the same in every plot of a report: the dense model black,
    the others by sorted name (so a plot that shows fewer branches keeps the colours)."""
    names = sorted({str(b) for b in branches} - {"dense"}, key=natural_key)
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    return colours | {"dense": (0.0, 0.0, 0.0, 1.0)}


def branch_markers(branches) -> dict[str, str]:
    """One marker per branch name (the same order as :func:`branch_colours`): no plot relies on colour alone."""
    names = sorted({str(b) for b in branches} - {"dense"}, key=natural_key)
    return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(names)} | {"dense": "o"}


def branches_by_merit(points: pd.DataFrame, metric: str = METRIC) -> list[str]:
    """Pruned branches, best first: mean ``metric`` at each branch's sparsest level (higher or lower is
    better as :func:`prunelab.headline.metric_info` says)."""
    pruned = points[(points.kind != "dense") & (points.remaining < 100)]
    sign = metric_info(metric).sign
    score = {b: g[g.remaining == g.remaining.min()][metric].mean() for b, g in pruned.groupby("branch")}
    return sorted(score, key=lambda b: (-sign * score[b] if score[b] == score[b] else np.inf, natural_key(b)))


def _highlighted(order: list[str], cap: int = MAX_LINES) -> set[str]:
    """The names that get a colour: all when they fit, else the first ``cap`` (best first)."""
    return set(order if len(order) <= cap else order[:cap])


def _legend_order(handles, labels, order: list[str] | None):
    """Legend entries with the branches of ``order`` first, in that order (matplotlib lists error bars
    after lines), then the rest as drawn."""
    if not order:
        return list(handles), list(labels)
    rank = {name: i for i, name in enumerate(order)}
    pairs = sorted(zip(handles, labels), key=lambda p: rank.get(p[1], len(rank)))
    return [h for h, _ in pairs], [l for _, l in pairs]


def _legend_outside(ax, extra: str = "", order: list[str] | None = None, **kwargs) -> None:
    """A legend right of the axes (it never hides data), with a closing line for what is grey."""
    handles, labels = _legend_order(*ax.get_legend_handles_labels(), order)
    if extra:
        handles.append(matplotlib.lines.Line2D([], [], color=GREY, lw=1.5))
        labels.append(extra)
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **kwargs)


def _figure_legend(fig, axes, extra: str = "", ncol: int | None = None, order: list[str] | None = None) -> None:
    """One legend for a figure of panels, below them, from the panels' distinct entries."""
    seen = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    handles, labels = _legend_order(list(seen.values()), list(seen), order)
    if extra:
        handles.append(matplotlib.lines.Line2D([], [], color=GREY, lw=1.5))
        labels.append(extra)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(5, len(handles)), frameon=False)


def _grey_note(hidden: int, what: str = "branches") -> str:
    return f"{hidden} more {what} (grey; all in the table)" if hidden else ""


def _branch_lines(ax, table: pd.DataFrame, column: str, colours: dict, alpha: float = 0.2,
                  order: list[str] | None = None, markers: dict | None = None) -> int:
    """One line per pruned branch (mean and its 95 % band from ``column_low``/``column_high``) and the
    dense model's value as a dashed horizontal line with its band. Branches beyond the first
    :data:`MAX_LINES` of ``order`` are thin grey lines without a band or legend entry; returns their count."""
    names = [b for b in dict.fromkeys(table["branch"]) if b != "dense"]
    order = [b for b in (order or []) if b in names] + [b for b in names if b not in (order or [])]
    shown = _highlighted(order)
    markers = markers or branch_markers(table["branch"])
    single = [b for b in order if b in shown and (table.branch == b).sum() == 1]
    for branch in [b for b in order if b not in shown] + [b for b in order if b in shown]:  # grey first, legend best first
        group = table[table.branch == branch].sort_values("remaining", ascending=False)
        if branch not in shown:
            ax.plot(group["remaining"], group[column], color=GREY, lw=0.8, zorder=1)
            continue
        if branch in single:  # one level (one-shot pruning): a point with its interval, nudged beside the others
            x = group["remaining"] * 1.025 ** (single.index(branch) - (len(single) - 1) / 2)
            low = group[f"{column}_low"] if f"{column}_low" in group else group[column]
            high = group[f"{column}_high"] if f"{column}_high" in group else group[column]
            err = np.nan_to_num(np.vstack([group[column] - low, high - group[column]]))
            ax.errorbar(x, group[column], yerr=err, fmt=markers.get(branch, "o"), ms=5, capsize=3, lw=1.2,
                        label=branch, color=colours[branch], zorder=3)
            continue
        ax.plot(group["remaining"], group[column], marker=markers.get(branch, "o"), ms=4, label=branch,
                color=colours[branch], zorder=3)
        if f"{column}_low" in group:
            ax.fill_between(group["remaining"], group[f"{column}_low"], group[f"{column}_high"], alpha=alpha,
                            color=colours[branch], lw=0, zorder=2)
    dense = table[table.branch == "dense"]
    if len(dense) and dense[column].notna().any():
        row = dense.iloc[0]
        ax.axhline(row[column], color="black", lw=1, ls="--", label="dense", zorder=2)
        low, high = row.get(f"{column}_low", np.nan), row.get(f"{column}_high", np.nan)
        if low == low and high == high:
            ax.axhspan(low, high, color="black", alpha=0.06, lw=0, zorder=0)
    return len(names) - len(shown)


@styled
def metric_vs_remaining(points: pd.DataFrame, metric: str, label: str | None = None, interval: str = "auto"):
    """Any stored metric of trained states vs weights remaining: mean and 95 % interval per branch and level,
    clipped to the metric's range (:func:`prunelab.headline.metric_info`)."""
    info = metric_info(metric)
    bounds = info.bounds or (0.0, np.inf)
    rows = []
    for (branch, level), group in points.groupby(["branch", "remaining"], sort=False):
        values = [v for v in group[metric].tolist() if np.isfinite(v)]
        m, lo, hi = mean_ci(values, method=interval, bounds=bounds) if values else (np.nan, np.nan, np.nan)
        rows.append({"branch": branch, "remaining": level, "seeds": len(values), metric: m,
                     f"{metric}_low": lo, f"{metric}_high": hi})
    table = pd.DataFrame(rows)
    label = label or metric_label(metric)
    if "better" not in label:
        label += f" ({'higher' if info.higher_is_better else 'lower'} is better)"
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
    hidden = _branch_lines(ax, table, metric, branch_colours(points.branch), order=branches_by_merit(points, metric))
    _percent_axis(ax, table["remaining"])
    ax.set_ylabel(label)
    ax.set_title(f"{label.split(' (')[0][:1].upper() + label.split(' (')[0][1:]} vs weights remaining "
                 f"(mean and 95 % CI over {int(table['seeds'].max())} seeds)")
    _legend_outside(ax, _grey_note(hidden), order=branches_by_merit(points, metric))
    return fig, table


@styled
def regression_bins(results, points: pd.DataFrame, interval: str = "auto"):
    """Bias and resolution per bin of the true target (stored with each evaluation) vs weights
    remaining, for the branch with the best (lowest) resolution at its sparsest level."""
    rows = []
    summaries = results.summaries(points["hash"])
    for p in points.itertuples():
        for b in summaries[p.hash]["per_bin"]:
            rows.append({"branch": p.branch, "seed": p.seed, "round": p.round, "remaining": p.remaining,
                         "bin": b["bin"], "events": b["events"], "bias": b["bias"], "resolution": b["resolution"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return None, table
    pruned = points[points.branch != "dense"]
    best = branches_by_merit(pruned, "test.resolution")[0] if len(pruned) else "dense"
    shown = table[table.branch.isin([best, "dense"])]
    bins = list(dict.fromkeys(table["bin"]))
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.0), layout="constrained")
    for ax, column in zip(axes, ("resolution", "bias")):
        for i, name in enumerate(bins):
            levels = []
            for level, group in shown[shown["bin"] == name].groupby("remaining"):
                bounds = (0.0, np.inf) if column == "resolution" else None  # a bias can have either sign
                m, lo, hi = mean_ci(group[column].tolist(), method=interval, bounds=bounds)
                levels.append((level, m, lo, hi))
            levels.sort(reverse=True)
            x = [v[0] for v in levels]
            colour = plt.cm.viridis(i / max(1, len(bins) - 1))
            ax.plot(x, [v[1] for v in levels], marker="o", ms=3, color=colour, label=name)
            ax.fill_between(x, [v[2] for v in levels], [v[3] for v in levels], alpha=0.12, color=colour)
        _percent_axis(ax, table["remaining"])
        ax.set_ylabel(column + (" σ(prediction/target), lower is better" if column == "resolution"
                                else " (prediction/target − 1), 0 is best"))
        ax.set_title(f"{best}: {column} per bin of the true target")
    axes[0].legend(title="true target", frameon=False)
    return fig, table


@styled
def binary_metrics_vs_remaining(points: pd.DataFrame, interval: str = "auto"):
    """Two-class tasks: ROC AUC and background rejection at 90 % signal efficiency per branch and level
    (mean and 95 % interval over seeds). A rejection with no background event passing is unbounded:
    such levels show the finite seeds' mean and count the unbounded ones in the table."""
    rows = []
    for (branch, level), group in points.groupby(["branch", "remaining"], sort=False):
        row = {"branch": branch, "remaining": level, "seeds": len(group)}
        for name in ("roc_auc", "rejection_90"):
            values = group[name].dropna()
            finite = values[np.isfinite(values)].tolist()
            bounds = (0.0, 1.0) if name == "roc_auc" else (1.0, np.inf)
            m, lo, hi = mean_ci(finite, method=interval, bounds=bounds) if finite else (np.nan, np.nan, np.nan)
            row |= {name: m, f"{name}_low": lo, f"{name}_high": hi}
        row["rejection_90_unbounded"] = int(np.isinf(group["rejection_90"]).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    colours = branch_colours(points.branch)
    order = branches_by_merit(points, "roc_auc")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.0), layout="constrained")
    hidden = 0
    for ax, name, label in ((axes[0], "roc_auc", "ROC AUC (higher is better)"),
                            (axes[1], "rejection_90", "rejection 1/FPR at 90 % signal eff. (higher is better)")):
        hidden = _branch_lines(ax, table, name, colours, order=order)
        _percent_axis(ax, table["remaining"])
        ax.set_ylabel(label)
    axes[0].set_title("ROC AUC")
    axes[1].set_title("Background rejection at 90 % signal efficiency")
    _figure_legend(fig, axes, _grey_note(hidden), order=order)
    return fig, table


DISPARITY = {"worst_recall": "worst-class recall", "gap": "max − min class recall",
             "recall_std": "std of class recall", "min_max_ratio": "min / max class recall"}
_DISPARITY_BETTER = {"worst_recall": "higher", "gap": "lower", "recall_std": "lower", "min_max_ratio": "higher"}


def _branch_levels(points: pd.DataFrame, interval: str = "auto", metric: str = METRIC) -> pd.DataFrame:
    """Mean and 95 % interval over seeds per (branch, remaining) of ``metric`` (clipped to its range) and
    of each disparity summary (clipped to [0, 1]); see :func:`prunelab.analysis.stats.mean_ci`."""
    bounds = metric_info(metric).bounds
    rows = []
    for (branch, level), group in points.groupby(["branch", "remaining"], sort=False):
        disparity = {name: group[name].dropna().tolist() for name in DISPARITY if name in group}
        present = [name for name, values in disparity.items() if values]
        intervals = dict(zip(present, mean_cis([disparity[n] for n in present], method=interval, bounds=(0.0, 1.0))))
        mean, lo, hi = mean_ci(group[metric].tolist(), method=interval, bounds=bounds)
        row = {"branch": branch, "remaining": level, "seeds": len(group), "mean": mean, "ci_low": lo, "ci_high": hi}
        row |= {c: group[c].mean() for c in ("flops_removed", "params_removed") if c in group}
        for name in DISPARITY:
            m, l, h = intervals.get(name, (np.nan, np.nan, np.nan))
            row |= {name: m, f"{name}_low": l, f"{name}_high": h}
        rows.append(row)
    return pd.DataFrame(rows)


@styled
def accuracy_vs_remaining(points: pd.DataFrame, interval: str = "auto", metric: str = METRIC,
                          highlight: tuple[float, float] | None = None):
    """The headline figure: ``metric`` vs weights remaining, mean and 95 % band over seeds per branch (the
    best :data:`MAX_LINES` in colour, best first in the legend), the dense model dashed with its band.
    ``highlight``: a (low, high) range of weights remaining shaded and labelled (the declared hypotheses')."""
    table = _branch_levels(points, interval, metric)
    order = branches_by_merit(points, metric)
    fig, ax = plt.subplots(figsize=(WIDTH, 4.4), layout="constrained")
    hidden = _branch_lines(ax, table.rename(columns={"ci_low": "mean_low", "ci_high": "mean_high"}), "mean",
                           branch_colours(points.branch), order=order)
    if highlight is not None:
        low, high = highlight
        ax.axvspan(high * 1.04, low / 1.04, color="#f4e7c6", alpha=0.6, lw=0, zorder=0,
                   label="range of the declared hypotheses")
    _percent_axis(ax, table["remaining"])
    info = metric_info(metric)
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{info.label[:1].upper() + info.label[1:]} vs weights remaining "
                 f"(mean and 95 % CI over {int(table['seeds'].max())} seeds; legend best first)")
    _legend_outside(ax, _grey_note(hidden), order=order)
    return fig, table


def per_class_heatmap(points: pd.DataFrame, branch: str, metric: str = "recall"):
    """Δ_c (pruned − dense, same seed), mean over seeds, per class and sparsity level."""
    fig, table = per_class_heatmaps(points, [branch], metric=metric)
    return fig, table.drop(columns="branch", errors="ignore")


@styled
def per_class_heatmaps(points: pd.DataFrame, branches: list[str], columns: int = 1, metric: str = "recall",
                       max_classes: int = MAX_CLASSES, max_panels: int = MAX_PANELS, headline: str = METRIC):
    """One Δ_c heatmap per branch on a shared colour scale, stacked (best branch on top) so every panel
    has the page's width for its sparsity levels; cells are labelled with their value while they fit.

    At most ``max_panels`` branches and ``max_classes`` classes (those whose |Δ| is largest at the
    sparsest level, in class order) are drawn; the figure title says what was left out and the table
    has everything. ``metric``: recall, precision or f1 (:func:`prunelab.analysis.tables.class_impact`);
    ``headline``: the study's headline column (its overall change is what Δ_c − Δ compares with)."""
    impact = class_impact(points, metric=headline if headline in points else METRIC)
    if impact.empty:
        impact = pd.DataFrame(columns=["branch", "remaining", "class", f"delta_{metric}"])
    deltas = [impact[impact.branch == b].rename(columns={f"delta_{metric}": "delta"}) for b in branches]
    deltas = [d for d in deltas if not d.empty]
    if not deltas:
        fig, ax = plt.subplots(figsize=(WIDTH, 1.2))
        ax.text(0.5, 0.5, "no dense reference of the same seed to compare with", ha="center", va="center")
        ax.axis("off")
        return fig, pd.DataFrame()
    order = list(dict.fromkeys(impact["class"]))
    grids = [d.groupby(["class", "remaining"])["delta"].mean().unstack().sort_index(axis=1, ascending=False)
             .reindex([c for c in order if c in set(d["class"])]) for d in deltas]
    table = pd.concat([g.reset_index().assign(branch=d["branch"].iloc[0]) for d, g in zip(deltas, grids)])
    table = table[["branch"] + [c for c in table.columns if c != "branch"]]
    shown_grids, shown_deltas = grids[:max_panels], deltas[:max_panels]
    classes = list(shown_grids[0].index)
    if len(classes) > max_classes:  # the classes that changed most at the sparsest level, in class order
        sparsest = pd.concat([g.iloc[:, -1].abs() for g in shown_grids], axis=1).max(axis=1)
        keep = set(sparsest.sort_values(ascending=False).index[:max_classes])
        classes = [c for c in classes if c in keep]
    limit = max(1e-6, max(float(np.nanmax(np.abs(g.to_numpy()))) for g in shown_grids))
    n_levels = max(g.shape[1] for g in shown_grids)
    label_cells = n_levels <= 16 and len(classes) <= MAX_CLASSES
    panel_height = 0.5 + 0.24 * len(classes)
    side = n_levels * len(shown_grids) <= 12  # few levels: the panels side by side, sharing the class axis
    shape = (1, len(shown_grids)) if side else (len(shown_grids), 1)
    height = panel_height + 1.2 if side else panel_height * len(shown_grids) + 1.0
    width = min(WIDTH, 3.2 + 1.1 * n_levels * len(shown_grids)) if side else WIDTH  # cells no wider than needed
    fig, axes = plt.subplots(*shape, figsize=(width, height), squeeze=False, layout="constrained",
                             sharey=side)
    for ax, d, grid in zip(axes.flat, shown_deltas, shown_grids):
        grid = grid.loc[classes]
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [_visible(c) for c in grid.index])
        if ax is axes.flat[0] or not side:
            ax.set_ylabel("class")
        ax.set_title(f"{d['branch'].iloc[0]}", loc="left", fontweight="bold")
        if label_cells:
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    v = values[i, j]
                    if v == v:
                        ax.text(j, i, f"{v:+.2f}".replace("-", "−"), ha="center", va="center", fontsize=7.5,
                                color="white" if abs(v) > 0.6 * limit else "#222")
    for ax in (axes.flat if side else [axes.flat[-1]]):
        ax.set_xlabel("weights remaining (%)")
    fig.colorbar(image, ax=axes, label=f"Δ {metric} vs dense (same seed)", shrink=min(1.0, 3.0 / len(shown_grids) + 0.3),
                 aspect=30)
    left = []
    if len(grids) > len(shown_grids):
        left.append(f"the best {len(shown_grids)} of {len(grids)} branches")
    if len(classes) < len(shown_grids[0].index):
        left.append(f"the {len(classes)} of {len(shown_grids[0].index)} classes that changed most")
    import textwrap

    lines = [f"Per-class {metric} change vs the dense model, mean over seeds"]
    if left:
        lines.append(f"({'; '.join(left)}; all in the table)")
    fig.suptitle("\n".join(textwrap.fill(line, int(width * 10)) for line in lines))
    return fig, table


def _visible(name) -> str:
    """A class name as a label: whitespace characters (a language model's classes) named, not blank."""
    text = str(name)
    return {" ": "␣ (space)", "\n": "⏎ (newline)", "\t": "⇥ (tab)", "": "(empty)"}.get(text, text)


@styled
def disparity_vs_remaining(points: pd.DataFrame, interval: str = "auto", metric: str = METRIC):
    """The disparity summaries of per-class recall vs weights remaining, with intervals over seeds
    (None for the figure where the study stores no per-class recall)."""
    table = _branch_levels(points, interval, metric)
    columns = ["branch", "remaining", "seeds"] + [c for n in DISPARITY for c in (n, f"{n}_low", f"{n}_high")]
    if not table[list(DISPARITY)].notna().any().any():
        return None, table[columns]
    colours = branch_colours(points.branch)
    order = branches_by_merit(points, metric)
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 6.6), layout="constrained", sharex=True)
    hidden = 0
    for ax, name in zip(axes.flat, DISPARITY):
        hidden = _branch_lines(ax, table, name, colours, alpha=0.15, order=order)
        _percent_axis(ax, table["remaining"])
        ax.set_ylabel(f"{DISPARITY[name]}\n({_DISPARITY_BETTER[name]} is better)")
        ax.set_title(DISPARITY[name])
    for ax in axes[0]:
        ax.set_xlabel("")
    _figure_legend(fig, axes, _grey_note(hidden), order=order)
    return fig, table[columns]


EFFICIENCY_REMAINING = {"sparsity": "weights remaining (%)", "flops_removed": "FLOPs remaining (% of dense)",
                        "params_removed": "parameters remaining (% of all, biases and norms included)"}


def operating_tolerance(metric: str, dense: float, max_drop: float) -> tuple[float, str]:
    """How much worse than the dense mean a point may be, in ``metric``'s units, and the words for it:
    ``max_drop`` itself for a metric in [0, 1] (0.01 = 1 point of accuracy), else ``max_drop`` as a
    fraction of the dense value (1 % of the dense perplexity)."""
    info = metric_info(metric)
    worse = "below" if info.higher_is_better else "above"
    if info.bounds == (0.0, 1.0):
        points = 100 * max_drop
        return max_drop, (f"{info.label} at most {max_drop:g} ({points:g} percentage point{'' if points == 1 else 's'}) "
                          f"{worse} the dense mean")
    tolerance = abs(dense) * max_drop
    return tolerance, f"{info.label} at most {100 * max_drop:g} % ({tolerance:.3g}) {worse} the dense mean"


@styled
def pareto_plot(points: pd.DataFrame, max_accuracy_drop: float = 0.01, max_worst_drop: float = 0.02,
                interval: str = "auto", efficiency: str = "sparsity", metric: str = METRIC):
    """Pareto front over (``efficiency``, ``metric``, worst-class recall) and the operating point chosen
    with and without the worst-class limit. ``efficiency``: ``sparsity``, or ``flops_removed`` /
    ``params_removed`` (columns added by :func:`prunelab.analysis.tables.with_efficiency`).

    The figure puts what remains (weights, FLOPs or parameters, %) on the same log axis as every other
    plot, ``metric`` above and worst-class recall below, each branch with its own colour and marker;
    Pareto points are ringed, the dotted lines are the limits, and the chosen point(s) are starred
    (one star when both choices are the same point). ``choice`` adds ``tolerance`` (in ``metric``'s
    units) and ``limits`` (the constraints in words)."""
    if check_efficiency(efficiency) != "sparsity" and efficiency not in points:
        raise PrunelabError(f"the points have no {efficiency!r} column: add it with analysis.tables.with_efficiency")
    info = metric_info(metric)
    dense = points[points.branch == "dense"]
    candidates = _branch_levels(points[points.branch != "dense"], interval, metric)
    candidates["sparsity"] = 100 - candidates["remaining"]
    # worst-class recall is an axis only where it varies (a language model's is 0 for some character everywhere)
    worst_values = pd.concat([candidates["worst_recall"], dense["worst_recall"] if "worst_recall" in dense
                              else pd.Series(dtype=float)]).dropna()
    has_worst = worst_values.nunique() > 1
    axes_values = [efficiency, "mean"] + (["worst_recall"] if has_worst else [])
    front = pareto_front(candidates[axes_values].to_numpy(), [True, info.higher_is_better, True][:len(axes_values)])
    candidates["pareto"] = False
    candidates.loc[candidates.index[front], "pareto"] = True
    dense_mean = float(dense[metric].mean()) if len(dense) else float(info.sign * (info.sign * candidates["mean"]).max())
    tolerance, words = operating_tolerance(metric, dense_mean, max_accuracy_drop)
    scored = candidates.assign(_score=info.sign * candidates["mean"])
    dense_worst = (float(dense["worst_recall"].mean()) if len(dense) and has_worst
                   else float(candidates["worst_recall"].max()) if has_worst else None)
    choice = select_operating_point(
        scored.to_dict("records"), efficiency=efficiency, accuracy="_score", dense_accuracy=info.sign * dense_mean,
        max_accuracy_drop=tolerance, worst="worst_recall" if has_worst else None,
        dense_worst=dense_worst, max_worst_drop=max_worst_drop if has_worst else None)
    same = choice["with_fairness"] is choice["without_fairness"]
    for key in ("without_fairness", "with_fairness"):  # the rows without the helper column; one dict if one point
        if choice[key] is not None:
            choice[key] = {k: v for k, v in choice[key].items() if k != "_score"}
    if same:
        choice["with_fairness"] = choice["without_fairness"]
    choice["tolerance"] = tolerance
    choice["limits"] = [words] + ([f"worst-class recall at most {max_worst_drop:g} below the dense mean"]
                                  if has_worst else [])
    choice["constant_worst"] = float(worst_values.iloc[0]) if len(worst_values) and not has_worst else None
    choice["dense"] = dense_mean
    choice["dense_worst"] = dense_worst

    x = 100 - candidates[efficiency]
    colours, markers = branch_colours(points.branch), branch_markers(points.branch)
    order = branches_by_merit(points, metric)
    shown = _highlighted(order)
    panels = [("mean", metric_label(metric), dense_mean, dense_mean - info.sign * tolerance)]
    if has_worst:
        panels.append(("worst_recall", "worst-class recall (higher is better)", dense_worst,
                       dense_worst - max_worst_drop))
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH, 3.1 * len(panels) + 0.9), sharex=True, squeeze=False,
                             layout="constrained")
    axes = axes[:, 0]
    names = [b for b in order if b in set(candidates["branch"])]
    names += sorted(set(candidates["branch"]) - set(names), key=natural_key)
    for ax, (column, label, reference, limit) in zip(axes, panels):
        for branch in [b for b in names if b not in shown] + [b for b in names if b in shown]:
            mine = candidates["branch"] == branch
            if branch in shown:
                ax.scatter(x[mine], candidates.loc[mine, column], s=30, marker=markers.get(branch, "o"),
                           color=colours[branch], label=branch, zorder=3)
            else:
                ax.scatter(x[mine], candidates.loc[mine, column], s=14, color=GREY, zorder=2)
        on = candidates["pareto"]
        ax.scatter(x[on], candidates.loc[on, column], s=110, facecolors="none", edgecolors="black", lw=1.0,
                   label="Pareto-optimal" + (" (3 axes)" if has_worst else ""), zorder=6)
        if reference == reference:
            ax.axhline(reference, color="black", lw=1, ls="--", label="dense", zorder=1)
            ax.axhline(limit, color="#b2182b", lw=1, ls=":", label="limit", zorder=1)
        stars = ([("without_fairness", "*", 420, "chosen (the same with\nor without worst-class limit)")] if same
                 else [("without_fairness", "*", 420, "chosen: limit on " + info.label + " only"),
                       ("with_fairness", "D", 150, "chosen: + worst-class limit")])
        for key, marker, size, text in stars:
            row = choice[key]
            if row is not None:
                ax.scatter([100 - row[efficiency]], [row[column]], marker=marker, s=size * 1.3, facecolors="none",
                           edgecolors="#d18f00", lw=2.0, label=text, zorder=5)  # hollow: the branch's marker shows
        ax.set_ylabel(label)
    _percent_axis(axes[-1], x, EFFICIENCY_REMAINING[efficiency])
    for ax in axes[:-1]:
        ax.set_xlabel("")
    _legend_outside(axes[0], _grey_note(len(set(candidates["branch"]) - shown)))
    fig.suptitle("Operating points: each branch and level (mean over seeds); ringed: Pareto-optimal")
    return fig, candidates, choice


def _round_states(points: pd.DataFrame, seed) -> dict[str, dict[int, str]]:
    """Per pruned row, the seed's trained states by round. Unpruned rows (dense references, dense
    training on a transfer target) have no masks to compare."""
    out = {}
    pruned = points[(points.kind != "dense") & (points.seed == seed) & (points.remaining < 100)]
    for branch, group in pruned.groupby("branch", sort=False):
        out[branch] = dict(zip(group["round"].astype(int), group["hash"]))
    return out


SIMILARITY_SEEDS = 10  # seeds in the between-seeds similarity matrix


def _similarity_panel(ax, labels, sim, chance, title):
    """The matrix below its diagonal (it is symmetric; the diagonal, a mask with itself, is left out),
    each cell its Jaccard and, while cells are large enough, the chance level beneath."""
    n = len(labels)
    shown = np.where(np.tril(np.ones((n, n), dtype=bool), -1), sim, np.nan)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.grid(False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    big = n <= 6
    for i in range(n):
        for j in range(i):
            value = sim[i, j]
            if value != value:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#555")
                continue
            colour = "white" if value >= 0.55 else "#111"
            ax.text(j, i - (0.13 if big else 0), f"{value:.2f}", ha="center", va="center",
                    fontsize=10 if big else 8.5, fontweight="bold", color=colour)
            if big:
                ax.text(j, i + 0.22, f"chance {chance[i, j]:.2f}", ha="center", va="center", fontsize=7.5,
                        color=colour)
    ax.set_xticks(range(n - 1), labels[:-1], rotation=30, ha="right")
    ax.set_yticks(range(1, n), labels[1:])
    ax.set_xlim(-0.5, n - 1.5)
    ax.set_ylim(n - 0.5, 0.5)
    ax.set_title(title)
    return image


def _comparable(masks: dict[str, dict]) -> dict[str, dict]:
    """The branches whose masks cover the same tensors with the same shapes as most branches do
    (a ticket transferred to a task of another input shape is left out of the comparison)."""
    signature = {b: tuple(sorted((n, tuple(m.shape)) for n, m in v.items())) for b, v in masks.items()}
    common = max(set(signature.values()), key=list(signature.values()).count)
    return {b: v for b, v in masks.items() if signature[b] == common}


@styled
def mask_similarity(results, points: pd.DataFrame, metric: str = METRIC):
    """Jaccard similarity of kept sets beside its chance level. Left: between branches, one seed, the
    deepest round most rows reached (the best :data:`MAX_MATRIX` branches drawn; every pair in the
    table). Right: between seeds, the most accurate branch's deepest round."""
    seed = points["seed"].dropna().min()
    rounds = _round_states(points, seed)
    if len(rounds) < 2:
        return None, pd.DataFrame()
    shared = [r for v in rounds.values() for r in v]  # the round most rows reached, the deepest of ties
    k = max(set(shared), key=lambda r: (shared.count(r), r))
    merit = branches_by_merit(points, metric)
    ordered = sorted(rounds, key=lambda b: (merit.index(b) if b in merit else len(merit), natural_key(b)))
    masks = _comparable({b: results.store.load(rounds[b][k]).masks for b in ordered if k in rounds[b]})
    if len(masks) < 2:
        return None, pd.DataFrame()
    panels, rows = [], []
    labels, sim, chance, z = similarity_matrix(masks)
    rows += [{"compared": "branches", "a": a, "b": b, "round": k, "jaccard": sim[i, j], "chance": chance[i, j],
              "z": z[i, j]} for i, a in enumerate(labels) for j, b in enumerate(labels) if i < j]
    keep = min(len(labels), MAX_MATRIX)
    of = f", the best {keep} of {len(labels)} branches" if keep < len(labels) else ""
    panels.append((labels[:keep], sim[:keep, :keep], chance[:keep, :keep], f"between branches: round {k}, seed {seed:g}{of}"))
    pruned = points[points.remaining < 100]  # seeds are compared on a pruned branch's masks
    best = branches_by_merit(pruned, metric)[0]
    by_seed = pruned[pruned.branch == best].dropna(subset=["seed"])
    deepest = by_seed["round"].max()
    seeds = by_seed[by_seed["round"] == deepest].sort_values("seed")
    if len(seeds) >= 2:
        shown = seeds.head(SIMILARITY_SEEDS)  # a matrix a reader can read; its pairs are in the table
        labels, sim, chance, z = similarity_matrix({f"seed {s:g}": results.store.load(h).masks
                                                    for s, h in zip(shown["seed"], shown["hash"])})
        of = f", the first {len(shown)} of {len(seeds)} seeds" if len(shown) < len(seeds) else ""
        panels.append((labels, sim, chance, f"between seeds: {best}, round {deepest}{of}"))
        rows += [{"compared": f"seeds ({best})", "a": a, "b": b, "round": deepest, "jaccard": sim[i, j],
                  "chance": chance[i, j], "z": z[i, j]} for i, a in enumerate(labels) for j, b in enumerate(labels)
                 if i < j]
    size = max(len(p[0]) for p in panels)
    height = min(5.2, 1.6 + 0.55 * size)
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH if len(panels) > 1 else WIDTH * 0.62, height),
                             squeeze=False, layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        image = _similarity_panel(ax, *panel)
    fig.colorbar(image, ax=axes, shrink=0.9, label="Jaccard of kept weights")
    fig.suptitle("Mask similarity (Jaccard of kept weights; chance: random masks with the same per-layer counts)")
    return fig, pd.DataFrame(rows)


def _structure_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in layer order (layers.2 before layers.10), each tensor's groups in their first-seen order."""
    if table.empty:
        return table
    groups = {g: i for i, g in enumerate(dict.fromkeys(table["group"]))}
    key = table.assign(_config=table["config"].fillna("").astype(str),
                       _tensor=table["tensor"].map(lambda t: tuple((0, p) if isinstance(p, int) else (1, p)
                                                                   for p in natural_key(t))),
                       _group=table["group"].map(groups))
    order = key.sort_values(["_config", "branch", "round", "_tensor", "_group"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


@styled
def structure_plot(results, points: pd.DataFrame, interval: str = "auto", metric: str = METRIC):
    """Emergent structure over seeds (:func:`prunelab.analysis.tables.structure_table`, rows in layer
    order); the figure shows the best branch at its deepest round, one horizontal bar group per tensor
    and kind of group (in layer order): observed fraction of fully pruned groups (95 % interval over
    seeds), the exact random-pruning expectation, and the study's random-pruning masks when it has them.
    At most :data:`MAX_BARS` rows are drawn: those furthest above chance, kept in layer order."""
    table = _structure_order(structure_table(results, points, interval))
    if table.empty:
        return None, table
    branch = next((b for b in branches_by_merit(points, metric) if b in set(table.branch)), table.branch.iloc[0])
    mine = table[table.branch == branch]
    shown = mine[mine["round"] == mine["round"].max()].reset_index(drop=True)
    total = len(shown)
    if total > MAX_BARS:
        excess = (shown["fraction"] - shown["expected"]).abs()
        shown = shown.loc[sorted(excess.sort_values(ascending=False).index[:MAX_BARS])].reset_index(drop=True)
    has_random = "random_masks" in shown and shown["random_masks"].notna().any()
    bars = 3 if has_random else 2
    height = 0.75 + 0.11 * bars * len(shown) + 0.12 * len(shown)
    fig, ax = plt.subplots(figsize=(WIDTH, max(2.8, height)), layout="constrained")
    y = np.arange(len(shown))
    h = 0.8 / bars
    err = np.vstack([shown["fraction"] - shown["fraction_low"], shown["fraction_high"] - shown["fraction"]])
    ax.barh(y - h * (bars - 1) / 2, shown["fraction"], h, xerr=np.nan_to_num(err), capsize=2, color="#2166ac",
            label=f"{branch} (mean, 95 % CI over seeds)")
    ax.barh(y - h * (bars - 1) / 2 + h, shown["expected"], h, color="#bbbbbb",
            label="random pruning of the same count (exact expectation)")
    if has_random:
        err = np.vstack([shown["random_masks"] - shown["random_masks_low"],
                         shown["random_masks_high"] - shown["random_masks"]])
        ax.barh(y - h * (bars - 1) / 2 + 2 * h, shown["random_masks"], h, xerr=np.nan_to_num(err), capsize=2,
                color="#f4a582", label="the study's random-pruning masks")
    ax.set_yticks(y, [f"{t} · {g}" for t, g in zip(shown["tensor"], shown["group"])])
    ax.invert_yaxis()  # the first layer on top
    ax.set_xlabel("fraction of groups with every weight pruned")
    ax.set_ylabel("tensor · kind of group (layer order)")
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, max(0.05, float(np.nanmax(shown[["fraction_high", "expected"]].to_numpy(dtype=float))) * 1.1))
    of = f"; the {len(shown)} of {total} rows furthest from chance, all in the table" if total > len(shown) else ""
    ax.set_title(f"Emergent structure: {branch}, round {shown['round'].iloc[0]} "
                 f"({shown['remaining'].iloc[0]:g} % of weights remaining), {int(shown['seeds'].max())} seeds{of}")
    fig.legend(loc="outside lower center", ncol=len(ax.get_legend_handles_labels()[0]), frameon=False)
    return fig, table


STABILITY_PANELS = (("rewind point → trained", "sign_agreement", "sign agreement of kept weights",
                     "Rewind point → trained: signs kept"),
                    ("rewind point → trained", "distance", "‖θ_T − θ_k‖ / ‖θ_k‖ (relative distance)",
                     "Rewind point → trained: distance"),
                    ("round → next round", "cosine", "cosine similarity of kept weights",
                     "Round → next round: cosine"))


def stability_summary(table: pd.DataFrame, interval: str = "auto") -> pd.DataFrame:
    """:func:`stability_plot`'s per-state table as mean and 95 % interval over seeds per kind, branch and level."""
    rows = []
    bounds = {"sign_agreement": (0.0, 1.0), "cosine": (-1.0, 1.0), "distance": (0.0, np.inf)}
    for (kind, branch, level), at in table.groupby(["kind", "branch", "remaining"], sort=False):
        row = {"kind": kind, "branch": branch, "remaining": level, "seeds": int(at["seed"].nunique())}
        for column, bound in bounds.items():
            values = at[column].dropna().tolist() if column in at else []
            m, lo, hi = mean_ci(values, method=interval, bounds=bound) if values else (np.nan,) * 3
            row |= {column: m, f"{column}_low": lo, f"{column}_high": hi}
        rows.append(row)
    return pd.DataFrame(rows)


@styled
def stability_plot(results, points: pd.DataFrame, interval: str = "auto", metric: str = METRIC):
    """Left, middle: sign agreement and normalised distance from the rewind point to the trained
    weights (rewinding branches). Right: cosine similarity of the trained weights of consecutive
    rounds, over the weights the later round keeps (every pruned branch). Mean and 95 % interval over
    seeds per branch and level; the table has one row per state."""
    from collections import OrderedDict

    rows, loaded = [], OrderedDict()

    def load(state_hash):  # a few recent snapshots: memory does not grow with the study
        if state_hash not in loaded:
            loaded[state_hash] = results.store.load(state_hash)
            while len(loaded) > 4:
                loaded.popitem(last=False)
        return loaded[state_hash]

    pruned = points[points.branch != "dense"]
    for (branch, seed), group in pruned.groupby(["branch", "seed"], sort=False):  # one chain at a time
        previous = None
        for p in group.sort_values("round").itertuples():
            if p.parent and results.row(p.parent)["recipe"] == "Rewind":
                end = load(p.hash)
                overall = weight_stability(load(p.parent).weights, end.weights, end.masks)["overall"]
                rows.append({"kind": "rewind point → trained", "branch": branch, "seed": seed, "round": p.round,
                             "remaining": p.remaining, **overall})
            if previous is not None:
                later = load(p.hash)
                overall = weight_stability(load(previous).weights, later.weights, later.masks)["overall"]
                rows.append({"kind": "round → next round", "branch": branch, "seed": seed, "round": p.round,
                             "remaining": p.remaining, **overall})
            previous = p.hash
    kinds = ["rewind point → trained", "round → next round"]  # the order the tables always had
    rows.sort(key=lambda r: kinds.index(r["kind"]))
    table = pd.DataFrame(rows)
    if table.empty:
        return None, table
    colours, markers = branch_colours(points.branch), branch_markers(points.branch)
    order = branches_by_merit(points, metric)
    panels = [p for p in STABILITY_PANELS if (table.kind == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.6), squeeze=False, layout="constrained")
    hidden = 0
    summary = stability_summary(table, interval)
    for ax, (kind, column, label, title) in zip(axes.flat, panels):
        hidden = _branch_lines(ax, summary[summary.kind == kind], column, colours, order=order, markers=markers)
        _percent_axis(ax, table["remaining"])
        ax.set_ylabel(label)
        ax.set_title(title)
    seeds = int(table.groupby(["kind", "branch", "remaining"])["seed"].nunique().max())
    fig.suptitle(f"Weight stability: mean and 95 % CI over {seeds} seed{'s' if seeds != 1 else ''}")
    _figure_legend(fig, axes, _grey_note(hidden), order=order)
    return fig, table


@styled
def group_plot(table: pd.DataFrame, branch: str, attribute: str = "group", interval: str = "auto"):
    """Left: each group's accuracy vs weights remaining for ``branch`` (95 % interval over seeds; at most
    :data:`MAX_LINES` groups coloured, the best and worst at the sparsest level). Right: the
    between-group accuracy difference (max − min) for every branch.

    ``table`` is :func:`prunelab.analysis.fairness.group_impact`'s.
    """
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.8), layout="constrained")
    mine = table[table.branch.isin([branch, "dense"])]
    summary, lines = [], {}
    for group, rows in mine.groupby("group", sort=True):
        levels = []
        for level, at in rows.groupby("remaining"):
            mean, lo, hi = mean_ci(at["accuracy"].tolist(), method=interval, bounds=(0.0, 1.0))
            levels.append((level, mean, lo, hi))
            summary.append({"group": group, "remaining": level, "seeds": len(at), "accuracy": mean,
                            "ci_low": lo, "ci_high": hi, "delta_vs_dense": at["delta"].mean()})
        levels.sort(reverse=True)
        lines[group] = levels
    ranked = sorted(lines, key=lambda g: -lines[g][-1][1])
    coloured = set(ranked if len(ranked) <= MAX_LINES else ranked[:MAX_LINES // 2] + ranked[-(MAX_LINES // 2):])
    for i, group in enumerate(sorted(lines, key=lambda g: g in coloured)):
        levels = lines[group]
        x = [v[0] for v in levels]
        if group in coloured:
            colour = plt.cm.tab10(ranked.index(group) % 10)
            axes[0].plot(x, [v[1] for v in levels], marker="o", ms=3, label=f"{attribute}={group}", color=colour)
            axes[0].fill_between(x, [v[2] for v in levels], [v[3] for v in levels], alpha=0.2, color=colour, lw=0)
        else:
            axes[0].plot(x, [v[1] for v in levels], color=GREY, lw=0.8)
    per_state = table.drop_duplicates(["config", "branch", "seed", "remaining"])
    colours = branch_colours(table.branch)
    gaps = per_state.groupby(["branch", "remaining"], sort=False)["difference"].mean().rename("difference").reset_index()
    hidden = _branch_lines(axes[1], gaps, "difference", colours, order=[b for b in dict.fromkeys(gaps.branch)])
    for ax, title, ylabel in ((axes[0], f"{branch}: accuracy per {attribute}", "test accuracy (higher is better)"),
                              (axes[1], "between-group accuracy gap (max − min)", "gap (lower is better)")):
        _percent_axis(ax, table["remaining"])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    hidden_groups = len(lines) - len(coloured)
    axes[0].legend(frameon=False, title=_grey_note(hidden_groups, "groups") or None, title_fontsize=7.5)
    axes[1].legend(frameon=False, title=_grey_note(hidden) or None, title_fontsize=7.5)
    return fig, pd.DataFrame(summary)


@styled
def variation_plot(points: pd.DataFrame, metric: str = METRIC):
    """``metric`` vs weights remaining per sweep configuration, one panel per pruned branch (at most six,
    best first; mean over seeds; the dense model of each configuration dashed). With more than
    :data:`MAX_LINES` configurations only the best and worst at the sparsest level are coloured."""
    info = metric_info(metric)
    pruned = branches_by_merit(points, metric)[:6] or [b for b in dict.fromkeys(points.branch) if b != "dense"][:6]
    columns = min(3, max(1, len(pruned)))
    rows = -(-max(1, len(pruned)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 3.3 * rows + 0.8), squeeze=False, sharey=True,
                             layout="constrained")
    configs = sorted(points["config"].dropna().unique(), key=natural_key)
    deepest = points[points.branch.isin(pruned)]  # each configuration's own sparsest level of each branch
    deepest = deepest[deepest.groupby(["branch", "config"])["remaining"].transform("min") == deepest["remaining"]]
    score = deepest.groupby("config")[metric].mean().reindex(configs)
    ranked = sorted(configs, key=lambda c: -info.sign * score[c] if score[c] == score[c] else np.inf)
    coloured = ranked if len(ranked) <= MAX_LINES else ranked[:MAX_LINES // 2] + ranked[-(MAX_LINES // 2):]
    colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(coloured)}
    dense = points[points.branch == "dense"].groupby("config")[metric].mean()
    for ax, branch in zip(axes.flat, pruned):
        for config, rows_ in sorted(points[points.branch == branch].groupby("config"), key=lambda i: i[0] in colours):
            mean = rows_.groupby("remaining")[metric].mean().sort_index(ascending=False)
            if config in colours:
                ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=colours[config], label=config, zorder=3)
                if config in dense:
                    ax.axhline(dense[config], color=colours[config], lw=0.8, ls="--")
            else:
                ax.plot(mean.index, mean.to_numpy(), color=GREY, lw=0.8, zorder=1)
        _percent_axis(ax, points["remaining"])
        ax.set_title(branch)
    for ax in list(axes.flat)[len(pruned):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{metric_label(metric)}\nmean over seeds")
    handles = [matplotlib.lines.Line2D([], [], color=colours[c], marker="o", ms=3) for c in coloured]
    labels = list(coloured)
    if len(configs) > len(coloured):
        handles.append(matplotlib.lines.Line2D([], [], color=GREY))
        labels.append(f"{len(configs) - len(coloured)} more configurations (grey)")
    fig.legend(handles, labels, loc="outside upper center", ncol=min(4, len(handles)), frameon=False,
               title="configuration (best first; dashed: its dense model)")
    return fig
