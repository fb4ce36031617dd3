"""Pruned generators scored the CaloChallenge way, as one HTML page and as JSON: fidelity against the
generator's weights remaining (IMP and one-shot, seed intervals, the dense generators as reference lines),
and a table with generation time and parameter counts beside the fidelity."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from .calochallenge_report import _atomic_write, clean

PANELS = (("low_level_auc", "low-level classifier AUC (voxels)", 1.0),
          ("high_level_auc", "high-level classifier AUC (features)", 1.0),
          ("fpd", "FPD × 10³ (high-level features)", 1e3))
PRUNED = (("imp", "C0", "o", "iterative (IMP)"), ("one_shot", "C1", "^", "one-shot"))
DENSE = (("trained", "black", "-", "trained (dense)"), ("dense_control", "0.45", "--", "dense + fine-tune"))


def _remaining(sparsity) -> np.ndarray:
    return 100.0 * (1.0 - np.asarray(sparsity, dtype=float))


def _value(row, metric: str, scale: float):
    mean = row.get(metric)
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    ok = lambda v: v is not None and v == v  # noqa: E731 (None and NaN alike)
    return (mean * scale if ok(mean) else np.nan, low * scale if ok(low) else np.nan,
            high * scale if ok(high) else np.nan)


def fidelity_figure(points, rows=None):
    """One panel per metric of :data:`PANELS` against generator weights remaining (log scale, 100 % on the
    left): IMP and one-shot means with their seed t-intervals as error bars (none with one seed), each seed's
    value as a faint dot, the dense generators as horizontal lines (their interval shaded), AUC 0.5
    ("indistinguishable") and, for FPD, its value between two halves of the reference (chance)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from ..report.plots import RC, WIDTH

    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(PANELS), figsize=(WIDTH, 3.6), layout="constrained")
        pruned = points[points["kind"].isin([k for k, *_ in PRUNED])]
        xs = _remaining(pruned["sparsity"]) if len(pruned) else np.array([100.0])
        lowest = max(float(np.nanmin(xs)) if len(xs) else 100.0, 0.01)
        for ax, (metric, label, scale) in zip(axes, PANELS):
            if metric not in points:
                ax.set_visible(False)
                continue
            for kind, colour, style, name in DENSE:
                part = points[points["kind"] == kind]
                if part.empty:
                    continue
                mean, low, high = _value(part.iloc[0].to_dict(), metric, scale)
                if mean == mean:
                    ax.axhline(mean, color=colour, ls=style, lw=1.1, label=name)
                    if low == low:
                        ax.axhspan(low, high, color=colour, alpha=0.06, lw=0)
            for kind, colour, marker, name in PRUNED:
                part = points[points["kind"] == kind].sort_values("sparsity")
                if part.empty:
                    continue
                values = [_value(r, metric, scale) for r in part.to_dict(orient="records")]
                mean = np.array([v[0] for v in values])
                low, high = np.array([v[1] for v in values]), np.array([v[2] for v in values])
                x = _remaining(part["sparsity"])
                bars = np.where(np.isnan(low), 0.0, [mean - low, high - mean]) if len(x) else None
                ax.errorbar(x, mean, yerr=bars, fmt=marker + "-", color=colour, capsize=3, ms=4, lw=1.2,
                            label=name)
                if rows is not None and kind in set(rows["kind"]) and metric in rows:
                    seeds = rows[rows["kind"] == kind]
                    if seeds["seed"].nunique() > 1:
                        ax.plot(_remaining(seeds["sparsity"]), seeds[metric].to_numpy(dtype=float) * scale, marker,
                                color=colour, alpha=0.25, ms=3, lw=0)
            if metric.endswith("_auc"):
                ax.axhline(0.5, color="tab:green", ls=":", lw=1.2, label="0.5: indistinguishable")
                drawn = [points[c].to_numpy(dtype=float) for c in (metric, f"{metric}_low", f"{metric}_high")
                         if c in points]
                drawn = np.concatenate(drawn)[np.isfinite(np.concatenate(drawn))]
                ax.set_ylim(max(-0.01, min(0.45, drawn.min(initial=0.5) - 0.03)),
                            min(1.01, max(0.55, drawn.max(initial=0.5) + 0.03)))
            elif metric == "fpd" and "fpd_reference_split" in points:
                chance = points["fpd_reference_split"].to_numpy(dtype=float) * scale
                if np.isfinite(chance).any():
                    ax.axhline(float(np.nanmean(chance)), color="tab:green", ls=":", lw=1.2,
                               label="two halves of the reference")
                ax.set_ylim(bottom=0)
            ax.set_xscale("log")
            ticks = [t for t in (100, 50, 25, 12.5, 6.25, 3.125, 1.5625, 0.78125) if t >= lowest * 0.9]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlim(110, lowest * 0.8)
            ax.set_xlabel("generator weights remaining (%)")
            ax.set_title(label)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:  # FPD's chance line too
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    return fig


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _fmt(value, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or value != value:
        return "–"
    return f"{value * scale:.{digits}f}".replace("-", "−")


def _ci(row: dict, metric: str, digits: int = 3, scale: float = 1.0) -> str:
    mean = row.get(metric)
    if mean is None or mean != mean:
        return "–"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if low is None or low != low:
        return _fmt(mean, digits, scale)
    return f"{_fmt(mean, digits, scale)} [{_fmt(low, digits, scale)}, {_fmt(high, digits, scale)}]"


def _microseconds(row: dict, batch: int) -> str:
    value = row.get(f"seconds_per_shower_batch_{batch}")
    if value is None or value != value:
        return "–"
    return _ci(row, f"seconds_per_shower_batch_{batch}", 2 if value * 1e6 < 100 else 1, 1e6)


def batch_sizes(frame) -> list[int]:
    return sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns
                  if c.startswith("seconds_per_shower_batch_") and c.rsplit("_", 1)[1].isdigit())


def shown_points(points):
    """The aggregated table as people read it: one row per studied point, fidelity beside generation time and
    parameter counts (KPD and the separation powers: in the table of scored states and the CSV)."""
    import pandas as pd

    sizes = batch_sizes(points)
    out = []
    for r in points.to_dict(orient="records"):
        row = {"generator": r["label"], "seeds": int(r["seeds"]),
               "weights remaining": f"{100 * (1 - r['sparsity']):.2f} %",
               "parameters remaining / total": f"{r['parameters_remaining']:,.0f} / {r['parameters']:,.0f}",
               "low-level AUC": _ci(r, "low_level_auc"), "high-level AUC": _ci(r, "high_level_auc"),
               "FPD × 10³": _ci(r, "fpd", 3, 1e3)}
        for b in sizes:
            row[f"µs / shower, batch {b:,}"] = _microseconds(r, b)
        out.append(row)
    return pd.DataFrame(out)


def shown_states(rows):
    """Every scored state (one per seed), with the classifiers' own bootstrap intervals."""
    import pandas as pd

    out = []
    for r in rows.to_dict(orient="records"):
        auc = {k: (f"{_fmt(r[f'{k}_auc'])} [{_fmt(r[f'{k}_auc_low'])}, {_fmt(r[f'{k}_auc_high'])}]")
               for k in ("low_level", "high_level")}
        out.append({"generator": r["label"], "seed": r["seed"], "state": str(r["hash"])[:10],
                    "low-level AUC [bootstrap 95 %]": auc["low_level"],
                    "high-level AUC [bootstrap 95 %]": auc["high_level"],
                    "FPD × 10³": f"{_fmt(r['fpd'], 3, 1e3)} ± {_fmt(r['fpd_error'], 3, 1e3)}",
                    "KPD × 10³": f"{_fmt(r['kpd'], 3, 1e3)} ± {_fmt(r['kpd_error'], 3, 1e3)}",
                    "largest separation power (feature; floor)":
                        f"{_fmt(r['separation_largest'], 4)} ({r['separation_largest_feature']}; "
                        f"{_fmt(r['separation_largest_floor'], 4)})",
                    "cells > 2× floor": f"{r['separation_cells_above_twice_floor']} of {r['separation_cells']}"})
    return pd.DataFrame(out)


def chance_note(rows) -> str:
    """What two halves of the reference give (the same reference for every state: one number)."""
    halves = rows[["fpd_reference_split", "fpd_reference_split_error", "kpd_reference_split",
                   "kpd_reference_split_error"]].dropna().drop_duplicates()
    if halves.empty:
        return "Too few showers to compare two halves of the reference (20 per feature per half)."
    h = halves.iloc[0]
    return (f"Two random halves of the reference give FPD × 10³ = {_fmt(h['fpd_reference_split'], 3, 1e3)} ± "
            f"{_fmt(h['fpd_reference_split_error'], 3, 1e3)} and KPD × 10³ = {_fmt(h['kpd_reference_split'], 3, 1e3)}"
            f" ± {_fmt(h['kpd_reference_split_error'], 3, 1e3)}: what chance gives with half the showers.")


# --------------------------------------------------------------------------
# JSON and the page
# --------------------------------------------------------------------------


def to_dict(scores, points, settings, timing) -> dict:
    return clean({"format": 1, "settings": settings.identity(), "timing": None if timing is None else timing.identity(),
                  "states": scores.rows.to_dict(orient="records"), "points": points.to_dict(orient="records"),
                  "notes": list(scores.notes)})


def write_json(scores, points, settings, timing, path) -> Path:
    return _atomic_write(path, json.dumps(to_dict(scores, points, settings, timing), indent=1, allow_nan=False) + "\n")


def write_report(scores, points, settings, timing, out, *, store: str = "") -> Path:
    from ..report.html_parts import CHECK, STYLE, section, table_section

    rows = scores.rows
    seeds = int(points["seeds"].max()) if len(points) else 0
    bars = ("95 % Student-t intervals of the mean over seeds" if seeds > 1
            else "none (one seed: no interval over seeds; each state's own bootstrap interval is in the table of "
                 "scored states)")
    note = (f"Each point: the mean over seeds of the scores of generators pruned to that level and fine-tuned; "
            f"error bars: {bars}; faint dots: each seed. Horizontal lines: the dense trained generator and the "
            "dense one fine-tuned as long as the pruned ones (shaded: their interval). AUC 0.5: a classifier cannot "
            "tell generated from reference showers; FPD 0: identical feature distributions, and the dotted line is "
            "what two halves of the reference give by chance.")
    classifier = settings.classifier
    timing_text = ("generation time not measured (--no-timing)" if timing is None else
                   f"generation time: median over {timing.repeats} repeats after one warm-up, seconds per shower, "
                   f"{timing.threads} torch thread(s), masks made permanent (dense kernels: no sparse speed-up is "
                   f"expected); ranges are over seeds' medians where several"
                   + (f"; batches capped at {timing.max_batch:,}" if timing.max_batch else ""))
    settings_note = (f"{settings.events:,} held-out showers of the study's dataset and as many generated at the "
                     f"same incident energies (noise seed {settings.seed}); classifiers "
                     f"{'-'.join(map(str, classifier.hidden))} hidden units, up to {classifier.epochs} epochs, "
                     f"{classifier.bootstrap} bootstrap resamples; {timing_text}.")
    fig = fidelity_figure(points, rows)
    sections = [f"<p class=note>{html.escape(settings_note)}</p>",
                section("Fidelity against generator weights remaining", fig, None, "", note),
                table_section("Generators: fidelity, generation time, parameters", points, "generator_scores",
                              note="Mean [95 % t-interval over seeds] where several seeds; µs per shower at each "
                                   "batch size; parameters: the generator's weights and biases (a GAN's critic "
                                   "does not count), remaining after its masks.", shown=shown_points(points)),
                table_section("Scored states", rows, "generator_states", max_rows=200, shown=shown_states(rows),
                              note="Each generator's own scores: the classifiers' bootstrap intervals over test "
                                   "showers, FPD/KPD ± their errors, the largest separation power over all "
                                   "energies and how many feature × energy-range cells exceed twice their "
                                   "statistical floor. " + chance_note(rows))]
    if scores.notes:
        sections.append("<section><h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in scores.notes)
                        + "</ul></section>")
    title = "Pruned generators scored the CaloChallenge way"
    subtitle = f"{store}: {len(rows)} generators, {len(points)} studied points" + (
        f", {seeds} seeds" if seeds > 1 else ", one seed")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>report</title><style>{STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>{''.join(sections)}"
            f"{CHECK}</body></html>")
    return _atomic_write(out, page)

