"""Figures of a study, each returned as (matplotlib Figure, table behind it as a DataFrame)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.masks import similarity_matrix
from ..analysis.pareto import pareto_front, select_operating_point
from ..analysis.stability import weight_stability
from ..analysis.tables import EFFICIENCY, check_efficiency, class_impact, structure_table
from ..errors import PrunelabError
from ..study import mean_ci, mean_cis

METRIC = "test.accuracy"
_TICKS = [100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1]


def _percent_axis(ax, values) -> None:
    """Log scale from 100 % down, with plain percentages as tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    low = max(min(values), 1e-3)
    ax.xaxis.set_major_locator(FixedLocator([t for t in _TICKS if t >= low * 0.8]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(105, low * 0.9)
    ax.set_xlabel("weights remaining (%)")


def branch_colours(branches) -> dict[str, tuple]:
    """One colour per branch name, the same in every plot of a report: the dense model black,
    the others by sorted name (so a plot that shows fewer branches keeps the colours)."""
    names = sorted({str(b) for b in branches} - {"dense"})
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    return colours | {"dense": (0.0, 0.0, 0.0, 1.0)}


def branches_by_merit(points: pd.DataFrame) -> list[str]:
    """Pruned branches, best first: mean accuracy at each branch's sparsest level."""
    pruned = points[(points.kind != "dense") & (points.remaining < 100)]
    score = {b: g[g.remaining == g.remaining.min()][METRIC].mean() for b, g in pruned.groupby("branch")}
    return sorted(score, key=lambda b: -score[b])


def _branch_lines(ax, table: pd.DataFrame, column: str, colours: dict, alpha: float = 0.2) -> None:
    """One line per pruned branch (mean and its 95 % band from ``column_low``/``column_high``) and the
    dense model's value as a dashed horizontal line."""
    for branch, group in table.groupby("branch", sort=False):
        group = group.sort_values("remaining", ascending=False)
        if branch == "dense":
            ax.axhline(group[column].iloc[0], color="black", lw=1, ls="--", label="dense")
            continue
        ax.plot(group["remaining"], group[column], marker="o", ms=3, label=branch, color=colours[branch])
        ax.fill_between(group["remaining"], group[f"{column}_low"], group[f"{column}_high"], alpha=alpha,
                        color=colours[branch])


def metric_vs_remaining(points: pd.DataFrame, metric: str, label: str, interval: str = "auto"):
    """Any stored metric of trained states vs weights remaining: mean and 95 % interval per branch and level."""
    rows = []
    for (branch, level), group in points.groupby(["branch", "remaining"], sort=False):
        values = [v for v in group[metric].tolist() if np.isfinite(v)]
        # resolution and RMSE cannot be negative: the interval is clipped at 0
        m, lo, hi = mean_ci(values, method=interval, bounds=(0.0, np.inf)) if values else (np.nan, np.nan, np.nan)
        rows.append({"branch": branch, "remaining": level, "seeds": len(values), metric: m,
                     f"{metric}_low": lo, f"{metric}_high": hi})
    table = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _branch_lines(ax, table, metric, branch_colours(points.branch))
    _percent_axis(ax, table["remaining"])
    ax.set_ylabel(label)
    ax.set_title(f"{label[:1].upper() + label[1:]} vs weights remaining (mean, 95 % CI over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, table


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
    best = (min(((g[g.remaining == g.remaining.min()]["test.resolution"].mean(), b) for b, g in pruned.groupby("branch")))[1]
            if len(pruned) else "dense")
    shown = table[table.branch.isin([best, "dense"])]
    bins = list(dict.fromkeys(table["bin"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
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
        ax.set_ylabel(column)
        ax.set_title(f"{best}: {column} per target bin")
    axes[0].legend(fontsize=8, title="true target")
    fig.tight_layout()
    return fig, table


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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, name, label in ((axes[0], "roc_auc", "ROC AUC"), (axes[1], "rejection_90", "rejection 1/FPR at 90 % eff.")):
        _branch_lines(ax, table, name, colours)
        _percent_axis(ax, table["remaining"])
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("ROC AUC vs weights remaining")
    axes[1].set_title("Background rejection at 90 % signal efficiency")
    fig.tight_layout()
    return fig, table


DISPARITY = {"worst_recall": "worst-class recall", "gap": "max − min class recall",
             "recall_std": "std of class recall", "min_max_ratio": "min / max class recall"}


def _branch_levels(points: pd.DataFrame, interval: str = "auto") -> pd.DataFrame:
    """Mean and 95 % interval over seeds per (branch, remaining) of accuracy and of each disparity
    summary; see :func:`prunelab.study.mean_ci`."""
    rows = []
    for (branch, level), group in points.groupby(["branch", "remaining"], sort=False):
        columns = {METRIC: group[METRIC].tolist(), **{name: group[name].dropna().tolist() for name in DISPARITY}}
        present = [name for name, values in columns.items() if values]
        intervals = dict(zip(present, mean_cis([columns[n] for n in present], method=interval, bounds=(0.0, 1.0))))
        mean, lo, hi = intervals[METRIC]
        row = {"branch": branch, "remaining": level, "seeds": len(group), "mean": mean, "ci_low": lo, "ci_high": hi}
        row |= {c: group[c].mean() for c in ("flops_removed", "params_removed") if c in group}
        for name in DISPARITY:
            m, l, h = intervals.get(name, (np.nan, np.nan, np.nan))
            row |= {name: m, f"{name}_low": l, f"{name}_high": h}
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_vs_remaining(points: pd.DataFrame, interval: str = "auto"):
    table = _branch_levels(points, interval)
    colours = branch_colours(points.branch)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for branch, group in table.groupby("branch", sort=False):
        group = group.sort_values("remaining", ascending=False)
        if branch == "dense":
            ax.axhline(group["mean"].iloc[0], color="black", lw=1, ls="--", label="dense")
            continue
        ax.plot(group["remaining"], group["mean"], marker="o", ms=3, label=branch, color=colours[branch])
        ax.fill_between(group["remaining"], group["ci_low"], group["ci_high"], alpha=0.2, color=colours[branch])
    _percent_axis(ax, table["remaining"])
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs weights remaining (mean, 95 % CI over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, table


def per_class_heatmap(points: pd.DataFrame, branch: str, metric: str = "recall"):
    """Δ_c (pruned − dense, same seed), mean over seeds, per class and sparsity level."""
    fig, table = per_class_heatmaps(points, [branch], metric=metric)
    return fig, table.drop(columns="branch", errors="ignore")


def per_class_heatmaps(points: pd.DataFrame, branches: list[str], columns: int = 2, metric: str = "recall"):
    """One Δ_c heatmap per branch on a shared colour scale, so the branches compare at a glance.

    ``metric``: recall, precision or f1 (:func:`prunelab.analysis.tables.class_impact`)."""
    impact = class_impact(points)
    if impact.empty:
        impact = pd.DataFrame(columns=["branch", "remaining", "class", f"delta_{metric}"])
    deltas = [impact[impact.branch == b].rename(columns={f"delta_{metric}": "delta"}) for b in branches]
    deltas = [d for d in deltas if not d.empty]
    if not deltas:
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.text(0.5, 0.5, "no dense reference", ha="center")
        ax.axis("off")
        return fig, pd.DataFrame()
    grids = [d.groupby(["class", "remaining"])["delta"].mean().unstack().sort_index(axis=1, ascending=False)
             for d in deltas]
    limit = max(1e-6, max(float(np.nanmax(np.abs(g.to_numpy()))) for g in grids))
    columns = min(columns, len(grids))
    rows = -(-len(grids) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns + 0.8, 3.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax, d, grid in zip(axes.flat, deltas, grids):
        image = ax.imshow(grid.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns], rotation=60, fontsize=6)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=6)
        ax.set_xlabel("weights remaining (%)", fontsize=7)
        ax.set_title(d["branch"].iloc[0], fontsize=9)
    for ax in list(axes.flat)[len(grids):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, label=f"Δ {metric} vs dense (same seed)", shrink=0.8)
    fig.suptitle(f"Per-class {metric} change vs the dense model, mean over seeds", fontsize=10)
    table = pd.concat([g.reset_index().assign(branch=d["branch"].iloc[0]) for d, g in zip(deltas, grids)])
    return fig, table[["branch"] + [c for c in table.columns if c != "branch"]]


def disparity_vs_remaining(points: pd.DataFrame, interval: str = "auto"):
    """The disparity summaries of per-class recall vs weights remaining, with intervals over seeds."""
    table = _branch_levels(points, interval)
    colours = branch_colours(points.branch)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    for ax, name in zip(axes.flat, DISPARITY):
        _branch_lines(ax, table, name, colours, alpha=0.15)
    for ax, title in zip(axes.flat, DISPARITY.values()):
        _percent_axis(ax, table["remaining"])
        ax.set_title(title, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    columns = ["branch", "remaining", "seeds"] + [c for n in DISPARITY for c in (n, f"{n}_low", f"{n}_high")]
    return fig, table[columns]


def pareto_plot(points: pd.DataFrame, max_accuracy_drop: float = 0.01, max_worst_drop: float = 0.02,
                interval: str = "auto", efficiency: str = "sparsity"):
    """Pareto front over (``efficiency``, accuracy, worst-class recall) and the operating point chosen
    with and without the worst-class limit. ``efficiency``: ``sparsity``, or ``flops_removed`` /
    ``params_removed`` (columns added by :func:`prunelab.analysis.tables.with_efficiency`)."""
    if check_efficiency(efficiency) != "sparsity" and efficiency not in points:
        raise PrunelabError(f"the points have no {efficiency!r} column: add it with analysis.tables.with_efficiency")
    dense = points[points.branch == "dense"]
    candidates = _branch_levels(points[points.branch != "dense"], interval)
    candidates["sparsity"] = 100 - candidates["remaining"]
    front = pareto_front(candidates[[efficiency, "mean", "worst_recall"]].to_numpy(), [True, True, True])
    candidates["pareto"] = False
    candidates.loc[candidates.index[front], "pareto"] = True
    choice = select_operating_point(
        candidates.to_dict("records"), efficiency=efficiency, accuracy="mean",
        dense_accuracy=float(dense[METRIC].mean()) if len(dense) else float(candidates["mean"].max()),
        max_accuracy_drop=max_accuracy_drop, worst="worst_recall",
        dense_worst=float(dense["worst_recall"].mean()) if len(dense) else float(candidates["worst_recall"].max()),
        max_worst_drop=max_worst_drop)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sc = ax.scatter(candidates[efficiency], candidates["mean"], c=candidates["worst_recall"], cmap="viridis", s=18)
    on = candidates[candidates.pareto]
    ax.scatter(on[efficiency], on["mean"], facecolors="none", edgecolors="red", s=60, label="Pareto (3 axes)")
    for key, marker, label in (("without_fairness", "*", "chosen: accuracy only"), ("with_fairness", "P", "chosen: + worst class")):
        row = choice[key]
        if row is not None:
            ax.scatter([row[efficiency]], [row["mean"]], marker=marker, s=180, edgecolors="black", label=label)
    fig.colorbar(sc, ax=ax, label="worst-class recall")
    ax.set_xlabel(EFFICIENCY[efficiency])
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_title(choice["statement"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
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
    image = ax.imshow(sim, cmap="magma", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{sim[i, j]:.2f}\n({chance[i, j]:.2f})", ha="center", va="center", fontsize=7,
                    color="white" if not sim[i, j] >= 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    return image


def _comparable(masks: dict[str, dict]) -> dict[str, dict]:
    """The branches whose masks cover the same tensors with the same shapes as most branches do
    (a ticket transferred to a task of another input shape is left out of the comparison)."""
    signature = {b: tuple(sorted((n, tuple(m.shape)) for n, m in v.items())) for b, v in masks.items()}
    common = max(set(signature.values()), key=list(signature.values()).count)
    return {b: v for b, v in masks.items() if signature[b] == common}


def mask_similarity(results, points: pd.DataFrame):
    """Jaccard similarity of kept sets (chance level in brackets). Left: between branches, one seed,
    the deepest round all reached. Right: between seeds, the most accurate branch's deepest round."""
    seed = points["seed"].dropna().min()
    rounds = _round_states(points, seed)
    if len(rounds) < 2:
        return None, pd.DataFrame()
    shared = [r for v in rounds.values() for r in v]  # the round most rows reached, the deepest of ties
    k = max(set(shared), key=lambda r: (shared.count(r), r))
    masks = _comparable({b: results.store.load(h[k]).masks for b, h in rounds.items() if k in h})
    if len(masks) < 2:
        return None, pd.DataFrame()
    panels, rows = [], []
    labels, sim, chance, z = similarity_matrix(masks)
    panels.append((labels, sim, chance, f"between branches: round {k}, seed {seed:g}"))
    rows += [{"compared": "branches", "a": a, "b": b, "round": k, "jaccard": sim[i, j], "chance": chance[i, j],
              "z": z[i, j]} for i, a in enumerate(labels) for j, b in enumerate(labels) if i < j]
    pruned = points[points.remaining < 100]  # seeds are compared on a pruned branch's masks
    best = branches_by_merit(pruned)[0]
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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 0.8, 5), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        image = _similarity_panel(ax, *panel)
    fig.colorbar(image, ax=axes, shrink=0.8, label="Jaccard of kept weights")
    fig.suptitle("Mask similarity (in brackets: chance, random masks with the same per-layer kept counts)",
                 fontsize=10)
    return fig, pd.DataFrame(rows)


def structure_plot(results, points: pd.DataFrame, interval: str = "auto"):
    """Emergent structure over seeds (:func:`prunelab.analysis.tables.structure_table`); the figure shows
    the best branch at its deepest round: observed fraction of fully pruned groups (95 % interval over
    seeds), the exact random-pruning expectation, and the study's random-pruning masks when it has them."""
    table = structure_table(results, points, interval)
    if table.empty:
        return None, table
    branch = next((b for b in branches_by_merit(points) if b in set(table.branch)), table.branch.iloc[0])
    mine = table[table.branch == branch]
    shown = mine[mine["round"] == mine["round"].max()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(shown) + 2), 3.8))
    x = np.arange(len(shown))
    has_random = "random_masks" in shown and shown["random_masks"].notna().any()
    width = 0.28 if has_random else 0.4
    err = np.vstack([shown["fraction"] - shown["fraction_low"], shown["fraction_high"] - shown["fraction"]])
    ax.bar(x - width / 2 - (width / 2 if has_random else 0), shown["fraction"], width,
           yerr=np.nan_to_num(err), capsize=2, label=f"{branch} (mean, 95 % CI over seeds)")
    ax.bar(x + (0 if has_random else width / 2), shown["expected"], width, label="random pruning, exact expectation")
    if has_random:
        err = np.vstack([shown["random_masks"] - shown["random_masks_low"],
                         shown["random_masks_high"] - shown["random_masks"]])
        ax.bar(x + width, shown["random_masks"], width, yerr=np.nan_to_num(err), capsize=2,
               label="the study's random-pruning masks")
    ax.set_xticks(x, [f"{t}\n{g}" for t, g in zip(shown["tensor"], shown["group"])], fontsize=6, rotation=30,
                  ha="right")
    ax.set_ylabel("fraction of groups fully pruned")
    ax.set_title(f"Emergent structure: {branch}, round {shown['round'].iloc[0]} "
                 f"({shown['remaining'].iloc[0]:g} % remaining), {int(shown['seeds'].max())} seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, table


def stability_plot(results, points: pd.DataFrame):
    """Left, middle: sign agreement and normalised distance from the rewind point to the trained
    weights (rewinding branches). Right: cosine similarity of the trained weights of consecutive
    rounds, over the weights the later round keeps (every pruned branch). Means over seeds."""
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
    colours = branch_colours(points.branch)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("rewind point → trained", "sign_agreement", "sign agreement, rewind point → trained"),
              ("rewind point → trained", "distance", "‖θ_T − θ_k‖ / ‖θ_k‖"),
              ("round → next round", "cosine", "cosine, trained weights of consecutive rounds"))
    for ax, (kind, column, title) in zip(axes, panels):
        part = table[table.kind == kind]
        for branch, group in part.groupby("branch", sort=False):
            mean = group.groupby("remaining")[column].mean().sort_index(ascending=False)
            ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=branch, color=colours[branch])
        _percent_axis(ax, table["remaining"])
        ax.set_title(title, fontsize=9)
        if not part.empty:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig, table


def group_plot(table: pd.DataFrame, branch: str, attribute: str = "group", interval: str = "auto"):
    """Left: each group's accuracy vs weights remaining for ``branch`` (95 % interval over seeds).
    Right: the between-group accuracy difference (max − min) for every branch.

    ``table`` is :func:`prunelab.analysis.fairness.group_impact`'s.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    mine = table[table.branch.isin([branch, "dense"])]
    summary = []
    for group, rows in mine.groupby("group", sort=True):
        levels = []
        for level, at in rows.groupby("remaining"):
            mean, lo, hi = mean_ci(at["accuracy"].tolist(), method=interval, bounds=(0.0, 1.0))
            levels.append((level, mean, lo, hi))
            summary.append({"group": group, "remaining": level, "seeds": len(at), "accuracy": mean,
                            "ci_low": lo, "ci_high": hi, "delta_vs_dense": at["delta"].mean()})
        levels.sort(reverse=True)
        x = [v[0] for v in levels]
        axes[0].plot(x, [v[1] for v in levels], marker="o", ms=3, label=f"{attribute}={group}")
        axes[0].fill_between(x, [v[2] for v in levels], [v[3] for v in levels], alpha=0.2)
    per_state = table.drop_duplicates(["config", "branch", "seed", "remaining"])
    colours = branch_colours(table.branch)
    for name, rows in per_state.groupby("branch", sort=False):
        mean = rows.groupby("remaining")["difference"].mean().sort_index(ascending=False)
        if name == "dense":
            axes[1].axhline(mean.iloc[0], color="black", lw=1, ls="--", label="dense")
        else:
            axes[1].plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=name, color=colours[name])
    for ax, title in zip(axes, (f"{branch}: accuracy per {attribute}", "between-group accuracy gap (max − min)")):
        _percent_axis(ax, table["remaining"])
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, pd.DataFrame(summary)


def variation_plot(points: pd.DataFrame):
    """Accuracy vs weights remaining per sweep configuration, one panel per pruned branch
    (mean over seeds; the dense model of each configuration dashed)."""
    pruned = [b for b in dict.fromkeys(points.branch) if b != "dense"]
    columns = min(3, max(1, len(pruned)))
    rows = -(-max(1, len(pruned)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False, sharey=True)
    configs = sorted(points["config"].dropna().unique())
    colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(configs)}
    dense = points[points.branch == "dense"].groupby("config")[METRIC].mean()
    for ax, branch in zip(axes.flat, pruned):
        for config, rows_ in points[points.branch == branch].groupby("config"):
            mean = rows_.groupby("remaining")[METRIC].mean().sort_index(ascending=False)
            ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=colours[config], label=config)
            if config in dense:
                ax.axhline(dense[config], color=colours[config], lw=0.8, ls="--")
        _percent_axis(ax, points["remaining"])
        ax.set_title(branch, fontsize=9)
    for ax in list(axes.flat)[len(pruned):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("test accuracy (mean over seeds)")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Systematic variation: one line per sweep configuration (dashed: its dense model)", fontsize=10)
    fig.tight_layout()
    return fig
