"""The simplified 3-layer calorimeter of the CaloGAN papers (arXiv 1705.02355, 1712.10321).

Depth z runs from -240 to 240 mm; the readout layers end at -150, 197 and
240 mm. Each layer image is indexed ``[i, j]``: ``i`` runs along x with cell
size ``dx``, ``j`` along y with cell size ``dy``; both span -240..240 mm and the
beam enters at x = y = 0. The published HDF5 files hold ``layer_0`` (N, 3, 96),
``layer_1`` (N, 12, 12), ``layer_2`` (N, 12, 6) in MeV, ``overflow`` (N, 3) in
MeV (energy deposited outside each layer's grid) and ``energy`` (N, 1) in GeV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .material import EFFECTIVE_MEDIUM, Medium


@dataclass(frozen=True)
class Layer:
    index: int
    z_front: float  # mm
    z_back: float  # mm
    shape: tuple[int, int]  # cells along x, along y
    half_width: float = 240.0  # mm: the grid spans -half_width..half_width in x and y

    @property
    def name(self) -> str:
        return f"layer_{self.index}"

    @property
    def depth(self) -> float:
        return self.z_back - self.z_front

    @property
    def cell_size(self) -> tuple[float, float]:
        return (2 * self.half_width / self.shape[0], 2 * self.half_width / self.shape[1])

    @property
    def cells(self) -> int:
        return self.shape[0] * self.shape[1]

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell boundaries along x and y (mm)."""
        return (np.linspace(-self.half_width, self.half_width, self.shape[0] + 1),
                np.linspace(-self.half_width, self.half_width, self.shape[1] + 1))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        ex, ey = self.edges()
        return (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2


@dataclass(frozen=True)
class Calorimeter:
    layers: tuple[Layer, ...]
    medium: Medium
    z_front: float = -240.0

    @property
    def depth(self) -> float:
        return self.layers[-1].z_back - self.z_front

    def boundaries_x0(self) -> np.ndarray:
        """Layer boundaries in radiation lengths from the front face."""
        z = [self.z_front] + [layer.z_back for layer in self.layers]
        return (np.asarray(z) - self.z_front) / self.medium.X0_mm

    @property
    def features(self) -> int:
        return sum(layer.cells for layer in self.layers)


CALORIMETER = Calorimeter(
    layers=(
        Layer(0, -240.0, -150.0, (3, 96)),
        Layer(1, -150.0, 197.0, (12, 12)),
        Layer(2, 197.0, 240.0, (12, 6)),
    ),
    medium=EFFECTIVE_MEDIUM,
)
