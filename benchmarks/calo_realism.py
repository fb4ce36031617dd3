"""How close the simulator's showers are to Geant4's: per-layer sparsity, E_ratio, lateral width.

For each particle (e+, gamma, pi+; energies uniform in 1-100 GeV, the CaloGAN
spectrum) and each physics version of the simulator (1: the original model, 2:
with the soft-photon halo, the primary e+ track and the two-prong conversion),
the median and the 10th-90th percentile range of

* ``occupancy_i`` — CaloGAN's "sparsity": the fraction of layer i's cells with
  energy > 0,
* ``eratio_i`` — (highest - second highest cell) / their sum,
* ``width_x_i`` — CaloGAN's lateral width sigma_i: the energy-weighted RMS of the
  cell centres along the first image axis (x; 160, 40, 40 mm cells),
* ``f_i`` — the layer's share of the deposited energy,

beside the Geant4 reference: the values read off the CaloGAN paper's figures
(arXiv 1712.10321: the per-layer sparsity, E_ratio, sigma_i and f_i histograms
of its Geant4 e+, gamma and pi+ showers; the same plots are drawn and saved by
the authors' analysis/paper-plots.ipynb in github.com/hep-lbdl/CaloGAN, where
they were read). **They are read off plots**: the median to about +-0.03 (widths
+-3 mm), the range where the histogram holds most of its events. A simulated
median inside the Geant4 range counts as agreeing.

    python benchmarks/calo_realism.py [--events 20000] [--seed 11]

Writes benchmarks/results/calo_realism.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from prunelab.hep import simulate
from prunelab.hep.shapes import shower_shapes

# (median read off the plot, (low, high) range holding the bulk of the histogram); None: not read
GEANT4 = {
    "eplus": {
        "occupancy_0": (0.50, (0.30, 0.63)), "occupancy_1": (0.87, (0.65, 0.95)), "occupancy_2": (0.30, (0.05, 0.47)),
        "eratio_0": (0.07, (0.01, 0.20)), "eratio_1": (0.03, (0.005, 0.08)), "eratio_2": (0.16, (0.02, 0.45)),
        "width_x_0": (15.0, (10.0, 25.0)), "width_x_1": (30.0, (28.0, 35.0)), "width_x_2": (60.0, (30.0, 100.0)),
        "f_0": (0.17, (0.08, 0.30)), "f_1": None, "f_2": (0.0012, (0.0005, 0.003)),
    },
    "gamma": {
        "occupancy_0": (0.45, (0.20, 0.60)), "occupancy_1": (0.87, (0.65, 0.95)), "occupancy_2": (0.32, (0.05, 0.50)),
        "eratio_0": (0.07, (0.01, 0.20)), "eratio_1": (0.03, (0.005, 0.08)), "eratio_2": (0.20, (0.02, 0.50)),
        "width_x_0": (15.0, (10.0, 25.0)), "width_x_1": (30.0, (28.0, 35.0)), "width_x_2": (60.0, (30.0, 100.0)),
        "f_0": (0.13, (0.03, 0.27)), "f_1": None, "f_2": (0.0014, (0.0005, 0.004)),
    },
    "piplus": {
        "occupancy_0": (0.05, (0.0, 0.60)), "occupancy_1": None, "occupancy_2": None,
        "eratio_0": None, "eratio_1": None, "eratio_2": None,
        "width_x_0": None, "width_x_1": None, "width_x_2": None, "f_0": None, "f_1": None, "f_2": None,
    },
}
COLUMNS = [f"{name}_{i}" for name in ("occupancy", "eratio", "width_x", "f") for i in range(3)]


def describe(values: np.ndarray) -> dict:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90), "mean": float(values.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    results: dict = {}
    for particle in ("eplus", "gamma", "piplus"):
        results[particle] = {}
        for physics in (1, 2):
            table = shower_shapes(simulate(particle, args.events, seed=args.seed, physics=physics))
            results[particle][f"physics_{physics}"] = {c: describe(table[c].to_numpy()) for c in COLUMNS}
    rows = []
    for particle, by_physics in results.items():
        for column in COLUMNS:
            ref = GEANT4[particle][column]
            before, after = by_physics["physics_1"][column], by_physics["physics_2"][column]
            digits = 4 if column.startswith("f_") or column.startswith("eratio") else 3
            digits = 1 if column.startswith("width") else digits

            def show(s: dict) -> str:
                return f"{s['median']:.{digits}f} ({s['p10']:.{digits}f}–{s['p90']:.{digits}f})"

            if ref is None:
                verdict, ref_text = ("", "not read")
            else:
                lo, hi = ref[1]
                inside = [lo <= s["median"] <= hi for s in (before, after)]
                verdict = f"{'yes' if inside[0] else 'no'} → {'yes' if inside[1] else 'no'}"
                ref_text = f"{ref[0]:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"
                results[particle].setdefault("in_range", {})[column] = {"physics_1": inside[0], "physics_2": inside[1]}
            rows.append(f"| {particle} | {column} | {show(before)} | {show(after)} | {ref_text} | {verdict} |")
    print("| particle | observable | physics 1 (before): median (p10–p90) | physics 2 (after) | "
          "Geant4, read off plots: median (range) | median in range: before → after |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    write_result("calo_realism", {"events": args.events, "seed": args.seed, "energy_GeV": [1, 100],
                                  "geant4_reference": {p: {c: v for c, v in r.items() if v is not None}
                                                       for p, r in GEANT4.items()},
                                  "geant4_source": "read off the plots of arXiv 1712.10321 (sparsity, E_ratio, "
                                                   "sigma_i and f_i per layer; drawn by analysis/paper-plots.ipynb "
                                                   "of github.com/hep-lbdl/CaloGAN); medians +-0.03, widths +-3 mm",
                                  "results": results})


if __name__ == "__main__":
    main()
