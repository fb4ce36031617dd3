"""``prunelab calo …``: generate showers (CaloGAN or CaloChallenge layout), summarise their shower shapes, train
and sample the shower GAN, and evaluate generated showers against reference ones."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import PrunelabError

calo_app = typer.Typer(no_args_is_help=True, help="Calorimeter showers: generate (CaloGAN or CaloChallenge HDF5 "
                                                  "layout), shower shapes, evaluate generated showers.")
console = Console()


@calo_app.command()
def generate(
    particle: str = typer.Option(..., "--particle", "-p", help="eplus, gamma or piplus"),
    events: int = typer.Option(..., "-n", "--events", help="number of showers"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
    energy: Optional[float] = typer.Option(None, help="fixed incident energy in GeV (default: uniform in the range)"),
    energy_min: float = typer.Option(1.0, help="lower end of the uniform energy range, GeV"),
    energy_max: float = typer.Option(100.0, help="upper end of the uniform energy range, GeV"),
    seed: int = typer.Option(0, help="random seed (same seed and options: identical showers)"),
    layout: str = typer.Option("calogan", help="calogan (layer images, GeV) or calochallenge (flat voxels, MeV)"),
    spots: bool = typer.Option(True, help="spot fluctuations (--no-spots: the mean lateral profile)"),
    position_sigma: float = typer.Option(0.0, help="Gaussian smearing of the entry point per axis, mm"),
    angle_sigma: float = typer.Option(0.0, help="Gaussian smearing of the direction per axis, rad"),
    threads: Optional[int] = typer.Option(None, help="worker threads (the result does not depend on it)"),
) -> None:
    """Simulate showers and write them in the CaloGAN (or CaloChallenge) HDF5 layout."""
    from .io import write_showers
    from .simulator import simulate

    if output.exists() and output.is_dir():
        raise PrunelabError(f"{output}: is a directory; give a file name such as {output / (particle + '.h5')}")
    chosen = energy if energy is not None else (energy_min, energy_max)
    began = time.perf_counter()
    showers = simulate(particle, events, energy=chosen, seed=seed, spots=spots, position_sigma=position_sigma,
                       angle_sigma=angle_sigma, threads=threads)
    seconds = time.perf_counter() - began
    settings = {"particle": particle, "events": events, "energy": chosen, "seed": seed, "spots": spots,
                "position_sigma": position_sigma, "angle_sigma": angle_sigma, "generator": "prunelab.hep.simulator"}
    write_showers(output, showers, settings, layout=layout)
    console.print(f"{events} {particle} showers in {seconds:.2f} s ({events / seconds:,.0f} per second) → {output}")


@calo_app.command()
def shapes(
    files: list[Path] = typer.Argument(..., help="CaloGAN-layout HDF5 files"),
    csv: Optional[Path] = typer.Option(None, help="also write every event's shower shapes to this CSV"),
    limit: Optional[int] = typer.Option(None, help="read at most this many events per file"),
) -> None:
    """Summarise the shower shapes of one or more files (mean, SD and 5/50/95 % quantiles)."""
    import pandas as pd

    from .io import read_showers
    from .shapes import shower_shapes

    frames = []
    for path in files:
        showers = read_showers(path, limit=limit)
        table = shower_shapes(showers)
        table.insert(0, "file", path.name)
        table.insert(1, "particle", showers.particle or "?")
        table.insert(2, "incident_GeV", showers.energy)
        frames.append(table)
    everything = pd.concat(frames, ignore_index=True)
    columns = [c for c in everything.columns if c not in ("file", "particle")]
    for name, group in everything.groupby("file", sort=False):
        out = Table("observable", "mean", "sd", "5 %", "median", "95 %",
                    title=f"{name}: {len(group)} events ({group['particle'].iloc[0]})")
        for col in columns:
            values = group[col].to_numpy(dtype=float)
            q = pd.Series(values).quantile([0.05, 0.5, 0.95]).to_numpy()
            out.add_row(col, *(f"{v:.4g}" for v in (values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0, *q)))
        console.print(out)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = csv.with_name(csv.name + ".part")
        everything.to_csv(tmp, index=False)
        tmp.replace(csv)
        console.print(f"{len(everything)} rows → {csv}")


def _summary_table(points, title: str) -> Table:
    out = Table("state", "seed", "generator pruned", "two-sample AUC [95 % CI]", "worst W1/SD (observable)",
                "median W1/SD", "max KS", "response bias", "Pareto", title=title)
    for _, p in points.iterrows():
        auc = "-" if p["auc"] is None or p["auc"] != p["auc"] else f"{p['auc']:.3f} [{p['auc_low']:.3f}, {p['auc_high']:.3f}]"
        worst = "-" if p["worst_wasserstein"] is None else f"{p['worst_wasserstein']:.3f} ({p['worst_observable']})"
        out.add_row(f"{p['label']} {p['hash'][:8]}", str(p["seed"]), f"{100 * (p['sparsity'] or 0):.1f} %", auc, worst,
                    "-" if p["median_wasserstein"] is None else f"{p['median_wasserstein']:.3f}",
                    "-" if p["max_ks"] is None else f"{p['max_ks']:.3f}",
                    "-" if p["response_bias"] is None else f"{p['response_bias']:+.4f}",
                    "yes" if p.get("pareto") else "")
    return out


@calo_app.command("train-gan", hidden=True)  # its first name, from before the flow
@calo_app.command("train")
def train_gan(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="generator study spec (TOML with [gan] or [flow]; "
                                                               "see docs/hep.md)"),
    store: Optional[Path] = typer.Option(None, help="store directory (default: runs/NAME)"),
    executor: str = typer.Option("serial", help="serial, local, or a Dask scheduler address"),
    workers: Optional[int] = typer.Option(None, help="worker processes for --executor local"),
    threads: int = typer.Option(1, help="torch threads per task (results are bitwise reproducible per value)"),
) -> None:
    """Train the shower GAN or flow (checkpoints are states: a rerun resumes), prune its generator as the spec says, and print every state's fidelity on held-out simulator showers."""  # noqa: E501
    from ..experiment.executors import plan
    from ..experiment.query import open_store
    from .gan_study import build_gan_study, gan_points, load_gan_spec

    spec = load_gan_spec(spec_path)
    exp = build_gan_study(spec, store or Path("runs") / spec.name)
    tasks, total, done = plan(exp)
    console.print(f"[bold]{spec.name}[/]: {len(exp.states)} states, {len(done)} already stored → {exp.store.root}")
    console.print(str(exp.run(executor, workers=workers, threads=threads)))
    points = gan_points(open_store(exp.store.root))
    points = points[points["kind"] != "checkpoint"] if (points["kind"] != "checkpoint").any() else points
    console.print(_summary_table(points, f"{spec.name}: fidelity against {spec.dataset} held-out showers"))


@calo_app.command()
def sample(
    store: Path = typer.Argument(..., help="store of a GAN study"),
    events: int = typer.Option(..., "-n", "--events", help="number of showers"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write (CaloGAN layout)"),
    state: Optional[str] = typer.Option(None, help="state hash (prefix); default: the study's trained GAN"),
    energy: Optional[float] = typer.Option(None, help="fixed incident energy in GeV (default: uniform in the range)"),
    energy_min: float = typer.Option(1.0, help="lower end of the uniform energy range, GeV"),
    energy_max: float = typer.Option(100.0, help="upper end of the uniform energy range, GeV"),
    seed: int = typer.Option(0, help="random seed (same seed and options: identical showers)"),
) -> None:
    """Generate showers with a trained (or pruned) generator, in the same HDF5 layout as real data."""
    import numpy as np

    from ..experiment.query import open_store
    from .generation import is_shower_generator
    from .generation import sample as generate_showers
    from .gan_study import pick_state
    from .io import write_showers

    if events < 1:
        raise PrunelabError(f"-n/--events must be at least 1, got {events}")
    if energy is None and not 0 < energy_min <= energy_max:
        raise PrunelabError(f"energy range {energy_min}–{energy_max} GeV: need 0 < min ≤ max")
    if energy is not None and energy <= 0:
        raise PrunelabError(f"--energy {energy}: must be positive (GeV)")
    results = open_store(store)
    chosen = pick_state(results, state)
    manifest = results.get(chosen)
    model = results.load_model(chosen)
    if not is_shower_generator(model):
        raise PrunelabError(f"state {chosen[:12]} holds a {manifest['spec']['model']!r}, not a shower generator "
                            "(calogan, caloflow)")
    rng = np.random.default_rng(seed)
    energies = np.full(events, energy) if energy is not None else rng.uniform(energy_min, energy_max, events)
    began = time.perf_counter()
    showers = generate_showers(model, energies, seed=seed, particle=manifest["dataset"].removeprefix("calo_showers_"))
    seconds = time.perf_counter() - began
    write_showers(output, showers, {"generator": type(model).__module__, "store": str(store), "state": chosen,
                                    "seed": seed, "energy": energy if energy is not None else [energy_min, energy_max]})
    console.print(f"{events} showers from state {chosen[:12]} in {seconds:.2f} s ({events / seconds:,.0f} per second)"
                  f" → {output}")


@calo_app.command()
def fidelity(
    source: Path = typer.Argument(..., help="a GAN study store, or an HDF5 file of generated showers"),
    reference: Optional[Path] = typer.Option(None, help="HDF5 file of reference showers (when SOURCE is a file)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="also write an HTML report here"),
    state: Optional[str] = typer.Option(None, help="stores: the state shown in full (default: the trained GAN)"),
    limit: Optional[int] = typer.Option(None, help="files: read at most this many showers of each"),
) -> None:
    """Fidelity of generated showers: Wasserstein and KS distances per observable and energy bin, a classifier two-sample test, the energy response; for a GAN store, against generator sparsity."""  # noqa: E501
    from .gan_report import file_report, store_report

    if source.is_file():
        from .io import read_showers

        if reference is None:
            raise PrunelabError(f"{source}: a file of generated showers needs --reference FILE to compare with")
        ref, gen = read_showers(reference, limit=limit), read_showers(source, limit=limit)
        path, fid = file_report(ref, gen, output or Path("fidelity.html"), names=(reference.name, source.name))
        overall = fid.table[fid.table["energy_bin"] == "all"].sort_values("wasserstein", ascending=False)
        table = Table("observable", "W1 / reference SD", "KS", "reference mean", "generated mean",
                      title=f"{source.name} vs {reference.name}: two-sample AUC {fid.two_sample['auc']:.3f} "
                            f"[{fid.two_sample['interval'][0]:.3f}, {fid.two_sample['interval'][1]:.3f}]")
        for _, r in overall.iterrows():
            table.add_row(r["observable"], f"{r['wasserstein']:.3f}", f"{r['ks']:.3f}", f"{r['reference_mean']:.4g}",
                          f"{r['generated_mean']:.4g}")
        console.print(table)
        console.print(f"report written to {path}")
        return
    from ..experiment.query import open_store
    from .gan_study import gan_points

    results = open_store(source)
    points = gan_points(results)
    if points.empty:
        raise PrunelabError(f"{source}: no finished state of a GAN study (run `prunelab calo train SPEC` first)")
    console.print(_summary_table(points.sort_values(["kind", "seed", "sparsity"]), f"{source}: GAN fidelity"))
    if output is not None:
        path = store_report(results, output, state=state)
        console.print(f"report written to {path}")


def _edges(text: Optional[str]) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise PrunelabError(f"--energy-bins {text!r}: give increasing edges in GeV separated by commas, "
                            "e.g. 1,10,30,60,100") from None


@calo_app.command()
def evaluate(
    reference: Path = typer.Argument(..., help="HDF5 file of reference showers (CaloGAN or CaloChallenge layout)"),
    generated: Path = typer.Argument(..., help="HDF5 file of generated showers (either layout)"),
    output: Path = typer.Option(Path("evaluation.html"), "-o", "--output", help="HTML report to write"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write every number as JSON here"),
    energy_bins: Optional[str] = typer.Option(None, help="incident-energy range edges in GeV, e.g. 1,10,30,60,100 "
                                                         "(default: those, or decades covering the showers)"),
    limit: Optional[int] = typer.Option(None, help="read at most this many showers of each file"),
    classifier: bool = typer.Option(True, help="train the low- and high-level classifiers (--no-classifier: skip)"),
    hidden: str = typer.Option("512,512", help="classifier hidden layer widths"),
    epochs: int = typer.Option(50, help="classifier epochs at most (the one with the lowest validation loss is kept)"),
    seed: int = typer.Option(0, help="seed of the splits, the networks and the resampling"),
    threads: int = typer.Option(1, help="torch threads for the classifiers (the numbers depend on it)"),
) -> None:
    """The CaloChallenge evaluation (arXiv 2410.21611): separation power of the high-level features, FPD/KPD, and classifier AUCs on voxels and on high-level features, per incident-energy range."""  # noqa: E501
    from .calochallenge import evaluate as run_evaluation
    from .calochallenge_classifier import ClassifierSettings
    from .calochallenge_report import plus_minus as _pm
    from .calochallenge_report import summary_line, write_json, write_report
    from .io import read_showers

    try:
        widths = tuple(int(w) for w in hidden.split(","))
    except ValueError:
        raise PrunelabError(f"--hidden {hidden!r}: give layer widths separated by commas, e.g. 512,512") from None
    settings = ClassifierSettings(hidden=widths, epochs=epochs, seed=seed, threads=threads)
    ref, gen = read_showers(reference, limit=limit), read_showers(generated, limit=limit)
    began = time.perf_counter()
    result = run_evaluation(ref, gen, energy_edges=_edges(energy_bins), seed=seed,
                            classifiers=("low-level", "high-level") if classifier else (), classifier_settings=settings,
                            names=(reference.name, generated.name))
    seconds = time.perf_counter() - began
    table = Table("incident energy", "low-level AUC [95 %]", "high-level AUC [95 %]", "FPD × 10³",
                  "FPD × 10³ ref. halves", "KPD × 10³",
                  title=f"{generated.name} vs {reference.name}: {len(gen):,} and {len(ref):,} showers")
    by_range = {kind: {"all": r, **{row["energy_range"]: row for row in r["by_energy"]}}
                for kind, r in result.classifiers.items()}

    def auc(kind: str, label: str) -> str:
        row = by_range.get(kind, {}).get(label)
        if row is None or row.get("auc") is None:
            return "-"
        low, high = row["auc_interval"] if "auc_interval" in row else (row["auc_low"], row["auc_high"])
        return f"{row['auc']:.3f} [{low:.3f}, {high:.3f}]"

    for _, r in result.distances.iterrows():
        fpd, split, kpd = (_pm(r[key], r[f"{key}_error"]) for key in ("fpd", "fpd_reference_split", "kpd"))
        table.add_row(r["energy_range"], auc("low-level", r["energy_range"]), auc("high-level", r["energy_range"]),
                      fpd, split, kpd)
    console.print(table)
    overall = result.separation[result.separation["energy_range"] == "all"].sort_values("separation_power",
                                                                                        ascending=False)
    seps = Table("feature", "separation power", "statistical floor", title="separation power, all energies")
    for _, r in overall.iterrows():
        seps.add_row(r["feature"], f"{r['separation_power']:.4f}", f"{r['floor']:.4f}")
    console.print(seps)
    console.print(summary_line(result))
    path = write_report(result, ref, gen, output)
    console.print(f"evaluated in {seconds:.1f} s; report written to {path}")
    if json_path is not None:
        console.print(f"numbers written to {write_json(result, json_path)}")


@calo_app.command()
def score(
    store: Path = typer.Argument(..., help="store of a generator study (made by `prunelab calo train`)"),
    events: int = typer.Option(10000, "-n", "--events", help="score against the first N held-out showers of the "
                                                             "study's dataset (at least 400)"),
    output: Path = typer.Option(Path("score.html"), "-o", "--output", help="HTML report to write"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write every number as JSON here"),
    threads: int = typer.Option(1, help="torch threads while timing generation"),
    timing: bool = typer.Option(True, help="time generation at batch sizes 1, 100 and 10,000 (--no-timing: skip)"),
    max_batch: Optional[int] = typer.Option(None, help="cap the timed batch size (a machine short of memory)"),
    repeats: int = typer.Option(5, help="timed repeats per batch size (the median and range are reported)"),
    hidden: str = typer.Option("512,512", help="classifier hidden layer widths"),
    epochs: int = typer.Option(50, help="classifier epochs at most (the one with the lowest validation loss is kept)"),
    seed: int = typer.Option(0, help="seed of the generated showers' noise and of the evaluation"),
) -> None:
    """Score every pruned, dense and fine-tuned generator of a study the CaloChallenge way (classifier AUCs, FPD/KPD, separation power), with generation time and parameter counts, averaged over seeds; results are cached in the store."""  # noqa: E501
    from ..cli import Col, print_table
    from ..experiment.query import open_store
    from .calochallenge_classifier import ClassifierSettings
    from .generator_score_report import shown_points, write_json, write_report
    from .generator_score_study import ScoreSettings, TimingSettings, aggregate, score_study

    try:
        widths = tuple(int(w) for w in hidden.split(","))
    except ValueError:
        raise PrunelabError(f"--hidden {hidden!r}: give layer widths separated by commas, e.g. 512,512") from None
    if threads < 1 or repeats < 1 or (max_batch is not None and max_batch < 1):
        raise PrunelabError(f"--threads, --repeats and --max-batch must be at least 1, got {threads}, {repeats} "
                            f"and {max_batch}")
    settings = ScoreSettings(events=events, seed=seed, classifier=ClassifierSettings(hidden=widths, epochs=epochs,
                                                                                     seed=seed))
    timed = TimingSettings(threads=threads, max_batch=max_batch, repeats=repeats) if timing else None
    results = open_store(store)
    began = time.perf_counter()

    def progress(i: int, n: int, point: dict, what: str) -> None:
        console.print(f"[{i + 1}/{n}] {point['label']} (seed {point['seed']}, {str(point['hash'])[:10]}): {what}")

    scores = score_study(results, settings, timed, progress=progress)
    points = aggregate(scores.rows)
    shown = shown_points(points)
    # on a narrow terminal the minor columns go first (the HTML and JSON keep everything)
    drop = {"generator": 0, "seeds": 2, "weights remaining": 0, "parameters remaining / total": 3, "low-level AUC": 0,
            "high-level AUC": 0, "FPD × 10³": 1, "KPD × 10³": 5, "largest separation power": 4}
    short = {"weights remaining": "weights left", "parameters remaining / total": "parameters left / all",
             "largest separation power": "largest sep. power"}
    columns = [Col(short.get(c, c.replace("µs / shower, batch ", "µs/shower b=")), fit="wrap" if c == "generator"
                   else "num", drop=drop.get(c, 2 if "10,000" in c else 3), width=10) for c in shown.columns]
    print_table(columns, [[str(v) for v in row] for row in shown.itertuples(index=False)], out=console,
                title=f"{store}: {len(scores.rows)} generators scored against {events:,} held-out showers "
                      "(mean [95 % t-interval over seeds])")
    for note in scores.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"{scores.computed} scores computed, {scores.reused} read from the store, in "
                  f"{time.perf_counter() - began:.1f} s; report written to "
                  f"{write_report(scores, points, settings, timed, output, store=str(store))}")
    if json_path is not None:
        console.print(f"numbers written to {write_json(scores, points, settings, timed, json_path)}")
