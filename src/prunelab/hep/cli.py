"""``prunelab calo …``: generate showers in the CaloGAN layout and summarise their shower shapes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import PrunelabError

calo_app = typer.Typer(no_args_is_help=True, help="Calorimeter showers: generate (CaloGAN HDF5 layout), shower shapes.")
console = Console()


@calo_app.command()
def generate(
    particle: str = typer.Option(..., "--particle", "-p", help="eplus, gamma or piplus"),
    events: int = typer.Option(..., "-n", "--events", help="number of showers"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write (CaloGAN layout)"),
    energy: Optional[float] = typer.Option(None, help="fixed incident energy in GeV (default: uniform in the range)"),
    energy_min: float = typer.Option(1.0, help="lower end of the uniform energy range, GeV"),
    energy_max: float = typer.Option(100.0, help="upper end of the uniform energy range, GeV"),
    seed: int = typer.Option(0, help="random seed (same seed and options: identical showers)"),
    spots: bool = typer.Option(True, help="spot fluctuations (--no-spots: the mean lateral profile)"),
    position_sigma: float = typer.Option(0.0, help="Gaussian smearing of the entry point per axis, mm"),
    angle_sigma: float = typer.Option(0.0, help="Gaussian smearing of the direction per axis, rad"),
    threads: Optional[int] = typer.Option(None, help="worker threads (the result does not depend on it)"),
) -> None:
    """Simulate showers and write them in the CaloGAN HDF5 layout."""
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
    write_showers(output, showers, settings)
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
