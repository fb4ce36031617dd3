"""The simulator's physics=2 additions and readout options, each against an independent computation
or a planted answer: the soft-photon halo, the primary e+ track, the photon's two prongs, sampling
fluctuations per cell, the readout threshold, and the dataset options that select them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunelab.errors import PrunelabError
from prunelab.hep import CALORIMETER, EFFECTIVE_MEDIUM, simulate
from prunelab.hep import simulator as sim
from prunelab.hep.shapes import shower_shapes


def test_medium_photon_path_and_sampling_from_pdg_constants():
    grams_pb, grams_ar = 11.35 * 0.2, 1.396 * 0.4  # g/cm^2 per 6 mm period
    w_pb = grams_pb / (grams_pb + grams_ar)
    mu = w_pb * 0.0420 + (1 - w_pb) * 0.0306
    assert EFFECTIVE_MEDIUM.photon_mfp_mm == pytest.approx(10 / (mu * (grams_pb + grams_ar) / 0.6), rel=1e-9)
    assert EFFECTIVE_MEDIUM.photon_mfp_mm == pytest.approx(53.4, abs=0.1)
    f_samp = 1.519 * grams_ar / (1.122 * grams_pb + 1.519 * grams_ar)
    assert EFFECTIVE_MEDIUM.sampling_fraction == pytest.approx(f_samp) == pytest.approx(0.25, abs=0.005)
    assert EFFECTIVE_MEDIUM.sampling_term == pytest.approx(0.027 * math.sqrt(4 / f_samp))
    assert 0.10 < EFFECTIVE_MEDIUM.sampling_term < 0.12  # GFlash's default sampling resolution is 0.11


def test_physics_one_is_the_default_and_two_changes_the_showers():
    a = simulate("gamma", 300, seed=4)
    b = simulate("gamma", 300, seed=4, physics=1)
    c = simulate("gamma", 300, seed=4, physics=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.layers, b.layers))
    assert not np.array_equal(a.layers[1], c.layers[1])


@pytest.mark.parametrize("particle", ["eplus", "gamma", "piplus"])
def test_physics_two_is_deterministic_whatever_the_threads(particle):
    kw = dict(seed=6, physics=2, sampling=True, threshold_mev=0.3)
    a = simulate(particle, 4500, threads=1, **kw)
    b = simulate(particle, 4500, threads=2, **kw)
    for x, y in zip((*a.layers, a.overflow, a.energy), (*b.layers, b.overflow, b.energy)):
        assert np.array_equal(x, y)
    for key in a.info:
        assert np.array_equal(a.info[key], b.info[key])


def _planted_source(energy_per_slice: float, tau: float, spots: bool = True) -> sim._Source:
    s = len(sim.slice_edges_mm(CALORIMETER)[1])
    energy = np.full((2, s), energy_per_slice)
    n_spots = energy / 4.0 if spots else None
    ones = np.ones((2, s, 1))
    return sim._Source(energy.copy(), n_spots, ones, ones * 20.0, tau=np.full((2, s), tau))


@pytest.mark.parametrize("tau", [0.3, 2.0, 10.0])
def test_halo_takes_its_share_of_each_slice_and_leaves_spot_sizes(tau):
    em = _planted_source(100.0, tau)
    halo = sim._halo(em, CALORIMETER)
    share = min(0.04 + 0.05 * tau**2, 0.9)
    assert np.allclose(halo.energy, 100.0 * share)
    assert np.allclose(em.energy + halo.energy, 100.0)  # energy moves, none is made or lost
    assert np.allclose(em.energy / em.spots, 4.0)  # the core's spots keep their energy
    assert halo.exponential and halo.fixed_mm == EFFECTIVE_MEDIUM.photon_mfp_mm
    assert np.allclose(halo.radii, EFFECTIVE_MEDIUM.photon_mfp_mm * math.log(2))  # off-axis: GP of equal median
    assert halo.quantum == sim.HALO_QUANTUM_MEV
    assert sim._halo(_planted_source(100.0, tau, spots=False), CALORIMETER).quantum is None  # smooth stays smooth


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_exponential_halo_profile_matches_sampled_photons(layer_index):
    """Quadrature of exp(-r/lambda)/lambda against 400k points drawn from it (r = -lambda ln u)."""
    layer, mfp = CALORIMETER.layers[layer_index], EFFECTIVE_MEDIUM.photon_mfp_mm
    rng = np.random.default_rng(7)
    r = -mfp * np.log(rng.random(400_000))
    phi = rng.uniform(0, 2 * np.pi, r.size)
    ex, ey = layer.edges()
    hist, _, _ = np.histogram2d(r * np.cos(phi), r * np.sin(phi), bins=(ex, ey))
    sampled = np.append(hist.ravel(), r.size - hist.sum()) / r.size
    exact = sim._exponential_profile(layer, mfp)
    assert exact.sum() == pytest.approx(1.0, abs=1e-9)
    # outside the 480 mm square: beyond its corners' radius for sure, never within its inscribed circle
    assert exact[-1] == pytest.approx(sampled[-1], abs=5e-4)
    assert math.exp(-240 * math.sqrt(2) / mfp) < exact[-1] < math.exp(-240 / mfp)
    sigma = np.sqrt(exact * (1 - exact) / r.size)
    assert np.all(np.abs(sampled - exact) <= 5 * sigma + 2e-4)


def test_soft_quanta_give_poisson_occupancy_and_the_mean_energy():
    """A halo of known energy per layer: each cell is hit with P = 1 - exp(-E_cell / quantum), E_cell from
    the exact cell integral of the planted profile, and the energy averages to E_cell."""
    n, layer_energy = 40_000, 30.0
    edges, owner = sim.slice_edges_mm(CALORIMETER)
    counts = np.bincount(owner)
    energy = np.repeat(np.asarray([layer_energy / counts[o] for o in owner])[None, :], n, axis=0)
    ones = np.ones((n, len(owner), 1))
    radius = EFFECTIVE_MEDIUM.photon_mfp_mm
    source = sim._Source(energy, None, ones, ones * radius, quantum=0.7, fixed_mm=radius)
    images = tuple(np.zeros((n, *layer.shape), dtype=np.float32) for layer in CALORIMETER.layers)
    overflow = np.zeros((n, 3), dtype=np.float32)
    sim._deposit([source], CALORIMETER, owner, np.random.default_rng(0), None, images, overflow)
    for layer, image in zip(CALORIMETER.layers, images):
        expected = layer_energy * sim.cell_fractions(layer, np.array(radius))[:-1]
        hit = (image.reshape(n, -1) > 0).mean(axis=0)
        p = -np.expm1(-expected / 0.7)
        assert np.all(np.abs(hit - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-4)
        mean = image.reshape(n, -1).astype(float).mean(axis=0)
        big = expected > 0.5
        assert np.allclose(mean[big], expected[big], rtol=0.03)
        assert np.all(image >= 0)


def test_halo_raises_occupancy_to_geant4_ranges_without_moving_layer_energies():
    """Geant4 e+ sparsity per layer, read off the CaloGAN paper's figure (docs/hep.md): medians about
    0.50, 0.87, 0.30; the bulk within 0.30-0.63, 0.65-0.95, 0.05-0.47."""
    old = shower_shapes(simulate("eplus", 4000, seed=12))
    new = shower_shapes(simulate("eplus", 4000, seed=12, physics=2))
    assert 0.30 < new["occupancy_0"].median() < 0.63
    assert 0.65 < new["occupancy_1"].median() < 0.95
    assert 0.05 < new["occupancy_2"].median() < 0.47
    for i in range(3):
        assert new[f"occupancy_{i}"].median() > 1.3 * old[f"occupancy_{i}"].median()
        assert abs(new[f"f_{i}"].mean() - old[f"f_{i}"].mean()) < 0.02
    # lateral widths along x (CaloGAN's sigma_i): Geant4 e+ about 10-25, 28-35, 30-100 mm
    assert 10 < new["width_x_0"].median() < 25
    assert 28 < new["width_x_1"].median() < 35
    assert 30 < new["width_x_2"].median() < 100


def test_primary_track_is_a_mip_over_one_radiation_length_in_the_central_cells():
    n = 20_000
    edges, _ = sim.slice_edges_mm(CALORIMETER)
    track = sim._primary_track(np.zeros(n), np.random.default_rng(1), CALORIMETER, edges)
    m = EFFECTIVE_MEDIUM
    # Exp(X0) of path (less the few that would leave the 480 mm stack) at mip per period, straggling mean 1
    expected = m.X0_mm * (1 - math.exp(-CALORIMETER.depth / m.X0_mm)) / m.period_mm * m.mip_MeV_per_period
    assert track.energy.sum(axis=1).mean() == pytest.approx(expected, rel=0.02)
    frac = sim._fixed_profile(CALORIMETER.layers[0], sim.TRACK_RADIUS_MM, True)
    assert frac[:-1].reshape(3, 96)[1, 47:49].sum() == pytest.approx(1.0)  # the two cells beside the axis


def test_positron_track_and_shower_conserve_energy_and_photons_are_dark_before_converting():
    e = simulate("eplus", 3000, energy=20.0, seed=2, physics=2)
    deposited = e.layer_energies.sum(axis=1) + e.overflow.sum(axis=1)
    assert np.mean(deposited) == pytest.approx(20_000, rel=0.02)
    assert np.all(e.layer_energies[:, 0] > 0)  # the positron ionises from the front face on
    g = simulate("gamma", 6000, energy=20.0, seed=2, physics=2)
    late = g.info["conversion_x0"] > CALORIMETER.boundaries_x0()[1]  # converts behind layer 0
    assert late.sum() > 10 and np.all(g.layer_energies[late, 0] == 0)


def test_pair_share_follows_bethe_heitler():
    """dsigma/dx ~ 1 - 4/3 x(1-x): CDF (x - 2/3 x^2 + 4/9 x^3) 9/7, mean 1/2, E[x^2] = 36/105."""
    u = np.random.default_rng(3).random(400_000)
    x = sim._bethe_heitler_fraction(u)
    assert np.allclose((x - 2 / 3 * x**2 + 4 / 9 * x**3) * 9 / 7, u, atol=1e-9)
    assert x.mean() == pytest.approx(0.5, abs=0.002)
    assert (x**2).mean() == pytest.approx(36 / 105, abs=0.002)
    g = simulate("gamma", 3000, seed=1, physics=2)
    assert np.all((g.info["pair_fraction"] >= 0) & (g.info["pair_fraction"] <= 1))


def test_prongs_separate_by_angle_times_depth():
    e_mev = np.array([1000.0, 100.0])
    start = np.array([1.0, 1.0])
    edges = np.array([0.0, 1.0, 3.0, 11.0])  # slice middles 0.5 (before the conversion), 2, 7 X0
    d = sim._prong_spread_mm(e_mev, start, edges, 15.6)
    theta = np.hypot(0.51099895 / e_mev, 13.6 / e_mev)
    assert d[:, 0] == pytest.approx([0, 0])
    assert d[:, 1] == pytest.approx(theta * 1.0 * 15.6)
    assert d[:, 2] == pytest.approx(theta * 6.0 * 15.6)
    assert d[0, 1] < 0.5  # a 1 GeV prong stays within half a millimetre of the other for one X0


def test_sampling_fluctuations_per_cell_are_gamma_with_the_stochastic_term():
    term = EFFECTIVE_MEDIUM.sampling_term
    cells = np.array([0.5, 5.0, 50.0, 500.0], dtype=np.float32)
    image = np.tile(cells, (200_000, 1))
    sim._sample((image,), np.random.default_rng(4), term)
    assert image.mean(axis=0) == pytest.approx(cells, rel=0.01)
    assert image.var(axis=0) == pytest.approx(term**2 * 1000.0 * cells, rel=0.02)  # a^2 E_cell (1 GeV)
    assert image.min() >= 0
    # a whole shower: sigma/E = a / sqrt(E/GeV) on top of the simulator's own spread
    plain = simulate("eplus", 3000, energy=50.0, seed=5, physics=2)
    sampled = simulate("eplus", 3000, energy=50.0, seed=5, physics=2, sampling=True)
    r0 = plain.layer_energies.sum(axis=1)
    r1 = sampled.layer_energies.sum(axis=1)
    assert r1.std() / r1.mean() == pytest.approx(math.hypot(r0.std() / r0.mean(), term / math.sqrt(50)), rel=0.1)


def test_threshold_zeroes_cells_below_it_and_keeps_the_rest():
    a = simulate("eplus", 2000, seed=9, physics=2)
    b = simulate("eplus", 2000, seed=9, physics=2, threshold_mev=1.0)
    for x, y in zip(a.layers, b.layers):
        assert not np.any((y > 0) & (y < 1.0))
        assert np.array_equal(y, np.where(x >= 1.0, x, 0.0))
    assert shower_shapes(b)["occupancy_1"].mean() < shower_shapes(a)["occupancy_1"].mean()


@pytest.mark.parametrize("bad", [dict(physics=3), dict(threshold_mev=-1.0), dict(threshold_mev=float("nan"))])
def test_bad_options_are_refused(bad):
    with pytest.raises(PrunelabError):
        simulate("eplus", 10, **bad)


def test_dataset_variant_selects_the_simulator_options(monkeypatch, tmp_path):
    from prunelab import DataSource, load_dataset
    from prunelab.hep import tasks as calo

    monkeypatch.setattr(calo, "TRAIN_PER_PARTICLE", 200)
    monkeypatch.setattr(calo, "TEST_PER_PARTICLE", 100)
    source = DataSource(data_dir=tmp_path, download=False)
    plain = load_dataset("calo_eplus_gamma", source=source)
    new = load_dataset("calo_eplus_gamma[physics=2,threshold=0.5]", source=source)
    names = sorted(p.name for p in (tmp_path / "calo").glob("*.npz"))
    assert names == ["calo_eplus_gamma_cells_n200-100_v2.npz", "calo_eplus_gamma_cells_n200-100_v2_p2t0.5s0.npz"]
    assert np.array_equal(plain.test.y.numpy(), new.test.y.numpy())
    with np.load(tmp_path / "calo" / names[0]) as a, np.load(tmp_path / "calo" / names[1]) as b:
        old_cells, cells = a["x_test"][:, :504], b["x_test"][:, :504]  # log(1 + E/MeV) per cell
    assert not np.any((cells > 0) & (cells < np.log1p(0.5) - 1e-6))  # no cell between 0 and 0.5 MeV
    assert (cells > 0).mean() > (old_cells > 0).mean()  # the halo fills cells, the threshold empties a few
    expected = simulate("gamma", 100, seed=calo.TEST_SEED, physics=2, threshold_mev=0.5)
    assert np.array_equal(cells[:100], calo.cell_features(expected)[:, :504])


def test_physics_two_with_a_smeared_beam_follows_the_beam():
    """Off-axis showers integrate cells per event (the halo as GP's form of the same median radius):
    the halo still fills far cells, the energy stays contained, the shower follows the entry point."""
    s = simulate("eplus", 1500, energy=20.0, seed=9, physics=2, position_sigma=20.0, angle_sigma=0.02)
    centred = simulate("eplus", 1500, energy=20.0, seed=9, physics=2)
    assert np.all(np.isfinite(s.layers[1])) and all(np.all(img >= 0) for img in s.layers)
    deposited = s.layer_energies.sum(axis=1) + s.overflow.sum(axis=1)
    assert deposited.mean() == pytest.approx(20_000, rel=0.02)
    ex, _ = CALORIMETER.layers[1].centres()
    img = s.layers[1].astype(float)
    centroid_x = (img.sum(axis=2) @ ex) / img.sum(axis=(1, 2))
    assert np.corrcoef(centroid_x, s.info["x0"])[0, 1] > 0.9
    occupancy = shower_shapes(s)["occupancy_1"].median()
    assert occupancy == pytest.approx(shower_shapes(centred)["occupancy_1"].median(), abs=0.1)


@pytest.mark.parametrize("options", ["physics=3", "threshold=-1", "sampling=2", "physics=two"])
def test_bad_dataset_options_are_refused_in_one_line(options, tmp_path):
    from prunelab import DataSource, load_dataset

    with pytest.raises(PrunelabError):
        load_dataset(f"calo_eplus_gamma[{options}]", source=DataSource(data_dir=tmp_path, download=False))
