"""The report's population sections (analysis/population.py): which classes a pruned population
pays with, the examples it forgets (PIEs) as images, and the dense model's gradient norm and
margin beside what each class loses."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .plots import WIDTH, styled

MAX_PIE_IMAGES = 40  # a grid of 5 rows × 8
MAX_TEST_PANELS = 6  # branches in the per-class test figure (best first; the table has every branch)


@styled
def class_test_figure(tests: pd.DataFrame, branches: list[str]):
    """One panel per branch: classes (rows) × weights remaining (columns), coloured by the difference in
    normalised recall (pruned − dense population); a dot marks a class the corrected test flags."""
    shown = [b for b in branches if b in set(tests["branch"])][:MAX_TEST_PANELS]
    grids = [tests[tests["branch"] == b].pivot_table(index="class", columns="remaining", values="difference",
                                                      sort=False).sort_index(axis=1, ascending=False)
             for b in shown]
    flags = [tests[tests["branch"] == b].pivot_table(index="class", columns="remaining", values="flagged",
                                                      aggfunc="max", sort=False).sort_index(axis=1, ascending=False)
             for b in shown]
    limit = max(1e-6, max(float(np.nanmax(np.abs(g.to_numpy(dtype=float)))) for g in grids))
    classes = len(grids[0].index)
    fig, axes = plt.subplots(len(grids), 1, figsize=(WIDTH, (0.5 + 0.2 * classes) * len(grids) + 1.0),
                             squeeze=False, layout="constrained")
    for ax, b, grid, flag in zip(axes.flat, shown, grids, flags):
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [str(c) for c in grid.index])
        ax.set_ylabel("class")
        ax.set_title(b, loc="left", fontweight="bold")
        f = flag.reindex(index=grid.index, columns=grid.columns).to_numpy()
        for i, j in zip(*np.nonzero(f == 1)):
            ax.plot(j, i, "o", ms=4, mfc="black" if values[i, j] < 0 else "white", mec="black", mew=0.8)
    axes.flat[-1].set_xlabel("weights remaining (%)")
    fig.colorbar(image, ax=axes, label="normalised recall: pruned − dense population", aspect=30,
                 shrink=min(1.0, 3.0 / len(grids) + 0.3))
    alpha = tests.attrs.get("alpha", 0.05)
    fig.suptitle(textwrap.fill(f"Per-class population test (Welch t per class, Holm over classes; dot: adjusted "
                               f"p < {alpha:g}, black where the class pays, white where it gains)", 110))
    return fig


@styled
def pie_count_figure(table: pd.DataFrame, branches: list[str]):
    """PIE count against weights remaining per branch, with its jackknife interval over seeds."""
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6), layout="constrained")
    colours, markers = plots.branch_colours(branches), plots.branch_markers(branches)
    for b in branches:
        part = table[table["branch"] == b].sort_values("remaining", ascending=False)
        if part.empty:
            continue
        ax.errorbar(part["remaining"], part["pies"], yerr=[part["pies"] - part["ci_low"], part["ci_high"] - part["pies"]],
                    color=colours[b], marker=markers[b], ms=4, capsize=2, lw=1.2, label=b)
    plots._percent_axis(ax, table["remaining"])
    ax.set_ylabel("pruning-identified exemplars")
    ax.set_title("Test examples whose modal prediction changes (pruned vs dense population); bars: 95 % jackknife "
                 "interval over seeds", loc="left")
    plots._legend_outside(ax, order=branches)
    return fig


@styled
def pie_grid_figure(images: np.ndarray, labels, dense_mode, pruned_mode, class_names, title: str):
    """PIEs as images, each titled 'true · dense → pruned' (the populations' modal predictions)."""
    n = len(images)
    cols = 8
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 1.28 * rows + 0.5), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, y, d, p in zip(axes.flat, images, labels, dense_mode, pruned_mode):
        ax.imshow(img, cmap="gray_r", interpolation="nearest")
        ax.set_title(f"{class_names[y]} · {class_names[d]}→{class_names[p]}", fontsize=8,
                     color="#b2182b" if p != y else "#222")
    fig.suptitle(textwrap.fill(title, 110))
    return fig


@styled
def sensitivity_figure(table: pd.DataFrame):
    """Per class: the dense model's gradient norm and margin against the recall the class loses."""
    corr = table.attrs["correlations"]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4), layout="constrained")
    for ax, column, label in zip(axes, ("grad_norm", "margin"), ("mean per-example gradient norm (dense)",
                                                                  "mean margin p(true) − max p(other) (dense)")):
        ax.scatter(table[column], table["recall_lost"], s=18, color="#2166ac")
        for name, x, y in zip(table.index, table[column], table["recall_lost"]):
            ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(3, 2), fontsize=8)
        c = corr[column]
        ax.set_xlabel(label)
        ax.set_title(f"r = {c['pearson_r']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}], "
                     f"ρ = {c['spearman_rho']:+.2f}", loc="left")
    axes[0].set_ylabel("recall lost (dense − pruned)")
    fig.suptitle(f"{table.attrs['branch']} at round {table.attrs['round']}: what each class loses vs the dense "
                 f"model's gradient norm and margin ({table.attrs['models']} dense models)")
    return fig


def pie_images(x, indices) -> np.ndarray | None:
    """The inputs at ``indices`` as 2-D images, or None when the inputs are not images (one channel, square
    when flat)."""
    arr = x[indices].numpy() if hasattr(x, "numpy") else np.asarray(x)[indices]
    if arr.ndim == 4 and arr.shape[1] in (1, 3):
        return arr[:, 0] if arr.shape[1] == 1 else arr.mean(axis=1)
    if arr.ndim == 3:
        return arr
    if arr.ndim == 2:
        side = int(round(math.sqrt(arr.shape[1])))
        if side * side == arr.shape[1] and side >= 8:
            return arr.reshape(len(arr), side, side)
    return None


def open_populations(results, points):
    """The study's :class:`~prunelab.analysis.population.Populations` when its models can be rerun here (a
    classification study whose dataset is in the mirror or cache), else ``(None, why)``."""
    from ..analysis.population import Populations
    from ..errors import DataUnavailableError
    from ..experiment.context import dataset_cache

    has_classes = points["recall"].map(lambda r: len(r) > 1 if isinstance(r, (list, tuple)) else False)
    if not has_classes.any() or not (points["kind"] == "dense").any():
        return None, "needs a classification study with dense models"
    try:
        dataset_cache(str(points["dataset"].iloc[0]), download=False)
    except DataUnavailableError as exc:
        return None, f"the study's dataset is not in the cache or mirror here ({str(exc).split('. ')[0]})"
    return Populations(results, points), ""


def population_sections(populations, branches: list[str]) -> tuple[list[str], dict]:
    """The report's population sections (HTML) and their tables."""
    from ..errors import PrunelabError
    from .html_parts import section

    pruned = [b for b in branches if b in set(populations.points["branch"]) and
              (populations.points[populations.points["branch"] == b]["kind"] != "dense").all()]
    tests, pie_rows, pies_at = [], [], {}
    for b in pruned:
        try:
            tests.append(populations.class_tests(b))
            for rnd, remaining, p in populations.pies(b):
                acc = p.accuracy
                pie_rows.append({"branch": b, "round": rnd, "remaining": remaining, "pies": p.count,
                                 "ci_low": p.count_ci[0], "ci_high": p.count_ci[1],
                                 "dense_acc_pies": acc["dense"]["pies"][0], "dense_acc_rest": acc["dense"]["rest"][0],
                                 "pruned_acc_pies": acc["pruned"]["pies"][0],
                                 "pruned_acc_rest": acc["pruned"]["rest"][0]})
                pies_at[b] = (rnd, remaining, p)  # the deepest round is kept
        except PrunelabError:  # a row without two seeds beside a dense model: nothing to test
            continue
    if not tests:
        return [], {}
    tests = pd.concat(tests, ignore_index=True)
    tests.attrs["alpha"] = 0.05
    pie_table = pd.DataFrame(pie_rows)
    n_models = int(populations.points["seed"].nunique())
    sections = []
    flagged = tests[tests["flagged"]].sort_values("difference")
    pays = flagged[flagged["difference"] < 0]
    summary = (f"{len(pays)} of {len(tests)} class × level tests find a class paying more than its share (Holm "
               f"over the classes of each level); " + (
                   "most often " + ", ".join(f"class {c} ({n}×)" for c, n in pays["class"].value_counts().head(3).items())
                   if len(pays) else "none") + ".")
    sections.append(section(
        "Who pays, population by population: the per-class test", class_test_figure(tests, pruned), tests,
        "population_classes",
        f"Hooker et al. (arXiv 1911.05248): each model's normalised recall of a class is its recall minus its "
        f"accuracy, so a class that only follows the overall drop is not flagged. Per class and level, Welch's t "
        f"test compares the pruned population with the dense one ({n_models} seeds each); the difference is pruned − "
        f"dense with its 95 % interval, Hedges' g the standardised effect, p Holm-adjusted over the classes. "
        + summary + " The table lists the flagged tests (the CSV has all).",
        shown=_display_tests(flagged if len(flagged) else tests.head(20))))
    if not pie_table.empty:
        sections.append(section(
            "Pruning-identified exemplars (PIEs)", pie_count_figure(pie_table, pruned), pie_table, "pies",
            "A PIE is a test example whose most frequent prediction in the pruned population differs from the "
            "dense population's (arXiv 1911.05248 §4). Intervals: a jackknife over seeds (one seed left out of "
            "both populations at a time; the test set is fixed). Accuracy columns: mean over models on the PIEs and on every other example — the paper "
            "finds both populations do worse on PIEs. Ties in a vote go to the lower class, so two populations of "
            "the same models can still differ on examples they split evenly; compare counts across levels."))
        grid = _pie_grid(populations, pies_at, pruned)
        if grid is not None:
            sections.append(grid)
    try:
        sens = populations.sensitivity(pruned[0], max_models=3)
    except PrunelabError:
        sens = None
    if sens is not None:
        c = sens.attrs["correlations"]
        sections.append(section(
            "Which classes lose: the dense model's gradient norm and margin", sensitivity_figure(sens),
            sens.reset_index(names="class"), "sensitivity",
            f"Tran et al. (arXiv 2205.13574): the accuracy a group loses tracks its gradient norm and its distance "
            f"to the decision boundary in the dense model. Per class: the mean per-example gradient norm of the "
            f"loss over all parameters and the mean margin (softmax probability of the true class minus the largest "
            f"other) of the first {sens.attrs['models']} dense models, beside the recall lost by "
            f"{sens.attrs['branch']} at round {sens.attrs['round']} (mean over seeds). Pearson r with its Fisher-z "
            f"interval over {c['grad_norm']['n']} classes: gradient norm {c['grad_norm']['pearson_r']:+.2f} "
            f"[{c['grad_norm']['ci_low']:+.2f}, {c['grad_norm']['ci_high']:+.2f}], margin "
            f"{c['margin']['pearson_r']:+.2f} [{c['margin']['ci_low']:+.2f}, {c['margin']['ci_high']:+.2f}]; "
            "with few classes the intervals are wide."))
    return [s for s in sections if s], {"population_classes": tests, "pies": pie_table,
                                        **({"sensitivity": sens.reset_index(names="class")} if sens is not None else {})}


def _display_tests(frame: pd.DataFrame) -> pd.DataFrame:
    from .html_parts import display

    cols = ["branch", "remaining", "class", "support", "dense_recall", "pruned_recall", "difference", "ci_low",
            "ci_high", "hedges_g", "p_adjusted"]
    return display(frame[cols].head(40))


def _pie_grid(populations, pies_at: dict, branches: list[str]) -> str | None:
    """The PIEs of the branch with the most of them at its deepest round, as an image grid section."""
    from ..experiment.context import dataset_cache
    from .html_parts import section

    if not pies_at:
        return None
    branch = max(branches, key=lambda b: pies_at[b][2].count if b in pies_at else -1)
    rnd, remaining, p = pies_at[branch]
    if p.count == 0:
        return None
    data = dataset_cache(populations.dataset, download=False).split(populations.split)
    order = np.argsort(p.labels, kind="stable")[:MAX_PIE_IMAGES]  # by true class, so a reader sees who is forgotten
    images = pie_images(data.x, p.indices[order])
    if images is None:
        return None
    names = list(populations.class_names)
    fig = pie_grid_figure(images, p.labels[order], p.dense_mode[order], p.pruned_mode[order], names,
                          f"PIEs of {branch} at {remaining:g} % of the weights ({min(p.count, MAX_PIE_IMAGES)} of "
                          f"{p.count}): true class · dense → pruned modal prediction (red: the pruned population is "
                          "wrong)")
    table = pd.DataFrame({"index": p.indices, "true": [names[i] for i in p.labels],
                          "dense_mode": [names[i] for i in p.dense_mode],
                          "pruned_mode": [names[i] for i in p.pruned_mode]})
    return section(f"The examples {branch} forgets", fig, table, "pie_examples",
                    "Test examples (index in the test split) whose modal prediction changes; the paper finds them "
                    "atypical, noisy or mislabelled. Sorted by true class.")
