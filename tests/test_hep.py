"""The calorimeter task: material constants, exact cell integrals, the simulator's physics,
shower shapes on hand-made images, HDF5 files, metrics against planted answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from prunelab.errors import PrunelabError
from prunelab.hep import CALORIMETER, EFFECTIVE_MEDIUM, simulate
from prunelab.hep.io import read_showers, write_showers
from prunelab.hep.metrics import energy_bin_labels, energy_resolution, rejection, roc_auc
from prunelab.hep.shapes import shower_shapes
from prunelab.hep.simulator import Showers, TABLE_RADII, _mix_table, cell_fractions, lateral_table


# --------------------------------------------------------------------------
# Material and geometry: the numbers the issue quotes, derived from PDG constants
# --------------------------------------------------------------------------


def test_effective_medium_matches_published_values():
    m = EFFECTIVE_MEDIUM
    assert m.mass_fractions[0] == pytest.approx(0.80, abs=0.01)
    assert m.X0_mm == pytest.approx(15.6, abs=0.1)
    assert m.lambda_int_mm == pytest.approx(374, abs=2)
    assert m.moliere_mm == pytest.approx(35.5, abs=0.2)
    assert m.Ec_MeV == pytest.approx(9.3, abs=0.05)
    assert m.mip_MeV_per_period == pytest.approx(3.7, abs=0.1)
    depths = np.diff(CALORIMETER.boundaries_x0())
    assert depths == pytest.approx([5.8, 22.3, 2.8], abs=0.05)
    assert [layer.shape for layer in CALORIMETER.layers] == [(3, 96), (12, 12), (12, 6)]
    assert [layer.cell_size for layer in CALORIMETER.layers] == [(160, 5), (40, 40), (40, 80)]


@pytest.mark.parametrize("layer_index", [0, 1, 2])
@pytest.mark.parametrize("centre", [(0.0, 0.0), (13.0, -31.0)])
def test_cell_fractions_match_sampled_profile(layer_index, centre):
    """The closed-form cell integral against 400k points drawn from f(r) = 2rR²/(r²+R²)²."""
    layer = CALORIMETER.layers[layer_index]
    radius = 25.0
    rng = np.random.default_rng(0)
    u = rng.random(400_000)
    r = radius * np.sqrt(u / (1 - u))
    phi = rng.uniform(0, 2 * np.pi, u.size)
    x, y = centre[0] + r * np.cos(phi), centre[1] + r * np.sin(phi)
    ex, ey = layer.edges()
    hist, _, _ = np.histogram2d(x, y, bins=(ex, ey))
    sampled = np.append(hist.ravel(), u.size - hist.sum()) / u.size
    exact = cell_fractions(layer, np.array(radius), centre[0], centre[1])
    assert exact.sum() == pytest.approx(1.0, abs=1e-9)
    sigma = np.sqrt(exact * (1 - exact) / u.size)
    assert np.all(np.abs(sampled - exact) <= 5 * sigma + 1e-6)


def test_lateral_table_interpolation_is_within_a_tenth_of_a_percent():
    layer = CALORIMETER.layers[1]
    radii = np.array([0.7, 3.3, 17.0, 41.0, 88.0, 410.0])
    table = _mix_table(layer, np.ones((len(radii), 1)), radii[:, None])
    exact = cell_fractions(layer, radii)
    assert np.abs(table - exact).max() < 1e-3
    assert np.allclose(lateral_table(layer)[len(TABLE_RADII) // 2], cell_fractions(layer, TABLE_RADII[len(TABLE_RADII) // 2]))


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


def test_same_seed_same_showers_whatever_the_threads():
    a = simulate("piplus", 5000, seed=3, threads=1)
    b = simulate("piplus", 5000, seed=3, threads=2)
    c = simulate("piplus", 5000, seed=4)
    for x, y in zip(a.layers, b.layers):
        assert np.array_equal(x, y)
    assert np.array_equal(a.overflow, b.overflow) and np.array_equal(a.energy, b.energy)
    assert not np.array_equal(a.layers[1], c.layers[1])


def _fractions(showers: Showers) -> np.ndarray:
    e = showers.layer_energies
    return e / e.sum(axis=1, keepdims=True)


def test_electron_showers_contained_and_deeper_with_energy():
    depths = []
    for energy in (2.0, 10.0, 50.0, 100.0):
        s = simulate("eplus", 3000, energy=energy, seed=1)
        deposited = s.layer_energies.sum(axis=1) + s.overflow.sum(axis=1)
        assert np.mean(deposited / (energy * 1000)) == pytest.approx(1.0, abs=0.02)  # 30.8 X0: near-full containment
        assert np.mean(s.overflow.sum(axis=1) / deposited) < 0.01  # ±6.8 Molière radii laterally
        f = _fractions(s).mean(axis=0)
        assert f[2] < 0.01  # 28 X0 in front of the last layer
        depths.append(shower_shapes(s)["depth"].mean())
    # the shower maximum moves as ln E: mean depth rises monotonically, roughly linearly in ln E
    assert np.all(np.diff(depths) > 0)
    slope = np.polyfit(np.log([2.0, 10.0, 50.0, 100.0]), depths, 1)[0]
    assert 0.02 < slope < 0.1


def test_photons_convert_later_and_leave_less_in_the_first_layer():
    e = simulate("eplus", 6000, energy=20.0, seed=2)
    g = simulate("gamma", 6000, energy=20.0, seed=2)
    fe, fg = _fractions(e)[:, 0], _fractions(g)[:, 0]
    assert fg.mean() < 0.8 * fe.mean()
    assert shower_shapes(g)["depth"].mean() > shower_shapes(e)["depth"].mean()
    # the conversion depth is exponential with mean 9/7 X0
    assert g.info["conversion_x0"].mean() == pytest.approx(9 / 7, rel=0.05)


def test_pions_deeper_wider_more_fluctuating_and_often_minimum_ionising():
    e = simulate("eplus", 6000, energy=50.0, seed=5)
    p = simulate("piplus", 6000, energy=50.0, seed=5)
    depth = CALORIMETER.depth
    passing = p.info["interaction_mm"] >= depth
    assert passing.mean() == pytest.approx(math.exp(-depth / EFFECTIVE_MEDIUM.lambda_int_mm), abs=0.02)
    mip = (p.layer_energies.sum(axis=1) + p.overflow.sum(axis=1))[passing]
    assert mip.mean() == pytest.approx(80 * EFFECTIVE_MEDIUM.mip_MeV_per_period, rel=0.03)
    response_e = (e.layer_energies.sum(axis=1) + e.overflow.sum(axis=1)) / 50_000
    response_p = (p.layer_energies.sum(axis=1) + p.overflow.sum(axis=1)) / 50_000
    assert response_p.mean() < 0.6 * response_e.mean()  # invisible energy and leakage
    assert response_p.std() > 5 * response_e.std()
    se, sp = shower_shapes(e), shower_shapes(p.take(~passing))
    assert sp["f_2"].mean() > 10 * se["f_2"].mean()
    assert sp["width_x_1"].mean() > 1.2 * se["width_x_1"].mean()  # hadronic cascades are wider
    assert sp["depth"].mean() > se["depth"].mean()


def test_occupancy_is_realistic_not_every_cell():
    s = shower_shapes(simulate("eplus", 3000, seed=7))
    assert 0.05 < s["occupancy_0"].mean() < 0.5
    assert 0.3 < s["occupancy_1"].mean() < 0.9
    assert s["occupancy_2"].mean() < 0.4
    smooth = shower_shapes(simulate("eplus", 500, seed=7, spots=False))
    assert smooth["occupancy_1"].min() > 0.99  # a smooth profile fills every cell: spots are what empties them


def test_spot_fluctuations_average_to_the_smooth_profile():
    noisy = simulate("eplus", 20_000, energy=30.0, seed=8)
    smooth = simulate("eplus", 20_000, energy=30.0, seed=8, spots=False)
    mean_noisy, mean_smooth = noisy.layers[1].mean(axis=0), smooth.layers[1].mean(axis=0)
    big = mean_smooth > 1.0
    assert np.allclose(mean_noisy[big], mean_smooth[big], rtol=0.05)


def test_smeared_entry_point_moves_the_shower():
    s = simulate("eplus", 2000, energy=20.0, seed=9, position_sigma=30.0)
    shapes = shower_shapes(s)
    ex, ey = CALORIMETER.layers[1].centres()
    img = s.layers[1].astype(float)
    centroid_x = (img.sum(axis=2) @ ex) / img.sum(axis=(1, 2))
    assert np.corrcoef(centroid_x, s.info["x0"])[0, 1] > 0.95
    assert shapes["E_tot"].mean() > 0.95 * 20_000


@pytest.mark.parametrize("bad", [dict(particle="muon"), dict(n=0), dict(energy=-1.0), dict(energy=(5.0, 1.0)),
                                 dict(position_sigma=float("nan"))])
def test_simulate_rejects_bad_input(bad):
    args = dict(particle="eplus", n=10)
    args.update(bad)
    with pytest.raises(PrunelabError):
        simulate(args.pop("particle"), args.pop("n"), **args)


# --------------------------------------------------------------------------
# Shower shapes on hand-made images
# --------------------------------------------------------------------------


def _hand_made(cells: dict[int, dict[tuple[int, int], float]]) -> Showers:
    layers = tuple(np.zeros((1, *layer.shape), dtype=np.float32) for layer in CALORIMETER.layers)
    for index, hits in cells.items():
        for (i, j), e in hits.items():
            layers[index][0, i, j] = e
    return Showers(np.array([1.0]), layers, np.zeros((1, 3), dtype=np.float32))


def test_shower_shapes_on_known_images():
    # layer 1: 100 MeV at x = -20 and 50 MeV at x = +20 mm (same y); layer 0 has 150 MeV in one cell
    s = shower_shapes(_hand_made({0: {(1, 40): 150.0}, 1: {(5, 7): 100.0, (6, 7): 50.0}}))
    row = s.iloc[0]
    assert row["E_0"] == 150 and row["E_1"] == 150 and row["E_2"] == 0 and row["E_tot"] == 300
    assert row["f_0"] == pytest.approx(0.5)
    assert row["depth"] == pytest.approx(0.5) and row["depth_width"] == pytest.approx(0.5)
    # weighted mean x = (-20*100 + 20*50)/150 = -6.667; RMS = sqrt(400 - 44.44) = 18.856
    assert row["width_x_1"] == pytest.approx(math.sqrt(400 - (20 / 3) ** 2))
    assert row["width_y_1"] == pytest.approx(0.0)
    assert row["eratio_1"] == pytest.approx(50 / 150)
    assert row["eratio_0"] == pytest.approx(1.0)  # one cell: (E - 0) / E
    assert row["occupancy_1"] == pytest.approx(2 / 144)
    assert row["width_x_2"] == 0 and row["eratio_2"] == 0
    assert row["deepest"] == 1
    empty = shower_shapes(_hand_made({})).iloc[0]
    assert empty["deepest"] == -1 and empty["E_tot"] == 0 and empty["depth"] == 0


# --------------------------------------------------------------------------
# HDF5 files in the CaloGAN layout
# --------------------------------------------------------------------------


def test_hdf5_round_trip(tmp_path):
    s = simulate("gamma", 300, seed=1, position_sigma=5.0)
    path = write_showers(tmp_path / "gamma.h5", s, {"seed": 1})
    back = read_showers(path)
    assert back.particle == "gamma" and len(back) == 300
    for a, b in zip(s.layers, back.layers):
        assert np.array_equal(a, b)
    assert np.allclose(back.energy, s.energy, rtol=1e-6)
    assert np.allclose(back.info["x0"], s.info["x0"])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # follows the umask, not private
    assert len(read_showers(path, limit=10)) == 10
    both = Showers.concat([s, read_showers(path, limit=10)])
    assert len(both) == 310 and both.particle == "gamma" and np.array_equal(both.layers[0][300:], s.layers[0][:10])
    assert set(both.info) == set(s.info)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_raw(path, **arrays):
    import h5py

    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def _valid_arrays(n=4):
    return dict(energy=np.ones((n, 1)), layer_0=np.zeros((n, 3, 96)), layer_1=np.zeros((n, 12, 12)),
                layer_2=np.zeros((n, 12, 6)), overflow=np.zeros((n, 3)))


def test_hdf5_errors_name_the_file_and_key(tmp_path):
    arrays = _valid_arrays()
    del arrays["layer_1"]
    with pytest.raises(PrunelabError, match=r"missing\.h5: missing key 'layer_1'"):
        read_showers(_write_raw(tmp_path / "missing.h5", **arrays))
    arrays = _valid_arrays()
    arrays["layer_2"] = np.zeros((4, 6, 12))
    with pytest.raises(PrunelabError, match=r"shape\.h5: key 'layer_2' has shape \(4, 6, 12\), expected \(4, 12, 6\)"):
        read_showers(_write_raw(tmp_path / "shape.h5", **arrays))
    arrays = _valid_arrays()
    arrays["layer_0"][2, 1, 5] = -3.0
    with pytest.raises(PrunelabError, match=r"negative\.h5: key 'layer_0' holds -3\.0 at event 2"):
        read_showers(_write_raw(tmp_path / "negative.h5", **arrays))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(PrunelabError, match=r"text\.h5: not a readable HDF5 file"):
        read_showers(tmp_path / "text.h5")
    with pytest.raises(PrunelabError, match="is a directory"):
        write_showers(tmp_path, simulate("eplus", 2))
    assert read_showers(_write_raw(tmp_path / "ok.h5", **_valid_arrays())).particle is None


# --------------------------------------------------------------------------
# Metrics against planted answers
# --------------------------------------------------------------------------


def test_auc_and_rejection_match_the_planted_gaussians():
    """Signal ~ N(d, 1), background ~ N(0, 1): AUC = Phi(d/sqrt 2); at efficiency e the
    threshold is d - Phi^-1(e) and the background passes with 1 - Phi(threshold)."""
    d, n = 1.5, 200_000
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, n), rng.normal(d, 1, n)]
    labels = np.r_[np.zeros(n), np.ones(n)]
    assert roc_auc(labels, scores) == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.003)
    got = rejection(labels, scores, (0.5, 0.9))
    for eff in (0.5, 0.9):
        fpr = 1 - norm.cdf(d - norm.ppf(eff))
        assert got[eff] == pytest.approx(1 / fpr, rel=0.03)


def test_rejection_is_the_brute_force_threshold_scan():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 0.8, 1.0)
    got = rejection(labels, scores, (0.7, 0.95))
    for eff, value in got.items():
        best = min(((scores[labels == 0] >= t).mean() for t in np.unique(scores)
                    if (scores[labels == 1] >= t).mean() >= eff))
        assert value == pytest.approx(1 / best)
    separable = rejection(np.r_[np.zeros(5), np.ones(5)], np.r_[np.zeros(5), np.ones(5)], (0.9,))
    assert separable[0.9] == float("inf")


def test_energy_bins_and_resolution():
    labels = energy_bin_labels(np.array([1.0, 9.99, 10.0, 59.0, 100.0]))
    assert list(labels) == ["1-10 GeV", "1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"]
    rng = np.random.default_rng(2)
    e = rng.uniform(1, 100, 200_000)
    pred = e * (1.02 + 0.1 / np.sqrt(e) * rng.standard_normal(e.size))  # 2 % bias, 10 %/sqrt(E) resolution
    rows = {r["bin"]: r for r in energy_resolution(e, pred)}
    assert rows["60-100 GeV"]["bias"] == pytest.approx(0.02, abs=0.002)
    expected = 0.1 * np.sqrt(np.mean(1 / e[(e >= 60)]))
    assert rows["60-100 GeV"]["resolution"] == pytest.approx(expected, rel=0.03)
    assert rows["1-10 GeV"]["resolution"] > rows["60-100 GeV"]["resolution"]


def test_calorimetric_energy_baseline_resolution_improves_with_energy():
    from prunelab.hep.baselines import calorimetric_energy

    train = simulate("eplus", 4000, seed=1, position_sigma=10.0)
    test = simulate("eplus", 4000, seed=2, position_sigma=10.0)
    rows = {r["bin"]: r for r in energy_resolution(test.energy, calorimetric_energy(train, test))}
    assert abs(rows["30-60 GeV"]["bias"]) < 0.01
    assert rows["1-10 GeV"]["resolution"] > rows["60-100 GeV"]["resolution"]  # stochastic term ~ 1/sqrt(E)
    assert rows["60-100 GeV"]["resolution"] < 0.02  # near-full containment of e+ showers
