"""The CaloChallenge evaluation as one self-contained HTML page (PNG figures embedded) and as JSON."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import PrunelabError
from ..files import publish
from .calochallenge import feature_bins, feature_label, high_level_features, histogram
from .metrics import energy_masks

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.sub{color:#555}
.note{color:#444;font-size:.9em;max-width:60em}img{max-width:100%}b.flag{color:#a00}"""


def clean(value):
    """JSON-safe: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def _atomic_write(path: str | Path, text: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise PrunelabError(f"{path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise PrunelabError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(evaluation, path: str | Path) -> Path:
    return _atomic_write(path, json.dumps(clean(evaluation.to_dict()), indent=1, allow_nan=False) + "\n")


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _panel(fig, spec, ref, gen, name: str, title: str, labels: tuple[str, str]) -> None:
    """Both samples' histograms as fractions of their showers per bin (linear scale: empty bins stay visible)
    and, below, generated / reference per bin with its statistical error."""
    edges = feature_bins(name, ref)
    cr, cg = histogram(ref, edges), histogram(gen, edges)
    hr, hg = cr / cr.sum(), cg / cg.sum()  # the unit-sum histograms the separation power compares
    inner = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    top, bottom = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
    top.stairs(hr, edges, fill=True, color="0.8", label=labels[0])
    top.stairs(hg, edges, color="C3", lw=1.2, label=labels[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hg / hr
        error = ratio * np.sqrt(1 / np.where(cg > 0, cg, np.nan) + 1 / np.where(cr > 0, cr, np.nan))
    centres = np.sqrt(edges[:-1] * edges[1:]) if name.startswith("E_layer") else (edges[:-1] + edges[1:]) / 2
    bottom.errorbar(centres, ratio, yerr=error, fmt=".", ms=2, color="C3", elinewidth=0.6)
    bottom.axhline(1.0, color="0.4", lw=0.8)
    bottom.set_ylim(0.5, 1.5)
    if name.startswith("E_layer"):
        for ax in (top, bottom):
            ax.set_xscale("log")
    top.set_ylim(bottom=0)
    top.set_title(title, fontsize=8)
    top.tick_params(which="both", labelbottom=False, labelsize=6)
    bottom.tick_params(which="both", labelsize=6)
    bottom.set_ylabel("gen/ref", fontsize=6)
    top.set_ylabel("fraction of showers", fontsize=6)
    top.set_xlim(edges[0], edges[-1])
    bottom.set_xlim(edges[0], edges[-1])


def feature_figure(ref_table, gen_table, separation, labels: tuple[str, str], columns: int = 4):
    import matplotlib.pyplot as plt

    names = list(ref_table.columns)
    rows = math.ceil(len(names) / columns)
    fig = plt.figure(figsize=(3.3 * columns, 3.0 * rows))
    grid = fig.add_gridspec(rows, columns, hspace=0.45, wspace=0.3)
    overall = separation[separation["energy_range"] == "all"].set_index("feature")
    for k, name in enumerate(names):
        sep = overall.loc[name, "separation_power"] if name in overall.index else float("nan")
        _panel(fig, grid[k // columns, k % columns], ref_table[name].to_numpy(), gen_table[name].to_numpy(), name,
               f"{feature_label(name)}\nseparation power {sep:.4f}", labels)
    fig.axes[0].legend(fontsize=7)
    return fig


def response_figure(ref_table, gen_table, ref_energy, gen_energy, edges, separation, labels):
    """E_tot / E_inc per incident-energy range, as the challenge plots it per energy."""
    import matplotlib.pyplot as plt

    ranges = [(label, a, b) for (label, a), (_, b) in zip(energy_masks(ref_energy, edges)[1:],
                                                          energy_masks(gen_energy, edges)[1:]) if a.sum() and b.sum()]
    if not ranges:
        return None
    fig = plt.figure(figsize=(3.3 * len(ranges), 3.2))
    grid = fig.add_gridspec(1, len(ranges), wspace=0.3)
    table = separation[separation["feature"] == "E_tot/E_inc"].set_index("energy_range")["separation_power"]
    for k, (label, a, b) in enumerate(ranges):
        sep = f"separation power {table[label]:.4f}" if label in table.index else "too few showers"
        _panel(fig, grid[0, k], ref_table["E_tot/E_inc"].to_numpy()[a], gen_table["E_tot/E_inc"].to_numpy()[b],
               "E_tot/E_inc", f"E_tot / E_inc, {label}\n{sep}", labels)
    fig.axes[0].legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------
# Tables and the page
# --------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _auc(value, low, high) -> str:
    return "–" if value is None else f"{value:.4f} [{low:.4f}, {high:.4f}]"


def plus_minus(value, error, scale: float = 1e3) -> str:
    """``value ± error`` times ``scale`` (FPD and KPD are quoted × 10³), or a dash when not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.3f} ± {error * scale:.3f}"


def classifier_section(classifiers: dict) -> str:
    if not classifiers:
        return ""
    rows = []
    for kind, r in classifiers.items():
        rows.append([kind, _auc(r["auc"], *r["auc_interval"]), f"{r['jsd']:.4f}", html.escape(r["network"]),
                     f"{r['train_events']:,} / {r['validation_events']:,} / {r['test_events']:,}",
                     f"{r['best_epoch']} of {r['epochs_trained']}"])
    summary = _table(["inputs", "AUC [95 % bootstrap]", "JSD", "network", "train / validation / test showers",
                      "epoch kept"], rows)
    ranges = [row["energy_range"] for row in next(iter(classifiers.values()))["by_energy"]]
    per_range = [[kind] + [_auc(row["auc"], row["auc_low"], row["auc_high"]) + f" ({row['test_events']})"
                           for row in r["by_energy"]] for kind, r in classifiers.items()]
    return ("<h2>Classifier tests</h2><p class=note>A network is trained to tell reference (class 1) from generated "
            "showers, as in the CaloChallenge: on the voxels (low-level: 100 · E_voxel / E_inc and log10 E_inc) and "
            "on the high-level features. AUC 0.5: it cannot tell them apart; 1: every shower is recognised. The "
            "interval is a percentile bootstrap over the test showers. JSD is (ln 2 − BCE) / ln 2 of the "
            "probabilities after isotonic calibration on the validation set: 0 for indistinguishable samples, "
            "1 for fully separated ones (small negative values are noise).</p>" + summary
            + "<p class=note>The same networks, AUC on the test showers in each incident-energy range "
              "(test showers in brackets):</p>" + _table(["inputs", *ranges], per_range))


def separation_section(separation) -> str:
    if separation.empty:
        return ""
    ranges = list(dict.fromkeys(separation["energy_range"]))
    value = separation.pivot(index="feature", columns="energy_range", values="separation_power")
    floor = separation.pivot(index="feature", columns="energy_range", values="floor")
    order = list(dict.fromkeys(separation["feature"]))
    rows = []
    for name in order:
        cells = []
        for r in ranges:
            v, f = value.loc[name, r], floor.loc[name, r]
            text = "–" if v != v else f"{v:.4f}"
            cells.append(f"<b class=flag>{text}</b>" if v == v and v > 2 * f else text)
        rows.append([html.escape(feature_label(name)), cells[0], f"{floor.loc[name, ranges[0]]:.4f}", *cells[1:]])
    return ("<h2>Separation power of the high-level features</h2><p class=note>0.5 Σ (h1 − h2)² / (h1 + h2) over "
            "the two histograms normalised to unit area on shared bins (the challenge's 40 log-spaced bins for layer "
            "energies, 100 linear otherwise, spanning the reference; values beyond the edges count in the edge "
            "bins). 0: identical histograms, 1: no overlap. Two samples of one distribution differ by chance: "
            "'floor' is the expected value for the overall sample sizes, about (occupied bins − 1)/4 · (1/n_ref + "
            "1/n_gen) (each range's floor is in the JSON). <b class=flag>Red</b>: more than twice the floor of its "
            "range.</p>"
            + _table(["feature", "all energies", "floor (all)", *ranges[1:]], rows))


def distance_section(distances) -> str:
    rows = []
    for _, r in distances.iterrows():
        rows.append([html.escape(r["energy_range"]), f"{r['reference_events']:,} / {r['generated_events']:,}",
                     plus_minus(r["fpd"], r["fpd_error"]), plus_minus(r["fpd_reference_split"],
                                                                      r["fpd_reference_split_error"]),
                     plus_minus(r["kpd"], r["kpd_error"]), plus_minus(r["kpd_reference_split"],
                                                                      r["kpd_reference_split_error"])])
    return ("<h2>Fréchet and kernel physics distances</h2><p class=note>On the high-level features (layer energies "
            "as fractions of the incident energy), each divided by the reference's largest absolute value, after "
            "Kansal et al. (arXiv 2211.10295). FPD: the Fréchet distance of Gaussian fits, extrapolated to "
            "infinitely many showers (± the fit's standard error). KPD: the unbiased MMD² with the polynomial "
            "kernel (x·y/d + 1)⁴, median over batches (± half the 16–84 % spread). Both are 0 for identical "
            "distributions. The quoted errors leave out that two finite samples differ by chance; the 'reference "
            "halves' columns give the same distances between two random halves of the reference, the size of "
            "chance with half the showers. Shown × 10³; '–': too few showers (20 per feature, per side or per "
            "half).</p>"
            + _table(["incident energy", "reference / generated showers", "FPD × 10³",
                      "FPD × 10³, reference halves", "KPD × 10³", "KPD × 10³, reference halves"], rows))


def summary_line(evaluation) -> str:
    sep = evaluation.separation
    overall = sep[sep["energy_range"] == "all"]
    parts = []
    for kind, r in evaluation.classifiers.items():
        parts.append(f"{kind} classifier AUC {_auc(r['auc'], *r['auc_interval'])}")
    first = evaluation.distances.iloc[0]
    if first["fpd"] is not None and first["fpd"] == first["fpd"]:
        parts.append(f"FPD × 10³ {plus_minus(first['fpd'], first['fpd_error'])}, "
                     f"KPD × 10³ {plus_minus(first['kpd'], first['kpd_error'])}")
    if not overall.empty:
        worst = overall.loc[overall["separation_power"].idxmax()]
        parts.append(f"largest separation power {worst['separation_power']:.4f} ({feature_label(worst['feature'])}; "
                     f"floor {worst['floor']:.4f})")
    return "; ".join(parts)


def write_report(evaluation, reference, generated, out: str | Path) -> Path:
    """The page: a summary line, the classifier tests, FPD/KPD, separation powers, and the histograms."""
    names = evaluation.names
    ref_table, gen_table = high_level_features(reference), high_level_features(generated)
    labels = (f"reference ({names[0]})", f"generated ({names[1]})")
    sections = [f"<p><b>Summary:</b> {html.escape(summary_line(evaluation))}.</p>",
                classifier_section(evaluation.classifiers), distance_section(evaluation.distances),
                separation_section(evaluation.separation),
                "<h2>High-level features, all incident energies</h2><p class=note>Reference filled grey, generated "
                "in red, each as the fraction of its showers per bin (the bins of the separation power); below "
                "each, generated / reference per bin with its statistical error.</p>"
                + _png(feature_figure(ref_table, gen_table, evaluation.separation, labels))]
    response = response_figure(ref_table, gen_table, reference.energy, generated.energy, evaluation.energy_edges,
                               evaluation.separation, labels)
    if response is not None:
        sections.append("<h2>Energy response per incident-energy range</h2>" + _png(response))
    title = "CaloChallenge evaluation"
    subtitle = (f"{names[1]} ({evaluation.events[1]:,} showers) against {names[0]} ({evaluation.events[0]:,} "
                f"showers); incident-energy ranges {', '.join(f'{e:g}' for e in evaluation.energy_edges)} GeV")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>{STYLE}</style></head>"
            f"<body><h1>{title}</h1><p class=sub>{html.escape(subtitle)}</p>{''.join(sections)}</body></html>")
    return _atomic_write(out, page)
