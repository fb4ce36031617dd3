"""Calorimeter datasets, models, binary metrics in evaluations, the calo CLI and the per-energy report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import prunelab
from prunelab import DataSource, PrunelabError, build_model, evaluate, load_dataset
from prunelab.hep import simulate, tasks as calo
from prunelab.hep.io import read_showers
from prunelab.pruning import prune

from .conftest import run_cli_here


@pytest.fixture()
def small_calo(monkeypatch, tmp_path):
    monkeypatch.setattr(calo, "TRAIN_PER_PARTICLE", 400)
    monkeypatch.setattr(calo, "TEST_PER_PARTICLE", 200)
    return DataSource(data_dir=tmp_path, download=False)


def test_cell_dataset_layout_labels_and_energy_bins(small_calo, tmp_path):
    data = load_dataset("calo_eplus_gamma", source=small_calo)
    assert data.input_shape == (calo.CELL_FEATURES,) == (507,)
    assert data.class_names == ("gamma", "eplus")
    assert len(data.train) + len(data.validation) == 800 and len(data.test) == 400
    assert np.bincount(data.test.y.numpy()).tolist() == [200, 200]
    bins = data.attributes["incident energy"]
    assert bins.shape == (400,) and set(bins) <= {"1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"}
    cached = list((tmp_path / "calo").glob("*.npz"))
    assert len(cached) == 1
    again = load_dataset("calo_eplus_gamma", source=small_calo)
    assert torch.equal(again.test.x, data.test.x)


def test_cell_features_are_the_images_then_layer_energies():
    s = simulate("eplus", 5, seed=0)
    x = calo.cell_features(s)
    assert np.allclose(x[:, :288], np.log1p(s.layers[0].reshape(5, -1)))
    assert np.allclose(x[:, 288:432], np.log1p(s.layers[1].reshape(5, -1)))
    assert np.allclose(x[:, 504:], np.log1p(s.layer_energies), rtol=1e-5)


def test_shape_dataset_is_the_same_events_standardised_per_column(small_calo):
    cells = load_dataset("calo_eplus_piplus", source=small_calo)
    shapes = load_dataset("calo_eplus_piplus_shapes", source=small_calo)
    assert torch.equal(cells.test.y, shapes.test.y)
    assert np.array_equal(cells.attributes["incident energy"], shapes.attributes["incident energy"])
    columns = torch.cat([shapes.train.x, shapes.validation.x]).numpy()
    assert np.abs(columns.mean(axis=0)).max() < 0.35  # per-column scaling (a single global scale would not)
    assert shapes.input_shape == (22,)


def test_models_build_train_prune_and_refuse_wrong_inputs(small_calo):
    data = load_dataset("calo_eplus_gamma", source=small_calo)
    model = build_model("calo_densenet", data.input_shape, 2, seed=0)
    again = build_model("calo_densenet", data.input_shape, 2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert model(data.test.x[:7]).shape == (7, 2)
    result = prune(model, prunelab.pruning.PruningConfig(method="magnitude", scope="global", amount=0.5))
    assert result.report.sparsity == pytest.approx(0.5, abs=0.01)
    with pytest.raises(PrunelabError, match="takes the calorimeter's 507 cell features"):
        build_model("calo_densenet", (1, 8, 8), 2)
    mlp = build_model("shower_shape_mlp", (22,), 2, seed=0)
    assert mlp(torch.zeros(3, 22)).shape == (3, 2)


def test_binary_evaluation_has_auc_and_rejection_matching_sklearn(small_calo):
    data = load_dataset("calo_eplus_piplus_shapes", source=small_calo)
    model = build_model("shower_shape_mlp", data.input_shape, 2, seed=0)
    prunelab.train(model, data, prunelab.TrainConfig(iterations=200), seed=0)
    ev = evaluate(model, data.test, data.class_names)
    model.eval()
    with torch.no_grad():
        prob = torch.softmax(model(data.test.x), dim=1)[:, 1].numpy()
    assert ev.roc_auc == pytest.approx(roc_auc_score(data.test.y.numpy(), prob), abs=1e-6)
    assert ev.roc_auc > 0.95  # e+ vs pi+ is easy: pions leave a third of their energy, deeper and wider
    assert set(ev.rejection) == {0.6, 0.7, 0.8, 0.9, 0.95, 0.99}
    stored = ev.to_dict()
    assert stored["roc_auc"] == ev.roc_auc and set(stored["rejection"]) == {"0.6", "0.7", "0.8", "0.9", "0.95", "0.99"}
    ten = evaluate(build_model("lenet_300_100", (4,), 10), prunelab.Split(torch.zeros(5, 4), torch.arange(5)),
                   tuple(str(i) for i in range(10)))
    assert ten.roc_auc is None and "roc_auc" not in ten.to_dict()


def test_calogan_files_are_read_from_the_mirror(tmp_path, monkeypatch):
    from prunelab.hep.io import write_showers

    mirror = tmp_path / "mirror" / "calogan"
    write_showers(mirror / "eplus.hdf5", simulate("eplus", 50, seed=1))
    write_showers(mirror / "gamma.hdf5", simulate("gamma", 40, seed=2))
    source = DataSource(data_dir=tmp_path / "cache", mirror=tmp_path / "mirror", download=False)
    data = load_dataset("calogan_eplus_gamma", source=source)
    assert len(data.test) == 18 and len(data.train) + len(data.validation) == 72
    with pytest.raises(PrunelabError, match="piplus.hdf5 not found"):
        load_dataset("calogan_eplus_piplus", source=source)


def test_calo_cli_generate_and_shapes(tmp_path):
    out = tmp_path / "eplus.h5"
    proc = run_cli_here("calo", "generate", "--particle", "eplus", "-n", "300", "-o", str(out), "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    assert "per second" in proc.stdout
    showers = read_showers(out)
    assert showers.particle == "eplus" and len(showers) == 300
    reference = simulate("eplus", 300, seed=4)
    assert np.array_equal(showers.layers[1], reference.layers[1])
    csv = tmp_path / "shapes.csv"
    proc = run_cli_here("calo", "shapes", str(out), "--csv", str(csv))
    assert proc.returncode == 0, proc.stderr
    assert "occupancy_1" in proc.stdout and "300 events" in proc.stdout
    assert len(csv.read_text().splitlines()) == 301
    for args, needle in [(["generate", "-p", "muon", "-n", "3", "-o", str(tmp_path / "m.h5")], "unknown particle 'muon'"),
                         (["generate", "-p", "eplus", "-n", "3", "-o", str(tmp_path)], "is a directory"),
                         (["shapes", str(tmp_path / "nothing.h5")], "no such file")]:
        proc = run_cli_here("calo", *args)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_gradient_boosted_baseline_on_shower_shapes(small_calo):
    from prunelab.hep.baselines import gradient_boosted_trees

    data = load_dataset("calo_eplus_piplus_shapes", source=small_calo)
    result = gradient_boosted_trees(data, seed=0)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(data.test.y.numpy(), result["scores"]))
    assert result["roc_auc"] > 0.95
    with pytest.raises(PrunelabError, match="the baseline is for two"):
        gradient_boosted_trees(load_dataset("digits"))


def test_energy_regression_dataset_trains_and_reports_resolution(small_calo):
    data = load_dataset("calo_energy", source=small_calo)
    assert data.task == "regression" and data.num_classes == 1 and data.class_names == ()
    assert data.train.y.dtype == torch.float32
    # targets are standardised with the training split's statistics; evaluation undoes it
    energies = data.test.y.double() * data.test.target_std + data.test.target_mean
    assert float(energies.min()) >= 1.0 and float(energies.max()) <= 100.0
    model = build_model("calo_densenet", data.input_shape, data.num_classes, seed=0)
    result = prunelab.train(model, data, prunelab.TrainConfig(iterations=150, eval_every=75), seed=0)
    assert {"val_loss", "val_rmse"} <= set(result.curve[-1])
    ev = evaluate(model, data.test, data.class_names)
    model.eval()  # batch norm with its running statistics, as evaluate() does
    with torch.no_grad():
        pred = model(data.test.x)[:, 0].double() * data.test.target_std + data.test.target_mean
    ratio = (pred / energies).numpy()
    assert ev.rmse == pytest.approx(float(((pred - energies) ** 2).mean().sqrt()), rel=1e-6)
    assert ev.bias == pytest.approx(ratio.mean() - 1, abs=1e-9)
    assert ev.resolution == pytest.approx(ratio.std(ddof=1), rel=1e-9)
    assert ev.r2 > 0.5  # the deposited energy tracks the incident energy even after 150 steps
    assert sum(b["events"] for b in ev.per_bin) == len(data.test)
    stored = ev.to_dict()
    assert stored["task"] == "regression" and "accuracy" not in stored


def test_regression_planted_answer():
    """A linear target learnt by a linear model: R² near 1 and bias near 0, against a hand computation."""
    from prunelab import RawData, build_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5)).astype(np.float32)
    y = 50 + 10 * x[:, 0] - 5 * x[:, 3] + rng.normal(0, 1.0, 2000)
    data = build_dataset("planted", RawData(x[:1500], y[:1500], x[1500:], y[1500:], task="regression"))
    model = torch.nn.Linear(5, 1)
    prunelab.train(model, data, prunelab.TrainConfig(iterations=1500, lr=0.01, batch_size=50), seed=0)
    ev = evaluate(model, data.test, data.class_names)
    assert ev.rmse == pytest.approx(1.0, abs=0.15)  # the planted noise
    assert ev.r2 == pytest.approx(1 - 1.0 / 125.0, abs=0.01)  # 1 - noise variance / target variance
    assert abs(ev.bias) < 0.01
    with pytest.raises(PrunelabError, match="regression targets must be finite"):
        build_dataset("bad", RawData(x[:10], np.r_[np.nan, y[1:10]], x[10:20], y[10:20], task="regression"))


CALO_STUDY = """
[study]
name = "calo"
store = "STORE"
seeds = [0, 1]

[task]
dataset = "DATASET"
model = "calo_densenet"

[training]
iterations = 20
batch_size = 32

[branches.ticket]
technique = "global_unstructured"
rate = 0.5
rounds = 1

[branches.random]
control = "random_pruning"
of = "ticket"
"""


@pytest.fixture()
def calo_study(small_calo, tmp_path, monkeypatch):
    from prunelab.caches import CACHES
    from prunelab.spec import load_spec
    from prunelab.study import build_study

    monkeypatch.setenv("PRUNELAB_DATA", str(small_calo.cache_dir))

    def run(dataset: str):
        spec = tmp_path / f"{dataset}.toml"
        spec.write_text(CALO_STUDY.replace("STORE", str(tmp_path / dataset)).replace("DATASET", dataset))
        tree = build_study(load_spec(spec))
        assert tree.experiment.run().ok
        return tree

    yield run
    for name in ("calo_eplus_gamma", "calo_energy"):  # sized by the fixture: keep them out of later tests
        CACHES.datasets.pop(name, None)


def test_calo_study_summary_has_auc_and_report_shows_energy_bins(calo_study, tmp_path):
    from prunelab.report import build_report
    from prunelab.study import summarize

    tree = calo_study("calo_eplus_gamma")
    rows = summarize(tree)
    assert all(r.auc is not None and 0 <= r.auc[0] <= 1 for r in rows) and rows[0].metric == "accuracy"
    page = build_report(tree.experiment.store.root, tmp_path / "calo.html", tmp_path / "csv").read_text()
    assert "Group fairness: accuracy by incident energy" in page
    assert "ROC AUC and background rejection vs weights remaining" in page
    binary = (tmp_path / "csv" / "binary.csv").read_text().splitlines()
    assert binary[0].startswith("branch,remaining,seeds,roc_auc")
    groups = (tmp_path / "csv" / "groups.csv").read_text()
    assert "1-10 GeV" in groups and "60-100 GeV" in groups


def test_regression_study_summarises_resolution_and_reports_it_per_bin(calo_study, tmp_path):
    from prunelab.report import build_report
    from prunelab.study import summarize

    tree = calo_study("calo_energy")
    rows = summarize(tree)
    assert {r.metric for r in rows} == {"resolution"} and {r.branch for r in rows} == {"dense", "ticket", "random"}
    assert all(r.auc is None and r.mean > 0 for r in rows)
    page = build_report(tree.experiment.store.root, tmp_path / "r.html", tmp_path / "csv").read_text()
    for title in ("Resolution vs weights remaining", "RMSE vs weights remaining",
                  "Who pays for sparsity: bias and resolution per target bin"):
        assert title in page
    assert page.count("data:image/png;base64,") == 3
    resolution = pd.read_csv(tmp_path / "csv" / "resolution.csv")
    dense = resolution[resolution.branch == "dense"]["test.resolution"].iloc[0]
    assert dense == pytest.approx(np.mean([r.mean for r in rows if r.branch == "dense"]))
    bins = pd.read_csv(tmp_path / "csv" / "bins.csv")
    assert bins.groupby(["branch", "seed", "round"]).size().eq(5).all()  # five quintile bins per state
    # read from the index's summaries: the per-bin tables the manifests hold
    dense_state = next(r for r in rows if r.branch == "dense").states[0]
    stored = tree.experiment.store.manifest(dense_state)["metrics"]["test"]["per_bin"]
    mine = bins[(bins.branch == "dense") & (bins.seed == 0)].sort_values("bin")
    assert sorted(mine["resolution"]) == pytest.approx(sorted(b["resolution"] for b in stored))
