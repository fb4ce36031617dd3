"""The fidelity section of a report: tables and overlaid histograms, for a GAN store or two files."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from ..errors import PrunelabError
from ..report.kinds import ReportKind

SHOWN_OBSERVABLES = ("E_0", "E_1", "E_2", "E_tot", "f_0", "f_1", "f_2", "depth", "depth_width", "width_x_0",
                     "width_y_0", "width_x_1", "width_y_1", "width_x_2", "width_y_2", "eratio_0", "eratio_1",
                     "eratio_2", "occupancy_0", "occupancy_1", "occupancy_2", "deepest")


def histograms(reference, generated: dict, columns: int = 5):
    """Overlaid histograms per shower-shape observable: the reference filled, each generated set as a line."""
    import matplotlib.pyplot as plt

    from .shapes import shower_shapes

    ref = shower_shapes(reference)
    gens = {label: shower_shapes(g) for label, g in generated.items()}
    rows = math.ceil(len(SHOWN_OBSERVABLES) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.1 * columns, 2.3 * rows))
    for ax, name in zip(axes.flat, SHOWN_OBSERVABLES):
        values = ref[name].to_numpy()
        pooled = np.concatenate([values, *[g[name].to_numpy() for g in gens.values()]])
        low, high = np.quantile(pooled, [0.005, 0.995])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, 41)
        ax.hist(np.clip(values, low, high), bins=edges, density=True, color="0.8", label="reference")
        for label, g in gens.items():
            ax.hist(np.clip(g[name].to_numpy(), low, high), bins=edges, density=True, histtype="step", lw=1.3,
                    label=label)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(SHOWN_OBSERVABLES):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def sparsity_figure(points):
    """Two-sample AUC (with its interval) and worst normalised Wasserstein distance against sparsity."""
    import matplotlib.pyplot as plt

    fig, (ax_auc, ax_w) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"trained": ("k", "o"), "dense_control": ("0.4", "s"), "imp": ("C0", "o-"), "one_shot": ("C1", "^-")}
    labels = {"trained": "trained (dense)", "dense_control": "dense + fine-tune", "imp": "iterative (IMP)",
              "one_shot": "one-shot"}
    for kind, (colour, marker) in styles.items():
        part = points[points["kind"] == kind]
        if part.empty:
            continue
        grouped = part.assign(key=part["sparsity"].round(6)).groupby("key", sort=True)  # seeds of one level
        table = grouped.agg(sparsity=("sparsity", "mean"), auc=("auc", "mean"), low=("auc_low", "min"),
                            high=("auc_high", "max"), w=("worst_wasserstein", "mean")).sort_values("sparsity")
        x = 100 * table["sparsity"]
        ax_auc.errorbar(x, table["auc"], yerr=[table["auc"] - table["low"], table["high"] - table["auc"]],
                        fmt=marker, color=colour, capsize=3, label=labels[kind])
        ax_w.plot(x, table["w"], marker, color=colour, label=labels[kind])
    front = points[points["pareto"]].sort_values("sparsity") if "pareto" in points else points.iloc[:0]
    if not front.empty:
        ax_auc.plot(100 * front["sparsity"], front["auc"], "o", mfc="none", mec="red", ms=11, mew=1.3,
                    label="Pareto-optimal (sparsity, AUC)")
    ax_auc.axhline(0.5, color="0.6", ls=":", lw=1)
    ax_auc.set_xlabel("generator weights pruned (%)")
    ax_auc.set_ylabel("two-sample AUC (0.5: indistinguishable)")
    ax_w.set_xlabel("generator weights pruned (%)")
    ax_w.set_ylabel("worst W1 / reference SD over observables")
    ax_w.set_yscale("log")
    for ax in (ax_auc, ax_w):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def response_figure(energy_response_by_label: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    first = next(iter(energy_response_by_label.values()))
    bins = [b for b in first["energy_bin"] if b != "all"]
    ref = first.set_index("energy_bin").loc[bins]
    x = np.arange(len(bins))
    ax.errorbar(x, ref["reference_mean"], yerr=ref["reference_sd"], fmt="s", color="k", capsize=3, label="reference")
    for i, (label, table) in enumerate(energy_response_by_label.items()):
        t = table.set_index("energy_bin").loc[bins]
        ax.errorbar(x + 0.08 * (i + 1), t["generated_mean"], yerr=t["generated_sd"], fmt="o", capsize=3, label=label)
    ax.set_xticks(x, bins)
    ax.set_ylabel("deposited / requested energy (mean ± SD)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fidelity_tables(fid) -> list[str]:
    from ..report.html_parts import table_section

    overall = fid.table[fid.table["energy_bin"] == "all"].drop(columns=["energy_bin"]).sort_values(
        "wasserstein", ascending=False)
    per_bin = fid.table.pivot(index="observable", columns="energy_bin", values="wasserstein").reset_index()
    auc, (low, high) = fid.two_sample["auc"], fid.two_sample["interval"]
    note = (f"Two-sample AUC {auc:.3f} [{low:.3f}, {high:.3f}] (DeLong 95 %): "
            f"{fid.two_sample['classifier']} on {len(fid.two_sample['features'])} features, trained on "
            f"{fid.two_sample['train_events']:,} showers, tested on {fid.two_sample['test_events']:,}. "
            "0.5 means the classifier cannot tell generated from reference showers.")
    return [table_section("Fidelity per observable (all energies)", overall, "fidelity_observables", note=note),
            table_section("Normalised Wasserstein distance per energy bin", per_bin, "fidelity_bins"),
            table_section("Energy response", fid.energy_response, "energy_response",
                           note="(grid + overflow energy) / requested energy")]


def _page(title: str, subtitle: str, sections: list[str], out) -> Path:
    from ..files import publish
    from ..report.html_parts import CHECK, STYLE

    page = (f"<!doctype html><html><head><meta charset=utf-8><title>report</title><style>{STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>" + "".join(sections)
            + f"{CHECK}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    publish(tmp, out)
    return out


def _figure(title: str, fig, note: str = "") -> str:
    """A plot section, as the study report draws them."""
    from ..report.html_parts import section

    return section(title, fig, None, "", note)


def file_report(reference, generated, out, *, names: tuple[str, str] = ("reference", "generated")) -> tuple[Path, object]:
    """Fidelity of one set of showers against another (e.g. two HDF5 files), as an HTML page."""
    from .fidelity import fidelity

    fid = fidelity(reference, generated)
    sections = _fidelity_tables(fid)
    sections.append(_figure("Shower shapes", histograms(reference, {names[1]: generated})))
    sections.append(_figure("Energy response by incident energy", response_figure({names[1]: fid.energy_response})))
    return _page("prunelab calorimeter fidelity", f"{names[1]} ({len(generated):,} showers) against {names[0]} "
                 f"({len(reference):,} showers)", sections, out), fid


def store_report(results, out, *, state: str | None = None) -> Path:
    """The report of a GAN store: fidelity against sparsity, and the chosen (default: trained) state's
    fidelity in full, its showers overlaid with the most pruned generators' of each kind."""
    from .fidelity import Fidelity
    from .generation import sample
    from .gan_recipes import EVALUATION_SEED
    from .gan_study import gan_points, pick_state
    from ..report.html_parts import table_section

    points = gan_points(results)
    if points.empty:
        raise PrunelabError(f"{results.store.root}: no finished state of a GAN study to report")
    chosen = pick_state(results, state)
    manifest = results.get(chosen)
    stored = (manifest.get("metrics") or {}).get("fidelity")
    if stored is None:
        raise PrunelabError(f"state {chosen[:12]} has no fidelity measurement (trained with evaluate_showers = 0)")
    fid = Fidelity.from_dict(stored)
    sections = []
    pruned = points[points["kind"].isin(["imp", "one_shot", "trained", "dense_control"])]
    if (pruned["kind"].isin(["imp", "one_shot"])).any():
        sections.append(_figure("Fidelity against sparsity", sparsity_figure(pruned),
                                "Each point is a generator pruned and fine-tuned; error bars: DeLong 95 % interval "
                                "of the two-sample AUC (min/max over seeds where several)."))
    shown = points.drop(columns=["hash", "study"]).sort_values(["kind", "seed", "sparsity"])
    sections.append(table_section("Studied states", shown, "gan_points"))
    sections += _fidelity_tables(fid)
    # overlay: the chosen state and the sparsest generator of each pruning kind
    from .tasks import shower_split

    reference = shower_split(manifest["dataset"], "test")
    events = int(fid.table["reference_events"].max())
    reference = reference.take(np.arange(min(events, len(reference))))
    labels = {chosen: f"state {chosen[:8]}"}
    for kind in ("imp", "one_shot"):
        part = points[points["kind"] == kind]
        if not part.empty:
            row = part.loc[part["sparsity"].idxmax()]
            labels[row["hash"]] = f"{row['label']} ({100 * row['sparsity']:.1f} % pruned)"
    generated = {label: sample(results.load_model(h), reference.energy, seed=EVALUATION_SEED)
                 for h, label in labels.items()}
    sections.append(_figure("Shower shapes", histograms(reference, generated),
                            f"{len(reference):,} held-out simulator showers (grey) and as many generated at the "
                            "same incident energies."))
    responses = {}
    for h, label in labels.items():
        m = results.get(h)
        f = (m.get("metrics") or {}).get("fidelity")
        if f is not None:
            responses[label] = Fidelity.from_dict(f).energy_response
    if responses:
        sections.append(_figure("Energy response by incident energy", response_figure(responses)))
    return _page("prunelab GAN report", f"{results.store.root}: {len(points)} states; details for {chosen[:12]}",
                 sections, out)


def _is_gan_store(results) -> bool:
    from .gan_study import is_gan_store

    return is_gan_store(results)


# `prunelab report` on a shower-GAN store: this page instead of the study report (registered through the
# plug-in's entry point prunelab.report_kinds)
GAN_REPORT = ReportKind(applies=_is_gan_store, build=store_report)
