"""A fast parameterised shower simulator for the 3-layer calorimeter (not Geant4).

Per event, vectorised over chunks of events:

**Electromagnetic showers** (e+, and gamma after conversion) follow Grindhammer
& Peters (hep-ex/0001020; Geant4 GFlash's homogeneous-medium defaults), on the
effective medium of :mod:`.material`:

* longitudinal: ``dE/dt = E (beta t)^(alpha-1) beta exp(-beta t) / Gamma(alpha)``
  (t in X0), with correlated log-normal fluctuations of T and alpha:
  ``<ln T> = ln(ln y - 0.812)``, ``<ln alpha> = ln(0.81 + (0.458 + 2.26/Z) ln y)``,
  ``sigma(ln T) = 1/(-1.4 + 1.26 ln y)``, ``sigma(ln alpha) = 1/(-0.58 + 0.86 ln y)``,
  ``rho = 0.705 - 0.023 ln y``, ``y = E/Ec``. Energy per layer (and per
  sub-slice of a layer) is a difference of the regularised incomplete gamma
  function ``P(alpha, beta t)``;
* photons start after a conversion depth drawn from ``Exp(9/7 X0)`` (the
  pair-production mean free path), so they leave less energy in layer 0;
* lateral: core + tail, ``f(r) = p f_C + (1-p) f_T``,
  ``f_X(r) = 2 r R_X^2 / (r^2 + R_X^2)^2`` in Molière radii, with
  ``R_C = z1 + z2 tau``, ``R_T = k1 (exp(k3 (tau-k2)) + exp(k4 (tau-k2)))`` and
  ``p = p1 exp((p2-tau)/p3 - exp((p2-tau)/p3))`` (the GP/GFlash coefficients
  below), tau = depth over the shower maximum. The energy a profile puts in a
  rectangular cell is computed exactly (closed-form integral, see
  :func:`cell_fractions`); for the centred beam through a fine lookup table in
  log R, exact at its nodes;
* fluctuations: the shower deposits ``N = 93 ln(Z) E^0.876`` spots (GP eq. 24)
  distributed over depth with the GP spot profile; the spot count in a cell is
  Poisson, so far cells are empty in most events, as in real showers.

**Charged pions** (a simple model, documented choice by choice in docs/hep.md):
the first inelastic interaction lies at depth ``Exp(lambda_int)``; before it
(and for the ~28 % that never interact in 1.28 lambda_int) the pion is a
minimum-ionising track (``mip_MeV_per_period`` per 6 mm, log-normal 12 %
straggling). At the interaction the energy splits into an electromagnetic
fraction (pi0s; mean ``1 - (E/1 GeV)^(0.83-1)`` after Groom, PDG calorimetry
review, Beta-distributed event by event) showering as above, and a hadronic
part of which ``f_inv ~ N(0.35, 0.1)`` is invisible (binding energy, neutrons);
the visible rest follows a Gamma profile in lambda_int units with its maximum at
``0.2 ln E + 0.7`` lambda_int (PDG), spread laterally with radius
``0.15 lambda_int (0.5 + tau)`` and deposited in 40 MeV spots (few, large
deposits: large fluctuations). The pi0 showers are born throughout the
cascade: their lateral radii are widened by half the hadronic radius.

**physics=2** (``simulate(..., physics=2)``; the default, 1, is the model above
bit for bit) adds what Geant4 showers of this calorimeter show and the model
above misses (docs/hep.md has the sources and the comparison):

* a soft-photon halo around every electromagnetic shower: photons near the
  attenuation minimum (a few MeV) cross one mean free path (53 mm, from the
  attenuation coefficients of lead and argon) before they interact and leave
  Compton and photo electrons of a fraction of an MeV. The halo takes
  ``min(0.04 + 0.05 tau^2, 0.9)`` of each depth slice's energy (tau: depth over
  the shower maximum: the shower's tail is carried by these photons, PDG),
  spread radially as ``exp(-r/53 mm)``, in quanta of 0.5 MeV; a cell is
  hit with probability ``1 - exp(-E/0.5 MeV)`` (Poisson quanta);
* the positron's own ionisation: a MIP track on the axis over Exp(1 X0) from
  the front face (the shower still starts at once), its energy taken from the
  shower's;
* a converted photon as its e+e- pair: the positron's share x from the
  Bethe-Heitler spectrum ``1 - 4/3 x (1 - x)``, two MIP tracks and two showers
  of energies xE and (1-x)E from the conversion point, each core widened by the
  prong's distance from the photon's line (angle ``m_e c^2/E`` and multiple
  scattering ``13.6 MeV/E``, times depth: well under a cell for E > 1 GeV);
* GFlash's spot count for sampling calorimeters (fewer, larger spots).

Readout options, with either physics: ``sampling=True`` reads each cell as the
argon sees it, scaled back by the sampling fraction (a Gamma variate of mean E
and variance ``a^2 E (1 GeV)``, a = 10.8 %, as GFlash's ``ApplySampling``);
``threshold_mev`` zeroes cells below it.

Same arguments and seed give identical showers, whatever the number of threads
(events are generated in fixed chunks, each with its own seed).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.special import gammainc
from threadpoolctl import threadpool_limits

from ..errors import PrunelabError
from .geometry import CALORIMETER, Calorimeter, Layer

PARTICLES = ("eplus", "gamma", "piplus")
CHUNK = 2048  # events per independently seeded chunk (fixed: the results must not depend on threads)

# Grindhammer-Peters / GFlash homogeneous-media coefficients (GVFlashHomoShowerTuning).
GP_T = -0.812
GP_A = (0.81, 0.458, 2.26)
GP_SIG_LN_T = (-1.4, 1.26)
GP_SIG_LN_A = (-0.58, 0.86)
GP_RHO = (0.705, -0.023)
GP_RC = (0.0251, 0.00319, 0.1162, -0.000381)  # z1 = c1 + c2 ln E; z2 = c3 + c4 Z
GP_RT = (0.659, -0.00309, 0.645, -2.59, 0.3585, 0.0412)  # k1 = t1 + t2 Z, k2, k3, k4 = t5 + t6 ln E
GP_WC = (2.632, -0.00094, 0.401, 0.00187, 1.313, -0.0686)  # p1, p2 (Z), p3 (ln E)
GP_SPOT_N = (93.0, 0.876)
GP_SPOT_T = (0.698, 0.00212)
GP_SPOT_A = (0.639, 0.00334)
CONVERSION_X0 = 9.0 / 7.0  # photon mean free path for pair production, in X0

# Hadronic model (see the module docstring).
FEM_E0_GEV, FEM_M = 1.0, 0.83
FEM_CONCENTRATION = 6.0
F_INVISIBLE = (0.35, 0.10)
HAD_TMAX = (0.2, 0.7)  # T = 0.2 ln E + 0.7, in lambda_int
HAD_BETA = 1.0  # per lambda_int
HAD_SIGMA_LN = 0.25
HAD_RADIUS = 0.15  # x lambda_int x (0.5 + tau): 95 % within about 1 lambda_int at the maximum (PDG)
HAD_SPOT_MEV = 40.0
PI0_SPREAD = 0.5  # the pions' EM part is widened by half the hadronic radius, in quadrature
MIP_STRAGGLING = 0.12
TRACK_RADIUS_MM = 1.0  # lateral spread of the track (multiple scattering)

SUBSLICES = (2, 4, 1)  # depth slices per layer over which the lateral profile is evaluated

# physics=2 (see the module docstring and docs/hep.md; physics=1 is the original model, bit for bit)
PHYSICS = (1, 2)
# The soft-photon halo (see _halo): its share of a depth slice's energy is
# min(HALO_FLOOR + HALO_SLOPE tau^2, HALO_MAX), tau the depth over the shower maximum; it falls off as
# exp(-r / the photon mean free path at the attenuation minimum) (Medium.photon_mfp_mm); it is deposited in quanta of
# HALO_QUANTUM_MEV. FLOOR, SLOPE and QUANTUM are tuned to Geant4's per-layer sparsity (docs/hep.md).
HALO_FLOOR, HALO_SLOPE, HALO_MAX = 0.04, 0.05, 0.9
HALO_QUANTUM_MEV = 0.5  # Compton and photo electrons of few-MeV photons: a fraction of an MeV each
# GFlash's spot count for sampling calorimeters (GFlashSamplingShowerTuning: N = 10.3 / 0.11 E^0.959,
# T_s = T (0.813 + 0.0019 Z), alpha_s = alpha (0.844 + 0.0026 Z)): 3x fewer, larger spots than the
# homogeneous tuning, so the core's cells fluctuate more
GP_SAMPLING_SPOT_N = (10.3 / 0.11, 0.959)
GP_SAMPLING_SPOT_T = (0.813, 0.0019)
GP_SAMPLING_SPOT_A = (0.844, 0.0026)
PRIMARY_TRACK_X0 = 1.0  # mean ionising path of a shower's primary e+/e- before it hands its energy on, X0
ELECTRON_MEV = 0.51099895
MS_SCALE_MEV = 13.6  # PDG multiple-scattering formula: theta0 = 13.6 MeV / p sqrt(t) (1 + 0.038 ln t), t = 1


@dataclass
class Showers:
    """Events in the CaloGAN layout: images in MeV, incident energy in GeV."""

    energy: np.ndarray  # (N,) GeV
    layers: tuple[np.ndarray, ...]  # (N, 3, 96), (N, 12, 12), (N, 12, 6) MeV
    overflow: np.ndarray  # (N, 3) MeV
    particle: str | None = None
    info: dict = field(default_factory=dict)  # per-event extras (e.g. entry position), arrays of length N

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    @property
    def layer_energies(self) -> np.ndarray:
        """(N, 3): energy deposited in each layer's grid, MeV."""
        return np.stack([img.reshape(len(self), -1).sum(axis=1) for img in self.layers], axis=1)

    def flat(self) -> np.ndarray:
        """(N, cells): the three images flattened and concatenated."""
        return np.concatenate([img.reshape(len(self), -1) for img in self.layers], axis=1)

    def take(self, index) -> "Showers":
        return Showers(self.energy[index], tuple(img[index] for img in self.layers), self.overflow[index],
                       self.particle, {k: v[index] for k, v in self.info.items()})

    @staticmethod
    def concat(parts: list["Showers"]) -> "Showers":
        particles = {p.particle for p in parts}
        keys = set.intersection(*(set(p.info) for p in parts)) if parts else set()
        return Showers(
            np.concatenate([p.energy for p in parts]),
            tuple(np.concatenate([p.layers[i] for p in parts]) for i in range(len(parts[0].layers))),
            np.concatenate([p.overflow for p in parts]),
            particles.pop() if len(particles) == 1 else None,
            {k: np.concatenate([p.info[k] for p in parts]) for k in sorted(keys)},
        )


# --------------------------------------------------------------------------
# Lateral profile integrated over cells
# --------------------------------------------------------------------------


def _primitive(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """F with dF/dx dy = R^2 / (pi (x^2 + y^2 + R^2)^2): the 2-D density of f(r) = 2 r R^2/(r^2+R^2)^2."""
    sx = np.sqrt(x * x + r * r)
    sy = np.sqrt(y * y + r * r)
    return (x / sx * np.arctan(y / sx) + y / sy * np.arctan(x / sy)) / (2 * np.pi)


def cell_fractions(layer: Layer, radius: np.ndarray, x0: np.ndarray | float = 0.0,
                   y0: np.ndarray | float = 0.0) -> np.ndarray:
    """Exact fraction of a profile of radius ``radius`` (mm) centred at (x0, y0) in each cell.

    Broadcasts over leading dims of ``radius``/``x0``/``y0``; returns
    ``(..., cells + 1)``: the cells (x-major, as ``image.reshape(-1)``) and,
    last, the fraction outside the grid.
    """
    radius = np.asarray(radius, dtype=np.float64)[..., None, None]
    ex, ey = layer.edges()
    gx = ex[:, None] - np.asarray(x0, dtype=np.float64)[..., None, None]
    gy = ey[None, :] - np.asarray(y0, dtype=np.float64)[..., None, None]
    corner = _primitive(gx, gy, radius)
    cells = corner[..., 1:, 1:] - corner[..., :-1, 1:] - corner[..., 1:, :-1] + corner[..., :-1, :-1]
    cells = np.clip(cells, 0.0, None).reshape(*cells.shape[:-2], -1)
    outside = np.clip(1.0 - cells.sum(axis=-1, keepdims=True), 0.0, None)
    return np.concatenate([cells, outside], axis=-1)


TABLE_RADII = np.geomspace(0.05, 5000.0, 121)  # mm; 24 nodes per decade (interpolation error < 0.1 %)
_LOG_R0, _DLOG_R = math.log(TABLE_RADII[0]), math.log(TABLE_RADII[1] / TABLE_RADII[0])


@lru_cache(maxsize=8)
def lateral_table(layer: Layer) -> np.ndarray:
    """(radii, cells + 1): :func:`cell_fractions` of a centred profile at each :data:`TABLE_RADII` node."""
    return cell_fractions(layer, TABLE_RADII)


def _mix_table(layer: Layer, weights: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Σ_c weights[:, c] · profile(radii[:, c]) per event, interpolated linearly in log R; (B, cells + 1)."""
    b, c = weights.shape
    k = len(TABLE_RADII)
    pos = (np.log(np.clip(radii, TABLE_RADII[0], TABLE_RADII[-1])) - _LOG_R0) / _DLOG_R
    lo = np.clip(np.floor(pos).astype(np.int64), 0, k - 2)
    upper = pos - lo
    rows = (np.arange(b) * k)[:, None] + lo
    w = np.bincount(rows.ravel(), (weights * (1 - upper)).ravel(), minlength=b * k)
    w += np.bincount((rows + 1).ravel(), (weights * upper).ravel(), minlength=b * k)
    return w.reshape(b, k) @ lateral_table(layer)


def _mix_exact(layer: Layer, weights: np.ndarray, radii: np.ndarray, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """As :func:`_mix_table` for off-centre axes (x0, y0 of shape (B, C)): exact, slower."""
    return np.einsum("bc,bck->bk", weights, cell_fractions(layer, radii, x0, y0))


# --------------------------------------------------------------------------
# Depth slices
# --------------------------------------------------------------------------


def slice_edges_mm(calo: Calorimeter) -> tuple[np.ndarray, np.ndarray]:
    """Depth boundaries (mm from the front face) of the sub-slices, and the layer of each slice."""
    edges, owner = [0.0], []
    for layer, n in zip(calo.layers, SUBSLICES):
        front, back = layer.z_front - calo.z_front, layer.z_back - calo.z_front
        edges += list(np.linspace(front, back, n + 1)[1:])
        owner += [layer.index] * n
    return np.asarray(edges), np.asarray(owner)


def _gamma_slices(alpha: np.ndarray, beta: np.ndarray, start: np.ndarray, edges: np.ndarray):
    """Fractions of a Gamma(alpha, beta) profile starting at ``start`` in each slice, and the mean depth
    (after the start) of what falls in each slice. Depths in the profile's own length unit."""
    u = np.clip(edges[None, :] - start[:, None], 0.0, None)
    a, b = alpha[:, None], beta[:, None]
    cdf = gammainc(a, b * u)
    cdf1 = gammainc(a + 1.0, b * u)
    part = np.diff(cdf, axis=1)
    first = np.diff(cdf1, axis=1)
    mid = (u[:, :-1] + u[:, 1:]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(part > 1e-12, (a / b) * first / np.where(part > 1e-12, part, 1.0), mid)
    return part, mean


# --------------------------------------------------------------------------
# Sources of energy: each gives, per layer, energy, expected spots and lateral components
# --------------------------------------------------------------------------


@dataclass
class _Source:
    energy: np.ndarray  # (B, S) MeV per slice
    spots: np.ndarray | None  # (B, S) expected spot count per slice; None: no spot fluctuation
    weights: np.ndarray  # (B, S, C) lateral component weights (sum 1 over C)
    radii: np.ndarray  # (B, S, C) mm
    track: bool = False  # a narrow track: cells below 1 % of it get nothing
    quantum: float | None = None  # MeV: deposited as soft quanta (a cell is hit with P = 1 - exp(-E_cell/quantum))
    fixed_mm: float | None = None  # one lateral radius for every slice and event (centred beam: a cached profile)
    exponential: bool = False  # with fixed_mm: the radial profile exp(-r/fixed_mm)/fixed_mm instead of GP's form
    tau: np.ndarray | None = None  # (B, S) depth over the shower maximum (EM showers)


def _em_source(e_gev: np.ndarray, start_x0: np.ndarray, rng: np.random.Generator, calo: Calorimeter,
               edges_x0: np.ndarray, spots: bool, spread_mm: np.ndarray | None = None,
               sampling_spots: bool = False) -> _Source:
    """An electromagnetic shower; ``spread_mm`` (B, S) widens it in quadrature (pi0 showers born
    throughout a hadronic cascade are spread over its width)."""
    m = calo.medium
    e_par = np.clip(e_gev, 0.05, None)  # the parameterisation is fitted from ~1 GeV up; keep it finite below
    lny = np.log(e_par * 1000.0 / m.Ec_MeV)
    mu_t = np.log(np.clip(lny + GP_T, 0.3, None))
    mu_a = np.log(GP_A[0] + (GP_A[1] + GP_A[2] / m.Z) * lny)
    sig_t = 1.0 / np.clip(GP_SIG_LN_T[0] + GP_SIG_LN_T[1] * lny, 1.0, None)
    sig_a = 1.0 / np.clip(GP_SIG_LN_A[0] + GP_SIG_LN_A[1] * lny, 1.0, None)
    rho = np.clip(GP_RHO[0] + GP_RHO[1] * lny, -1.0, 1.0)
    z1, z2 = rng.standard_normal((2, len(e_gev)))
    c1, c2 = np.sqrt((1 + rho) / 2), np.sqrt((1 - rho) / 2)
    t_max = np.exp(mu_t + sig_t * (c1 * z1 + c2 * z2))
    alpha = np.clip(np.exp(mu_a + sig_a * (c1 * z1 - c2 * z2)), 1.05, None)
    beta = (alpha - 1.0) / t_max
    part, mean_depth = _gamma_slices(alpha, beta, start_x0, edges_x0)
    energy = e_gev[:, None] * 1000.0 * part

    n_spot = None
    if spots and sampling_spots:
        t_s = t_max * (GP_SAMPLING_SPOT_T[0] + GP_SAMPLING_SPOT_T[1] * m.Z)
        a_s = np.clip(alpha * (GP_SAMPLING_SPOT_A[0] + GP_SAMPLING_SPOT_A[1] * m.Z), 1.05, None)
        spot_part, _ = _gamma_slices(a_s, (a_s - 1.0) / t_s, start_x0, edges_x0)
        n_spot = GP_SAMPLING_SPOT_N[0] * np.power(e_par, GP_SAMPLING_SPOT_N[1])[:, None] * spot_part
    elif spots:
        t_s = t_max * (GP_SPOT_T[0] + GP_SPOT_T[1] * m.Z)
        a_s = np.clip(alpha * (GP_SPOT_A[0] + GP_SPOT_A[1] * m.Z), 1.05, None)
        spot_part, _ = _gamma_slices(a_s, (a_s - 1.0) / t_s, start_x0, edges_x0)
        n_spot = GP_SPOT_N[0] * math.log(m.Z) * np.power(e_par, GP_SPOT_N[1])[:, None] * spot_part

    # GFlash's tau: depth over the (fluctuated) maximum, rescaled by the mean alpha.
    a_mean = np.exp(mu_a)
    tau = mean_depth / t_max[:, None] * ((alpha - 1) / alpha * a_mean / (a_mean - 1))[:, None]
    lne = np.log(e_par)[:, None]
    r_core = GP_RC[0] + GP_RC[1] * lne + (GP_RC[2] + GP_RC[3] * m.Z) * tau
    k1, k2, k3 = GP_RT[0] + GP_RT[1] * m.Z, GP_RT[2], GP_RT[3]
    k4 = GP_RT[4] + GP_RT[5] * lne
    r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2 = GP_WC[0] + GP_WC[1] * m.Z, GP_WC[2] + GP_WC[3] * m.Z
    p3 = GP_WC[4] + GP_WC[5] * lne
    arg = (p2 - tau) / p3
    p_core = np.clip(p1 * np.exp(arg - np.exp(arg)), 0.0, 1.0)
    weights = np.stack([p_core, 1.0 - p_core], axis=-1)
    radii = np.stack([r_core, r_tail], axis=-1) * m.moliere_mm
    if spread_mm is not None:
        radii = np.sqrt(radii**2 + spread_mm[..., None] ** 2)
    return _Source(energy, n_spot, weights, np.clip(radii, 0.05, None), tau=tau)


def _hadronic_source(e_vis_gev: np.ndarray, start_lambda: np.ndarray, e_gev: np.ndarray,
                     rng: np.random.Generator, calo: Calorimeter, edges_lambda: np.ndarray, spots: bool) -> _Source:
    lam = calo.medium.lambda_int_mm
    t_mean = HAD_TMAX[0] * np.log(np.clip(e_gev, 1.0, None)) + HAD_TMAX[1]
    t_max = t_mean * np.exp(HAD_SIGMA_LN * rng.standard_normal(len(e_gev)))
    alpha = 1.0 + HAD_BETA * t_max * np.exp(HAD_SIGMA_LN * rng.standard_normal(len(e_gev)))
    beta = (alpha - 1.0) / t_max
    part, mean_depth = _gamma_slices(alpha, beta, start_lambda, edges_lambda)
    energy = e_vis_gev[:, None] * 1000.0 * part
    tau = mean_depth / t_max[:, None]
    radii = (HAD_RADIUS * lam * (0.5 + tau))[..., None]
    n_spot = energy / HAD_SPOT_MEV if spots else None
    return _Source(energy, n_spot, np.ones_like(radii), radii)


def _track_source(depth_mm: np.ndarray, rng: np.random.Generator, calo: Calorimeter, edges_mm: np.ndarray,
                  start_mm: np.ndarray | None = None) -> _Source:
    """A minimum-ionising-like track from the front face (or ``start_mm``) to ``depth_mm``."""
    front = edges_mm[None, :-1] if start_mm is None else np.maximum(edges_mm[None, :-1], start_mm[:, None])
    length = np.clip(np.minimum(edges_mm[None, 1:], depth_mm[:, None]) - front, 0.0, None)
    straggle = np.exp(MIP_STRAGGLING * rng.standard_normal(length.shape) - MIP_STRAGGLING**2 / 2)
    energy = length / calo.medium.period_mm * calo.medium.mip_MeV_per_period * straggle
    ones = np.ones((*energy.shape, 1))
    return _Source(energy, None, ones, ones * TRACK_RADIUS_MM, track=True)


def _halo(em: _Source, calo: Calorimeter) -> _Source:
    """Split an EM shower's soft-photon halo off ``em`` (in place) and return it as its own source.

    Photons near the attenuation minimum (a few MeV) travel one mean free path
    (:attr:`Medium.photon_mfp_mm`, 53 mm) before they interact, far beyond the
    charged core, and leave their energy as Compton and photo electrons of a
    fraction of an MeV: many small deposits spread wide, attenuated as
    ``exp(-r/lambda)``. The halo takes
    ``min(HALO_FLOOR + HALO_SLOPE tau^2, HALO_MAX)`` of each depth slice's
    energy (tau: depth over the shower maximum), so the layer energies do not
    change: before the maximum the charged core deposits most of the energy,
    beyond it the photons near the attenuation minimum carry it (PDG review,
    electromagnetic cascades). Its radial distribution is ``exp(-r/lambda)/lambda``
    (lambda the photon mean free path; for an off-axis shower, where cells are
    integrated per event, the GP form with the same median radius ``lambda ln 2``
    stands in), deposited in quanta of :data:`HALO_QUANTUM_MEV` (smoothly when
    the shower has no spots).
    """
    share = np.minimum(HALO_FLOOR + HALO_SLOPE * em.tau**2, HALO_MAX)
    energy = em.energy * share
    em.energy = em.energy - energy
    if em.spots is not None:
        em.spots = em.spots * (1.0 - share)  # the core's spots keep their size
    ones = np.ones((*energy.shape, 1))
    mfp = calo.medium.photon_mfp_mm
    return _Source(energy, None, ones, ones * (mfp * math.log(2.0)),
                   quantum=None if em.spots is None else HALO_QUANTUM_MEV, fixed_mm=mfp, exponential=True)


def _bethe_heitler_fraction(u: np.ndarray) -> np.ndarray:
    """The e+ share x of a converted photon's energy for uniforms ``u``: inverse of the CDF of
    dsigma/dx ~ 1 - 4/3 x (1 - x) (complete screening; PDG "Passage of particles through matter")."""
    x = u.copy()
    for _ in range(6):  # Newton on F(x) = (x - 2/3 x^2 + 4/9 x^3) / (7/9) = u; F' >= 6/7, converges fast
        x -= ((x - 2 / 3 * x**2 + 4 / 9 * x**3) * 9 / 7 - u) / ((1 - 4 / 3 * x + 4 / 3 * x**2) * 9 / 7)
        np.clip(x, 0.0, 1.0, out=x)
    return x


def _prong_spread_mm(e_mev: np.ndarray, start_x0: np.ndarray, edges_x0: np.ndarray, x0_mm: float) -> np.ndarray:
    """(B, S) distance of a pair prong of energy ``e_mev`` from the photon's line at each slice's middle.

    The prong leaves the conversion at the pair's characteristic angle m_e c^2 / E (PDG) and is
    deflected by multiple scattering over its first radiation length, theta0 = 13.6 MeV / E (PDG,
    t = 1); its shower then develops along that direction, so the distance grows as theta t."""
    mid = (edges_x0[:-1] + edges_x0[1:]) / 2
    t = np.clip(mid[None, :] - start_x0[:, None], 0.0, None)
    e = np.clip(e_mev, 1.0, None)[:, None]
    theta = np.hypot(ELECTRON_MEV / e, MS_SCALE_MEV / e)
    return theta * t * x0_mm


def _merge(a: _Source, b: _Source) -> _Source:
    """Two sources on the same axis as one: energies and spots add, lateral components side by side."""
    energy = a.energy + b.energy
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(energy > 0, a.energy / np.where(energy > 0, energy, 1.0), 0.5)[..., None]
    spots = None if a.spots is None else a.spots + b.spots
    return _Source(energy, spots, np.concatenate([a.weights * share, b.weights * (1 - share)], axis=-1),
                   np.concatenate([a.radii, b.radii], axis=-1), tau=a.tau * share[..., 0] + b.tau * (1 - share[..., 0]))


def _primary_track(start_mm: np.ndarray, rng: np.random.Generator, calo: Calorimeter, edges_mm: np.ndarray) -> _Source:
    """The ionisation of a shower's primary e+ or e-: a track from ``start_mm`` over Exp(PRIMARY_TRACK_X0 X0)."""
    length = rng.exponential(PRIMARY_TRACK_X0 * calo.medium.X0_mm, len(start_mm))
    track = _track_source(start_mm + length, rng, calo, edges_mm, start_mm)
    track.fixed_mm = TRACK_RADIUS_MM
    return track


def _em_sources_v2(particle: str, e: np.ndarray, rng: np.random.Generator, calo: Calorimeter, edges_mm: np.ndarray,
                   spots: bool, info: dict) -> list[_Source]:
    """physics=2 electromagnetic primaries: e+ = primary track + shower from the front face + halo;
    gamma = conversion at Exp(9/7 X0), then an e+e- pair (Bethe-Heitler share), two tracks and two
    showers whose cores are widened by the prongs' separation, + halo."""
    m = calo.medium
    n = len(e)
    edges_x0 = edges_mm / m.X0_mm
    if particle == "eplus":
        track = _primary_track(np.zeros(n), rng, calo, edges_mm)
        em = _em_source(np.clip(e - track.energy.sum(axis=1) / 1000.0, 0.0, None), np.zeros(n), rng, calo,
                        edges_x0, spots, sampling_spots=True)
        return [track, em, _halo(em, calo)]
    start = rng.exponential(CONVERSION_X0, n)
    x = _bethe_heitler_fraction(rng.random(n))
    info["conversion_x0"] = start
    info["pair_fraction"] = x
    tracks = [_primary_track(start * m.X0_mm, rng, calo, edges_mm) for _ in range(2)]
    prongs = []
    for share, track in zip((x, 1.0 - x), tracks):
        e_prong = np.clip(share * e - track.energy.sum(axis=1) / 1000.0, 0.0, None)
        spread = _prong_spread_mm(share * e * 1000.0, start, edges_x0, m.X0_mm)
        prongs.append(_em_source(e_prong, start, rng, calo, edges_x0, spots, spread_mm=spread, sampling_spots=True))
    track = _Source(tracks[0].energy + tracks[1].energy, None, tracks[0].weights, tracks[0].radii, track=True,
                    fixed_mm=TRACK_RADIUS_MM)
    em = _merge(*prongs)
    return [track, em, _halo(em, calo)]


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _fixed_profile(layer: Layer, radius_mm: float, track: bool) -> np.ndarray:
    """Exact cell fractions (and outside) of a centred profile of one radius; a track's below 1 % cut."""
    frac = cell_fractions(layer, np.array(radius_mm))
    if track:
        frac = np.where(frac >= 0.01, frac, 0.0)
        frac /= frac.sum()
    return frac


@lru_cache(maxsize=16)
def _exponential_profile(layer: Layer, mfp_mm: float, track: bool = False) -> np.ndarray:
    """Cell fractions (and outside) of the centred radial profile ``exp(-r/mfp)/mfp``, by quadrature:
    4,000 radii at the midpoints of its quantiles times 720 angles, equal weights (no closed form)."""
    u = (np.arange(4000) + 0.5) / 4000
    r = -mfp_mm * np.log1p(-u)
    phi = (np.arange(720) + 0.5) * (2 * np.pi / 720)
    ex, ey = layer.edges()
    hist, _, _ = np.histogram2d(np.outer(r, np.cos(phi)).ravel(), np.outer(r, np.sin(phi)).ravel(), bins=(ex, ey))
    cells = hist.ravel() / (r.size * phi.size)
    return np.append(cells, max(0.0, 1.0 - cells.sum()))


def _soft_quanta(e_layer: np.ndarray, frac: np.ndarray, quantum: float, rng: np.random.Generator) -> np.ndarray:
    """(B, cells + 1) energies of soft quanta of mean ``quantum`` MeV, mean ``e_layer x frac`` per cell
    (``frac``: one profile for all, (1, cells + 1), or one per event, (B, cells + 1)).

    A Bernoulli hit with P = 1 - exp(-mu) (mu = mean / quantum) carrying mean / P: the occupancy and the
    mean energy of Poisson(mu) quanta, from one uniform per cell instead of a Poisson draw. Given a hit,
    v = u / P is uniform: the hit's energy is spread uniformly within +-1/sqrt(mu) of its mean (capped at
    +-100 %): one quantum's energy is flat from 0 to twice its mean, as the Compton electrons' spectrum
    is roughly flat up to its edge; many quanta's narrows as 1/sqrt(mu). Single precision (the images are).
    """
    shared = frac.shape[0] == 1
    mean = (np.multiply.outer(e_layer, frac[0]) if shared else e_layer[:, None] * frac).astype(np.float32)
    p_hit = mean * np.float32(-1.0 / quantum)
    np.expm1(p_hit, out=p_hit)
    np.negative(p_hit, out=p_hit)
    u = rng.random(mean.shape, dtype=np.float32)
    hit = u < p_hit
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        np.reciprocal(p_hit, out=p_hit)
        u *= p_hit  # v, uniform on (0, 1) where hit
        mean *= p_hit  # the energy given a hit, on average
        if shared:  # 1/sqrt(mu) as an outer product: no square root per cell
            spread = np.multiply.outer(np.reciprocal(np.sqrt(e_layer / quantum)).astype(np.float32),
                                       np.reciprocal(np.sqrt(frac[0])).astype(np.float32))
        else:
            spread = np.reciprocal(np.sqrt((e_layer[:, None] * frac / quantum).astype(np.float32)))
        np.minimum(spread, np.float32(1.0), out=spread)
        u *= np.float32(2.0)
        u -= np.float32(1.0)
        u *= spread
        u += np.float32(1.0)
        mean *= u
    return np.where(hit, mean, np.float32(0.0))


def _deposit(sources: list[_Source], calo: Calorimeter, owner: np.ndarray, rng: np.random.Generator,
             axis_xy: tuple[np.ndarray, np.ndarray] | None, images: tuple[np.ndarray, ...], overflow: np.ndarray) -> None:
    """Write the events' cell energies into ``images`` and ``overflow`` (views of the caller's arrays)."""
    n = sources[0].energy.shape[0]
    for layer in calo.layers:
        sel = owner == layer.index
        total = np.zeros((n, layer.cells + 1))
        for src in sources:
            e_slice = src.energy[:, sel]  # (B, s)
            e_layer = e_slice.sum(axis=1)
            if src.fixed_mm is not None and axis_xy is None:  # one profile for all: no per-event mixing
                profile = _exponential_profile if src.exponential else _fixed_profile
                frac = profile(layer, src.fixed_mm, src.track)[None, :]
                if src.quantum is not None:
                    total += _soft_quanta(e_layer, frac, src.quantum, rng)
                else:
                    total += e_layer[:, None] * frac
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(e_layer[:, None] > 0, e_slice / np.where(e_layer > 0, e_layer, 1.0)[:, None], 0.0)
            w = (share[..., None] * src.weights[:, sel]).reshape(n, -1)
            r = src.radii[:, sel].reshape(n, -1)
            if axis_xy is None:
                frac = _mix_table(layer, w, r)
            else:
                ax = np.repeat(axis_xy[0][:, sel], src.weights.shape[-1], axis=1)
                ay = np.repeat(axis_xy[1][:, sel], src.weights.shape[-1], axis=1)
                frac = _mix_exact(layer, w, r, ax, ay)
            frac = np.clip(frac, 0.0, None)
            if src.track:  # one cell or a few: no tail
                frac = np.where(frac >= 0.01, frac, 0.0)
                frac /= np.clip(frac.sum(axis=1, keepdims=True), 1e-12, None)
            if src.quantum is not None:
                total += _soft_quanta(e_layer, frac, src.quantum, rng)
            elif src.spots is None:
                total += e_layer[:, None] * frac
            else:
                n_layer = src.spots[:, sel].sum(axis=1)
                counts = rng.poisson(n_layer[:, None] * frac)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_spot = np.where(n_layer > 0, e_layer / np.where(n_layer > 0, n_layer, 1.0), 0.0)
                total += counts * per_spot[:, None]
        images[layer.index][...] = total[:, :-1].reshape(n, *layer.shape)
        overflow[:, layer.index] = total[:, -1]


def _chunk(particle: str, out: Showers, seed_seq: np.random.SeedSequence, energy, spots: bool,
           position_sigma: float, angle_sigma: float, calo: Calorimeter, physics: int = 1,
           sampling: bool = False, threshold_mev: float = 0.0) -> dict:
    """Fill ``out`` (views into the result) with one chunk of events; returns its per-event extras."""
    n = len(out)
    rng = np.random.default_rng(seed_seq)
    m = calo.medium
    if isinstance(energy, tuple):
        e = rng.uniform(energy[0], energy[1], n)
    else:
        e = np.full(n, float(energy))
    edges_mm, owner = slice_edges_mm(calo)
    edges_x0 = edges_mm / m.X0_mm
    info = {}
    axis_xy = None
    if position_sigma > 0 or angle_sigma > 0:
        x0, y0 = rng.normal(0.0, position_sigma, (2, n)) if position_sigma > 0 else np.zeros((2, n))
        tx, ty = np.tan(rng.normal(0.0, angle_sigma, (2, n))) if angle_sigma > 0 else np.zeros((2, n))
        mid = (edges_mm[:-1] + edges_mm[1:]) / 2
        axis_xy = (x0[:, None] + tx[:, None] * mid[None, :], y0[:, None] + ty[:, None] * mid[None, :])
        info = {"x0": x0, "y0": y0, "theta_x": np.arctan(tx), "theta_y": np.arctan(ty)}

    if physics >= 2 and particle != "piplus":
        sources = _em_sources_v2(particle, e, rng, calo, edges_mm, spots, info)
    elif particle == "eplus":
        sources = [_em_source(e, np.zeros(n), rng, calo, edges_x0, spots)]
    elif particle == "gamma":
        start = rng.exponential(CONVERSION_X0, n)
        sources = [_em_source(e, start, rng, calo, edges_x0, spots)]
        info["conversion_x0"] = start
    else:  # piplus
        z_int = rng.exponential(m.lambda_int_mm, n)
        track = _track_source(np.minimum(z_int, calo.depth), rng, calo, edges_mm)
        interacts = z_int < calo.depth
        e_left = np.clip(e - track.energy.sum(axis=1) / 1000.0, 0.0, None) * interacts
        f_mean = np.clip(1.0 - np.power(np.clip(e, FEM_E0_GEV, None) / FEM_E0_GEV, FEM_M - 1.0), 0.05, 0.95)
        f_em = rng.beta(f_mean * FEM_CONCENTRATION, (1 - f_mean) * FEM_CONCENTRATION)
        f_inv = np.clip(rng.normal(*F_INVISIBLE, n), 0.0, 0.8)
        had = _hadronic_source((1 - f_em) * (1 - f_inv) * e_left, z_int / m.lambda_int_mm, e, rng, calo,
                               edges_mm / m.lambda_int_mm, spots)
        em = _em_source(f_em * e_left, z_int / m.X0_mm, rng, calo, edges_x0, spots,
                        spread_mm=PI0_SPREAD * had.radii[..., 0])
        sources = [track, em, had] + ([_halo(em, calo)] if physics >= 2 else [])
        info.update({"interaction_mm": z_int, "em_fraction": np.where(interacts, f_em, 0.0)})
    out.energy[...] = e
    _deposit(sources, calo, owner, rng, axis_xy, out.layers, out.overflow)
    if sampling:
        _sample(out.layers, rng, calo.medium.sampling_term)
    if threshold_mev > 0:
        for image in out.layers:
            image[image < threshold_mev] = 0.0
    return info


def _sample(images: tuple[np.ndarray, ...], rng: np.random.Generator, term: float) -> None:
    """Replace each cell's deposit E by what a Pb/LAr readout sees of it, scaled back by 1/f_samp.

    Sampling fluctuations add in quadrature over independent cells, so a stochastic term
    ``a / sqrt(E/GeV)`` on a shower's energy is a variance ``a^2 E_cell (1 GeV)`` per cell. Drawn
    as GFlash does (``GFlashSamplingShowerParameterisation::ApplySampling``): a Gamma variate with
    shape ``E_cell / (a^2 GeV)`` and scale ``a^2 GeV``, mean ``E_cell``, never negative.
    """
    scale = term**2 * 1000.0  # MeV
    for image in images:
        hit = image > 0
        image[hit] = rng.gamma(image[hit] / scale, scale).astype(image.dtype)


def simulate(particle: str, n: int, *, energy: float | tuple[float, float] = (1.0, 100.0), seed: int = 0,
             spots: bool = True, position_sigma: float = 0.0, angle_sigma: float = 0.0,
             threads: int | None = None, calorimeter: Calorimeter = CALORIMETER, physics: int = 1,
             sampling: bool = False, threshold_mev: float = 0.0) -> Showers:
    """Simulate ``n`` showers of ``particle`` (``eplus``, ``gamma`` or ``piplus``).

    ``energy``: a fixed incident energy in GeV, or a ``(low, high)`` range drawn
    uniformly (default 1–100 GeV, as in CaloGAN). ``position_sigma`` (mm) and
    ``angle_sigma`` (rad) smear the entry point and direction (Gaussian, per
    axis); the drawn values are in ``showers.info``. ``spots=False`` gives the
    mean lateral profile without spot fluctuations. ``threads``: worker
    threads (default: up to 2); the result does not depend on it.

    ``physics``: 1 (default) is the original model, bit for bit (the simulated
    datasets are built on it); 2 adds, for closer agreement with Geant4, each
    electromagnetic shower's soft-photon halo, the primary e+'s ionisation
    track, and a converted photon's e+e- pair as two prongs (see the module
    docstring). ``sampling``: the cells read out the liquid argon only, scaled
    back by the sampling fraction, with its per-cell fluctuations (the CaloGAN
    Geant4 files record the total deposit: off by default). ``threshold_mev``:
    cells below it read 0 (a readout threshold; the energy is lost).
    """
    if particle not in PARTICLES:
        raise PrunelabError(f"unknown particle {particle!r} (known: {', '.join(PARTICLES)})")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PrunelabError(f"number of events must be a positive integer, got {n!r}")
    if isinstance(energy, (list, tuple)):
        if len(energy) != 2 or not (0 < float(energy[0]) <= float(energy[1])) or not math.isfinite(float(energy[1])):
            raise PrunelabError(f"energy range must be (low, high) GeV with 0 < low <= high, got {energy!r}")
        energy = (float(energy[0]), float(energy[1]))
    elif not (math.isfinite(float(energy)) and float(energy) > 0):
        raise PrunelabError(f"energy must be a positive number of GeV, got {energy!r}")
    for name, value in (("position_sigma", position_sigma), ("angle_sigma", angle_sigma)):
        if not (math.isfinite(value) and value >= 0):
            raise PrunelabError(f"{name} must be a non-negative number, got {value!r}")
    if physics not in PHYSICS:
        raise PrunelabError(f"physics must be one of {', '.join(map(str, PHYSICS))}, got {physics!r}")
    if not (math.isfinite(threshold_mev) and threshold_mev >= 0):
        raise PrunelabError(f"threshold_mev must be a non-negative number of MeV, got {threshold_mev!r}")
    if not 0 <= int(seed) < 2**63:
        raise PrunelabError(f"seed must be in [0, 2^63), got {seed}")
    starts = list(range(0, n, CHUNK))
    seeds = np.random.SeedSequence([int(seed), PARTICLES.index(particle)]).spawn(len(starts))
    threads = min(2, len(starts)) if threads is None else max(1, int(threads))
    result = Showers(np.empty(n), tuple(np.empty((n, *layer.shape), dtype=np.float32) for layer in calorimeter.layers),
                     np.empty((n, len(calorimeter.layers)), dtype=np.float32), particle)

    def work(i: int) -> dict:
        view = result.take(slice(starts[i], min(n, starts[i] + CHUNK)))  # basic slices: views, filled in place
        return _chunk(particle, view, seeds[i], energy, spots, float(position_sigma), float(angle_sigma), calorimeter,
                      int(physics), bool(sampling), float(threshold_mev))

    # BLAS at one thread: the chunks are the parallelism (nested threading oversubscribes the cores),
    # and the bits then cannot depend on how many threads BLAS would have used.
    with threadpool_limits(1, user_api="blas"):
        if threads == 1 or len(starts) == 1:
            extras = [work(i) for i in range(len(starts))]
        else:
            with ThreadPoolExecutor(threads) as pool:
                extras = list(pool.map(work, range(len(starts))))
    result.info = {key: np.concatenate([x[key] for x in extras]) for key in extras[0]}
    return result
