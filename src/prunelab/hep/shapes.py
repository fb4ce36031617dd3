"""The classical shower-shape observables of the CaloGAN papers, one row per event.

Columns (energies in MeV, lengths in mm, layers i = 0, 1, 2):

* ``E_i``, ``E_tot``: energy in each layer's grid and their sum;
* ``f_i``: ``E_i / E_tot``;
* ``depth``: energy-weighted mean layer index ``sum_i i E_i / E_tot``, and
  ``depth_width``: its energy-weighted standard deviation;
* ``width_x_i``, ``width_y_i``: energy-weighted RMS of the cell centres along x
  and y in layer i (0 for an empty layer);
* ``eratio_i``: (highest − second highest cell) / their sum (0 for an empty layer);
* ``occupancy_i``: fraction of the layer's cells with energy;
* ``deepest``: the deepest layer with any energy (−1 for an empty event).
"""

from __future__ import annotations

import numpy as np

from .geometry import CALORIMETER, Calorimeter
from .simulator import Showers


def shower_shapes(showers: Showers, calorimeter: Calorimeter = CALORIMETER):
    import pandas as pd

    n = len(showers)
    cols: dict[str, np.ndarray] = {}
    energies = []
    for layer, image in zip(calorimeter.layers, showers.layers):
        img = image.astype(np.float64).reshape(n, *layer.shape)
        e = img.sum(axis=(1, 2))
        energies.append(e)
        cx, cy = layer.centres()
        safe = np.where(e > 0, e, 1.0)
        px, py = img.sum(axis=2) / safe[:, None], img.sum(axis=1) / safe[:, None]
        mx, my = px @ cx, py @ cy
        cols[f"width_x_{layer.index}"] = np.sqrt(np.clip(px @ cx**2 - mx**2, 0, None)) * (e > 0)
        cols[f"width_y_{layer.index}"] = np.sqrt(np.clip(py @ cy**2 - my**2, 0, None)) * (e > 0)
        flat = img.reshape(n, -1)
        top = -np.partition(-flat, 1, axis=1)[:, :2] if flat.shape[1] > 1 else np.c_[flat, np.zeros(n)]
        s = top[:, 0] + top[:, 1]
        cols[f"eratio_{layer.index}"] = np.where(s > 0, (top[:, 0] - top[:, 1]) / np.where(s > 0, s, 1.0), 0.0)
        cols[f"occupancy_{layer.index}"] = (flat > 0).mean(axis=1)
    e = np.stack(energies, axis=1)
    total = e.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    out = {f"E_{i}": e[:, i] for i in range(e.shape[1])}
    out["E_tot"] = total
    out.update({f"f_{i}": e[:, i] / safe for i in range(e.shape[1])})
    index = np.arange(e.shape[1], dtype=np.float64)
    depth = (e @ index) / safe
    out["depth"] = depth
    out["depth_width"] = np.sqrt(np.clip((e @ index**2) / safe - depth**2, 0, None))
    out.update(cols)
    reached = e > 0
    out["deepest"] = np.where(reached.any(axis=1), e.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1), -1)
    return pd.DataFrame(out)


ENERGY_COLUMNS = ("E_0", "E_1", "E_2", "E_tot")


def shape_features(showers: Showers) -> tuple[np.ndarray, list[str]]:
    """Shower shapes as a float32 matrix for learning: energies as log(1 + E/MeV), the rest as they are."""
    table = shower_shapes(showers)
    for col in ENERGY_COLUMNS:
        table[col] = np.log1p(table[col])
    return table.to_numpy(dtype=np.float32), list(table.columns)
