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


def _em_source(e_gev: np.ndarray, start_x0: np.ndarray, rng: np.random.Generator, calo: Calorimeter,
               edges_x0: np.ndarray, spots: bool, spread_mm: np.ndarray | None = None) -> _Source:
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
    if spots:
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
    return _Source(energy, n_spot, weights, np.clip(radii, 0.05, None))


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


def _track_source(depth_mm: np.ndarray, rng: np.random.Generator, calo: Calorimeter, edges_mm: np.ndarray) -> _Source:
    """A minimum-ionising-like track from the front face to ``depth_mm``."""
    length = np.clip(np.minimum(edges_mm[None, 1:], depth_mm[:, None]) - edges_mm[None, :-1], 0.0, None)
    straggle = np.exp(MIP_STRAGGLING * rng.standard_normal(length.shape) - MIP_STRAGGLING**2 / 2)
    energy = length / calo.medium.period_mm * calo.medium.mip_MeV_per_period * straggle
    ones = np.ones((*energy.shape, 1))
    return _Source(energy, None, ones, ones * TRACK_RADIUS_MM, track=True)


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


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
            if src.track:  # a track crosses one cell or a few: no infinite tail
                frac = np.where(frac >= 0.01, frac, 0.0)
                frac /= np.clip(frac.sum(axis=1, keepdims=True), 1e-12, None)
            if src.spots is None:
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
           position_sigma: float, angle_sigma: float, calo: Calorimeter) -> dict:
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

    if particle == "eplus":
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
        sources = [track, em, had]
        info.update({"interaction_mm": z_int, "em_fraction": np.where(interacts, f_em, 0.0)})
    out.energy[...] = e
    _deposit(sources, calo, owner, rng, axis_xy, out.layers, out.overflow)
    return info


def simulate(particle: str, n: int, *, energy: float | tuple[float, float] = (1.0, 100.0), seed: int = 0,
             spots: bool = True, position_sigma: float = 0.0, angle_sigma: float = 0.0,
             threads: int | None = None, calorimeter: Calorimeter = CALORIMETER) -> Showers:
    """Simulate ``n`` showers of ``particle`` (``eplus``, ``gamma`` or ``piplus``).

    ``energy``: a fixed incident energy in GeV, or a ``(low, high)`` range drawn
    uniformly (default 1–100 GeV, as in CaloGAN). ``position_sigma`` (mm) and
    ``angle_sigma`` (rad) smear the entry point and direction (Gaussian, per
    axis); the drawn values are in ``showers.info``. ``spots=False`` gives the
    mean lateral profile without spot fluctuations. ``threads``: worker
    threads (default: up to 2); the result does not depend on it.
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
    if not 0 <= int(seed) < 2**63:
        raise PrunelabError(f"seed must be in [0, 2^63), got {seed}")
    starts = list(range(0, n, CHUNK))
    seeds = np.random.SeedSequence([int(seed), PARTICLES.index(particle)]).spawn(len(starts))
    threads = min(2, len(starts)) if threads is None else max(1, int(threads))
    result = Showers(np.empty(n), tuple(np.empty((n, *layer.shape), dtype=np.float32) for layer in calorimeter.layers),
                     np.empty((n, len(calorimeter.layers)), dtype=np.float32), particle)

    def work(i: int) -> dict:
        view = result.take(slice(starts[i], min(n, starts[i] + CHUNK)))  # basic slices: views, filled in place
        return _chunk(particle, view, seeds[i], energy, spots, float(position_sigma), float(angle_sigma), calorimeter)

    # BLAS at one thread: the chunks are the parallelism (2x faster than nested threading),
    # and the bits then cannot depend on how many threads BLAS would have used.
    with threadpool_limits(1, user_api="blas"):
        if threads == 1 or len(starts) == 1:
            extras = [work(i) for i in range(len(starts))]
        else:
            with ThreadPoolExecutor(threads) as pool:
                extras = list(pool.map(work, range(len(starts))))
    result.info = {key: np.concatenate([x[key] for x in extras]) for key in extras[0]}
    return result
