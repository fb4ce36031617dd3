"""The CaloChallenge evaluation: file layout, features, separation power, FPD/KPD, classifier tests, report.

Planted answers throughout: hand-made showers with known centres and widths, Gaussians with known Fréchet
distance and MMD², two independent simulator samples (nothing to find) and showers with a planted change.
"""

import json

import numpy as np
import pytest

from prunelab.errors import PrunelabError
from prunelab.hep.calochallenge import (evaluate, feature_bins, feature_names, fpd, frechet_distance,
                                        high_level_features, histogram, kpd, mmd_squared, separation_floor,
                                        separation_power)
from prunelab.hep.calochallenge_classifier import ClassifierSettings, auc_interval, classifier_test
from prunelab.hep.geometry import CALORIMETER
from prunelab.hep.io import file_layout, read_showers, write_showers
from prunelab.hep.metrics import default_energy_edges, energy_masks
from prunelab.hep.simulator import Showers, simulate

# small and quick, yet able to learn a planted difference from 1,200 training showers
FAST = ClassifierSettings(hidden=(64, 64), batch_size=100, learning_rate=1e-3, epochs=30, patience=5, bootstrap=400)


def _raw(path, **arrays):
    import h5py

    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


# --------------------------------------------------------------------------
# The CaloChallenge HDF5 layout
# --------------------------------------------------------------------------


def test_challenge_layout_round_trip_and_voxel_order(tmp_path):
    import h5py

    s = simulate("eplus", 60, seed=3)
    path = write_showers(tmp_path / "challenge.h5", s, {"seed": 3}, layout="calochallenge")
    assert file_layout(path) == "calochallenge" and list(tmp_path.iterdir()) == [path]
    with h5py.File(path) as f:
        assert set(f.keys()) >= {"incident_energies", "showers"}
        energies, voxels = f["incident_energies"][:], f["showers"][:]
    assert energies.shape == (60, 1) and np.allclose(energies[:, 0], 1000 * s.energy)  # MeV
    assert voxels.shape == (60, 504)
    # cell (i, j) of layer 1 is voxel 288 + 12 i + j: layers in order, each flattened with j fastest
    assert voxels[7, 288 + 12 * 5 + 9] == s.layers[1][7, 5, 9]
    assert voxels[7, 288 + 144 + 6 * 3 + 2] == s.layers[2][7, 3, 2]
    assert voxels[7, 96 * 2 + 40] == s.layers[0][7, 2, 40]
    back = read_showers(path)
    assert back.particle == "eplus" and len(back) == 60 and np.allclose(back.energy, s.energy, rtol=1e-12)
    for a, b in zip(s.layers, back.layers):
        assert np.array_equal(a, b)
    assert back.overflow.shape == (60, 3) and not back.overflow.any()  # the layout has no overflow
    assert len(read_showers(path, limit=5)) == 5
    calogan = write_showers(tmp_path / "calogan.h5", s)
    assert file_layout(calogan) == "calogan" and np.array_equal(read_showers(calogan).flat(), back.flat())
    with pytest.raises(PrunelabError, match="layout 'root'"):
        write_showers(tmp_path / "x.h5", s, layout="root")


def test_challenge_layout_errors_name_the_file_key_and_value(tmp_path):
    ok = dict(incident_energies=np.full((4, 1), 1000.0), showers=np.zeros((4, 504)))
    assert len(read_showers(_raw(tmp_path / "ok.h5", **ok))) == 4
    with pytest.raises(PrunelabError, match=r"missing\.h5: missing key 'showers' \(a CaloChallenge file"):
        read_showers(_raw(tmp_path / "missing.h5", incident_energies=ok["incident_energies"]))
    with pytest.raises(PrunelabError, match=r"ds1\.h5: key 'showers' has shape \(4, 368\), expected \(4, 504\)"):
        read_showers(_raw(tmp_path / "ds1.h5", incident_energies=ok["incident_energies"], showers=np.zeros((4, 368))))
    with pytest.raises(PrunelabError, match=r"rows\.h5: key 'showers' has shape \(5, 504\), expected \(4, 504\)"):
        read_showers(_raw(tmp_path / "rows.h5", incident_energies=ok["incident_energies"], showers=np.zeros((5, 504))))
    bad = ok["showers"].copy()
    bad[2, 100] = -1.5
    with pytest.raises(PrunelabError, match=r"negative\.h5: key 'showers' holds -1\.5 at event 2"):
        read_showers(_raw(tmp_path / "negative.h5", incident_energies=ok["incident_energies"], showers=bad))
    zero = ok["incident_energies"].copy()
    zero[1] = 0
    with pytest.raises(PrunelabError, match=r"zero\.h5: key 'incident_energies' holds 0\.0 at event 1"):
        read_showers(_raw(tmp_path / "zero.h5", incident_energies=zero, showers=ok["showers"]))
    nan = ok["incident_energies"].copy()
    nan[3] = np.nan
    with pytest.raises(PrunelabError, match=r"nan\.h5: key 'incident_energies' holds nan at event 3"):
        read_showers(_raw(tmp_path / "nan.h5", incident_energies=nan, showers=ok["showers"]))
    with pytest.raises(PrunelabError, match=r"other\.h5: neither a CaloGAN file .* its keys are images"):
        read_showers(_raw(tmp_path / "other.h5", images=np.zeros(3)))


# --------------------------------------------------------------------------
# High-level features
# --------------------------------------------------------------------------


def _one_shower(deposits: dict, energy_gev: float = 10.0) -> Showers:
    layers = [np.zeros((1, *layer.shape), dtype=np.float32) for layer in CALORIMETER.layers]
    for (layer, i, j), e in deposits.items():
        layers[layer][0, i, j] = e
    return Showers(np.array([energy_gev]), tuple(layers), np.zeros((1, 3), dtype=np.float32))


def test_high_level_features_of_hand_made_showers():
    cx1, cy1 = CALORIMETER.layers[1].centres()
    _, cy0 = CALORIMETER.layers[0].centres()
    row = high_level_features(_one_shower({(1, 3, 7): 600.0, (0, 1, 10): 200.0, (0, 1, 12): 200.0})).iloc[0]
    assert list(row.index) == feature_names()
    assert row["E_layer_0"] == 400 and row["E_layer_1"] == 600 and row["E_layer_2"] == 0
    assert row["E_tot/E_inc"] == pytest.approx(1000 / 10_000)
    assert row["EC_x_1"] == pytest.approx(cx1[3]) and row["EC_y_1"] == pytest.approx(cy1[7])
    assert row["width_x_1"] == pytest.approx(0, abs=1e-6) and row["width_y_1"] == pytest.approx(0, abs=1e-6)
    # two equal deposits 2 cells (10 mm) apart in y: centre between them, width half their distance
    assert row["EC_y_0"] == pytest.approx((cy0[10] + cy0[12]) / 2) and row["width_y_0"] == pytest.approx(5.0)
    assert row["EC_x_0"] == pytest.approx(0.0) and row["width_x_0"] == pytest.approx(0.0, abs=1e-6)
    assert row["EC_x_2"] == 0 and row["width_x_2"] == 0 and row["sparsity_2"] == 1  # an empty layer
    assert row["sparsity_0"] == pytest.approx(1 - 2 / 288) and row["sparsity_1"] == pytest.approx(1 - 1 / 144)


def test_high_level_widths_agree_with_the_shower_shapes():
    from prunelab.hep.shapes import shower_shapes

    s = simulate("gamma", 200, seed=5)
    ours, theirs = high_level_features(s), shower_shapes(s)  # two implementations of the energy-weighted RMS
    for i in range(3):
        for axis in "xy":
            assert np.allclose(ours[f"width_{axis}_{i}"], theirs[f"width_{axis}_{i}"], rtol=1e-6, atol=1e-6)
        assert np.allclose(ours[f"E_layer_{i}"], theirs[f"E_{i}"], rtol=1e-6)
        assert np.allclose(ours[f"sparsity_{i}"], 1 - theirs[f"occupancy_{i}"])


# --------------------------------------------------------------------------
# Separation power
# --------------------------------------------------------------------------


def test_separation_power_by_hand():
    assert separation_power([3, 1, 0], [3, 1, 0]) == 0
    assert separation_power([5, 0, 0], [0, 2, 7]) == pytest.approx(1.0)  # no overlap
    # [.5, .5, 0] vs [.5, 0, .5]: 0.5 * (0 + .25/.5 + .25/.5) = 0.5; unnormalised counts give the same
    assert separation_power([10, 10, 0], [1, 0, 1]) == pytest.approx(0.5)
    with pytest.raises(PrunelabError, match="two non-empty histograms"):
        separation_power([0, 0], [1, 1])
    edges = np.array([0.0, 1.0, 2.0])
    assert histogram([-5, 0.5, 1.5, 2.0, 9.0], edges).tolist() == [2, 3]  # beyond the edges: edge bins
    assert feature_bins("E_layer_1", np.array([0, 10.0, 100.0, 1000.0]))[-1] == pytest.approx(1000.0)
    steps = np.diff(np.log(feature_bins("E_layer_1", np.geomspace(1, 1e4, 500))))
    assert len(steps) == 40 and np.allclose(steps, steps[0])  # the challenge's 40 log-spaced bins
    assert len(feature_bins("EC_x_1", np.linspace(-5, 5, 300))) == 101


def test_separation_floor_is_what_chance_gives():
    rng = np.random.default_rng(0)
    edges = np.linspace(-3, 3, 101)
    values, floors = [], []
    for _ in range(200):
        a, b = histogram(rng.normal(size=600), edges), histogram(rng.normal(size=900), edges)
        values.append(separation_power(a, b))
        floors.append(separation_floor(a, b))
    assert np.mean(values) == pytest.approx(np.mean(floors), rel=0.06)


# --------------------------------------------------------------------------
# FPD and KPD against their definitions
# --------------------------------------------------------------------------


def test_frechet_distance_closed_forms():
    from scipy.linalg import sqrtm

    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 1.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([1.5, 2.0, 0.1])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)  # diagonal: |dμ|² + Σ (σ1 - σ2)²
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    direct = np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))  # scipy's matrix square root
    assert frechet_distance(np.zeros(4), c1, np.zeros(4), c2) == pytest.approx(direct, rel=1e-9)
    singular = np.diag([1.0, 0.0])  # a constant feature
    assert frechet_distance([0, 0], singular, [0, 0], singular) == pytest.approx(0, abs=1e-12)


def test_fpd_extrapolates_to_the_known_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6000, 3))
    y = rng.normal(loc=[0.3, 0.0, 0.0], scale=[1.0, 1.4, 1.0], size=(6000, 3))
    truth = 0.3**2 + 0.4**2  # |dμ|² + Σ (σ1 - σ2)²
    value, error = fpd(x, y, normalise=False, seed=0)
    assert abs(value - truth) < max(3 * error, 0.01) and error < 0.01
    same, same_error = fpd(x, rng.normal(size=(6000, 3)), normalise=False, seed=0)
    assert same <= 3 * same_error + 1e-4  # consistent with 0
    with pytest.raises(PrunelabError, match="FPD subsample sizes"):
        fpd(x[:20], y[:20])


def test_kpd_matches_the_polynomial_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 2)), rng.normal(size=(5, 2))
    for degree in (3, 4):
        k = lambda a, b: (a @ b / 2 + 1) ** degree  # noqa: E731 - the kernel, pair by pair
        brute = (sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
                 + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
                 - 2 * sum(k(a, b) for a in x for b in y) / 35)
        assert mmd_squared(x, y, degree) == pytest.approx(brute)
    # one dimension, kernel (xy + 1)^k = Σ_j C(k, j) (xy)^j: MMD² = Σ_j C(k, j) Δm_j², here between μ + U(-1, 1)
    # and U(-1, 1) (moments μ, μ² + 1/3, μ³ + μ, μ⁴ + 2μ² + 1/5 against 0, 1/3, 0, 1/5)
    mu = 0.3
    dm = np.array([mu, mu**2, mu**3 + mu, mu**4 + 2 * mu**2])
    for degree, weights in ((3, [3, 3, 1, 0]), (4, [4, 6, 4, 1])):
        truth = float(np.dot(weights, dm**2))
        value, error = kpd(rng.uniform(-1, 1, size=(8000, 1)) + mu, rng.uniform(-1, 1, size=(8000, 1)),
                           normalise=False, batch_size=2000, degree=degree, seed=0)
        assert value == pytest.approx(truth, abs=max(3 * error, 0.02 * truth)) and error < 0.2 * truth
    same, same_error = kpd(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)), seed=0, batch_size=1000)
    assert abs(same) <= 3 * same_error
    with pytest.raises(PrunelabError, match="KPD batch size"):
        kpd(x, y, batch_size=6)


# --------------------------------------------------------------------------
# Energy ranges and the AUC interval
# --------------------------------------------------------------------------


def test_energy_ranges():
    masks = dict(energy_masks(np.array([1.0, 9.99, 10.0, 59.0, 100.0, 100.5]), (1, 10, 30, 60, 100)))
    assert list(masks) == ["all", "1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"]
    assert masks["1-10 GeV"].tolist() == [True, True, False, False, False, False]
    assert masks["60-100 GeV"].tolist() == [False, False, False, False, True, False]  # the top edge included
    assert default_energy_edges(np.array([2.0, 90.0])) == (1.0, 10.0, 30.0, 60.0, 100.0)
    assert default_energy_edges(np.array([0.256, 4194.0])) == (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    with pytest.raises(PrunelabError, match="increasing, positive edges"):
        energy_masks(np.ones(3), (10, 1))


def test_auc_interval_against_sklearn_and_delong():
    from sklearn.metrics import roc_auc_score

    from prunelab.hep.fidelity import delong_interval

    rng = np.random.default_rng(4)
    labels = np.r_[np.ones(800), np.zeros(800)]
    scores = np.round(np.r_[rng.normal(0.5, 1, 800), rng.normal(0, 1, 800)], 1)  # with ties
    auc, low, high = auc_interval(labels, scores, seed=0)
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    _, d_low, d_high = delong_interval(labels, scores)  # an independent, analytic interval
    assert low == pytest.approx(d_low, abs=0.01) and high == pytest.approx(d_high, abs=0.01)


# --------------------------------------------------------------------------
# Planted answers: nothing to find, and a planted change
# --------------------------------------------------------------------------


def test_two_samples_of_the_simulator_are_indistinguishable():
    ev = evaluate(simulate("eplus", 1000, seed=11), simulate("eplus", 1000, seed=12), classifier_settings=FAST)
    overall = ev.separation[ev.separation["energy_range"] == "all"]
    assert len(overall) == 19 and (overall["separation_power"] < 2 * overall["floor"]).all()
    assert overall["separation_power"].max() < 0.05
    for kind in ("low-level", "high-level"):
        low, high = ev.classifiers[kind]["auc_interval"]
        assert low < 0.5 < high, (kind, ev.classifiers[kind]["auc"])
        assert ev.classifiers[kind]["jsd"] < 0.05  # below 0: calibration noise, no information
        assert ev.classifiers[kind]["test_events"] == 400 and ev.classifiers[kind]["train_events"] == 1200
    first = ev.distances.iloc[0]
    assert first["energy_range"] == "all"
    assert first["fpd"] <= 3 * first["fpd_error"] + 1e-4 and abs(first["kpd"]) <= 3 * first["kpd_error"]
    assert first["fpd_reference_split"] >= 0 and first["kpd_reference_split_error"] > 0  # halves of 500
    ranges = [row["energy_range"] for row in ev.classifiers["high-level"]["by_energy"]]
    assert ranges == ["1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"]


def _scaled_layer(showers: Showers, layer: int, factor: float) -> Showers:
    layers = list(showers.layers)
    layers[layer] = layers[layer] * np.float32(factor)
    return Showers(showers.energy, tuple(layers), showers.overflow, showers.particle)


def test_a_planted_layer_energy_scale_is_found():
    reference = simulate("eplus", 1000, energy=50.0, seed=21)
    generated = _scaled_layer(simulate("eplus", 1000, energy=50.0, seed=22), 1, 1.1)
    ev = evaluate(reference, generated, classifier_settings=FAST)
    sep = ev.separation[ev.separation["energy_range"] == "all"].set_index("feature")
    # E_1 moves by 10 % against a spread of about as much; E_tot/E_inc by 8 % against a 1 % resolution
    assert sep.loc["E_layer_1", "separation_power"] > 10 * sep.loc["E_layer_1", "floor"]
    assert sep.loc["E_tot/E_inc", "separation_power"] > 0.9
    assert sep.loc["E_layer_0", "separation_power"] < 2 * sep.loc["E_layer_0", "floor"]  # untouched
    assert sep.loc["width_x_1", "separation_power"] < 2 * sep.loc["width_x_1", "floor"]  # a scale keeps shapes
    assert ev.classifiers["high-level"]["auc_interval"][0] > 0.9
    assert ev.classifiers["low-level"]["auc_interval"][0] > 0.7
    first = ev.distances.iloc[0]
    assert first["fpd"] > 10 * first["fpd_error"] and first["kpd"] > 10 * first["kpd_error"]
    # far beyond what chance gives between two halves of the reference
    assert first["fpd"] > 10 * (first["fpd_reference_split"] + first["fpd_reference_split_error"])
    assert first["kpd"] > 10 * (first["kpd_reference_split"] + first["kpd_reference_split_error"])


def test_a_shower_moved_by_one_cell_is_found_in_every_energy_range():
    reference = simulate("gamma", 1200, seed=31)
    moved = simulate("gamma", 1200, seed=32)
    layers = list(moved.layers)
    layers[1] = np.roll(layers[1], 1, axis=1)  # one 40 mm cell along x in layer 1
    moved = Showers(moved.energy, tuple(layers), moved.overflow, moved.particle)
    ev = evaluate(reference, moved, classifiers=())
    assert ev.classifiers == {}
    ec = ev.separation[ev.separation["feature"] == "EC_x_1"].set_index("energy_range")["separation_power"]
    assert list(ec.index) == ["all", "1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"] and (ec > 0.8).all()
    widths = ev.separation[ev.separation["feature"].isin(["width_x_1", "EC_y_1", "E_layer_1"])]
    assert (widths["separation_power"] < 2 * widths["floor"]).all()  # the rest of the shower is unchanged


def test_classifier_is_deterministic_and_checks_its_input():
    rng = np.random.default_rng(6)
    x_ref, x_gen = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(280, 5)).astype(np.float32)
    energies = (rng.uniform(1, 100, 300), rng.uniform(1, 100, 280))
    first = classifier_test(x_ref, x_gen, *energies, (1, 100), FAST)
    again = classifier_test(x_ref, x_gen, *energies, (1, 100), FAST)
    assert first == again and first["showers_per_side"] == 280  # equal numbers per side
    assert first["train_events"] + first["validation_events"] + first["test_events"] == 560
    with pytest.raises(PrunelabError, match="showers per side leave"):
        classifier_test(x_ref[:20], x_gen[:20], energies[0][:20], energies[1][:20], (1, 100), FAST)
    with pytest.raises(PrunelabError, match="classifier setting epochs=0"):
        ClassifierSettings(epochs=0)


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def test_calo_evaluate_command(tmp_path):
    from typer.testing import CliRunner

    from prunelab.hep.cli import calo_app

    runner = CliRunner()
    ref, gen = tmp_path / "ref.h5", tmp_path / "gen.h5"
    r = runner.invoke(calo_app, ["generate", "-p", "eplus", "-n", "400", "-o", str(ref), "--seed", "1",
                                 "--layout", "calochallenge"])
    assert r.exit_code == 0, r.output
    write_showers(gen, simulate("eplus", 400, seed=2))  # the CaloGAN layout on the other side
    out, numbers = tmp_path / "eval.html", tmp_path / "eval.json"
    r = runner.invoke(calo_app, ["evaluate", str(ref), str(gen), "-o", str(out), "--json", str(numbers),
                                 "--hidden", "32", "--epochs", "3", "--energy-bins", "1,50,100"])
    assert r.exit_code == 0, r.output
    assert "low-level" in r.output and "separation power" in r.output and "1-50 GeV" in r.output
    page = out.read_text()
    assert page.count("<img") == 2 and "Classifier tests" in page and "Fréchet and kernel physics distances" in page
    data = json.loads(numbers.read_text())
    assert data["events"] == [400, 400] and data["energy_edges_GeV"] == [1.0, 50.0, 100.0]
    assert {row["energy_range"] for row in data["separation_power"]} == {"all", "1-50 GeV", "50-100 GeV"}
    assert set(data["classifiers"]) == {"low-level", "high-level"}
    assert data["classifiers"]["low-level"]["inputs"] == 505 and data["settings"]["classifier"]["hidden"] == [32]
    r = runner.invoke(calo_app, ["evaluate", str(ref), str(gen), "--energy-bins", "1,ten"])
    assert isinstance(r.exception, PrunelabError) and "--energy-bins" in str(r.exception)
    r = runner.invoke(calo_app, ["evaluate", str(ref), str(tmp_path / "none.h5")])
    assert isinstance(r.exception, PrunelabError) and "no such file" in str(r.exception)
