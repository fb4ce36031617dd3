"""The shower GAN: structure (energy conservation, threshold), fidelity metrics against planted answers,
training as recipes (determinism, checkpoints, pruning the generator only), the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prunelab.errors import PrunelabError
from prunelab.hep.fidelity import delong_interval, fidelity, normalised_wasserstein, two_sample_auc
from prunelab.hep.gan import THRESHOLD_MEV, GANConfig
from prunelab.hep.generation import sample
from prunelab.hep.simulator import Showers, simulate
from prunelab.tasks.models import build_model

TINY = {"latent": 4, "hidden": 16, "critic_hidden": 16}

pytestmark = pytest.mark.usefixtures("one_openmp_thread")  # the same AUCs, a fraction of the time


def tiny_gan(seed: int = 0):
    return build_model("calogan", (507,), 1, seed=seed, **TINY)


# ---------------------------------------------------------------- structure


def test_generated_showers_conserve_energy_and_respect_the_threshold():
    model = tiny_gan()
    energies = np.array([1.0, 5.0, 20.0, 50.0, 100.0] * 40)
    showers = sample(model, energies, seed=3)
    cells = showers.flat()
    assert (cells >= 0).all() and ((cells == 0) | (cells >= THRESHOLD_MEV * (1 - 1e-6))).all()
    assert (cells == 0).any()  # the threshold empties cells: sparsity exists
    # the deposit equals r * E with r = 2 sigmoid(head): recompute r from the head independently
    g = model.generator
    with torch.no_grad():
        e = torch.as_tensor(energies, dtype=torch.float32)
        from prunelab.hep.gan import condition
        from prunelab.hep.generation import noise_generator as _rng

        noise = torch.randn(len(e), g.latent, generator=_rng(3, 2, 0))
        x = torch.cat([noise, condition(e)], 1)
        hidden, prev = [], None
        for stream in g.streams:
            h, _ = stream(x if prev is None else torch.cat([x, prev], 1))
            hidden.append(h)
            prev = h
        r = 2 * torch.sigmoid(g.energy(torch.cat([x, *hidden], 1))[:, -1]).numpy()
    deposited = showers.layer_energies.sum(1) + showers.overflow.sum(1)
    requested = 1000 * energies * r
    empty_layer = (showers.layer_energies == 0).any(axis=1)  # only a layer whose whole share is < 1 MeV is empty
    np.testing.assert_allclose(deposited[~empty_layer], requested[~empty_layer], rtol=2e-4)
    assert (np.abs(deposited - requested) <= 3 * THRESHOLD_MEV + 2e-4 * requested).all()
    # same seed: same showers; another seed: others
    again = sample(model, energies, seed=3)
    assert np.array_equal(again.flat(), cells)
    assert not np.array_equal(sample(model, energies, seed=4).flat(), cells)


def test_a_layer_holding_the_threshold_keeps_its_largest_cell():
    from prunelab.hep.gan import _deposit

    share = torch.softmax(torch.zeros(4, 72), dim=1)  # spread evenly: every cell far below 1 MeV
    share[:, 5] += 1e-3
    share = share / share.sum(1, keepdim=True)
    out = _deposit(share, torch.tensor([[0.9], [1.0], [7.0], [5000.0]]))
    assert out[0].sum() == 0  # under the threshold in all: empty
    assert out[1, 5] == pytest.approx(1.0) and (out[1] > 0).sum() == 1  # the largest cell takes it all
    assert out[2, 5] == pytest.approx(7.0) and (out[2] > 0).sum() == 1
    assert (out[3] > 0).all() and out[3].sum() == pytest.approx(5000.0)  # 69 MeV a cell: all kept


def test_calogan_refuses_ordinary_training_and_wrong_inputs():
    model = tiny_gan()
    with pytest.raises(PrunelabError, match="calo train"):
        model(torch.ones(2, 507))
    with pytest.raises(PrunelabError, match="calo_showers"):
        build_model("calogan", (10,), 1)


# ---------------------------------------------------------------- fidelity against planted answers


def test_normalised_wasserstein_finds_a_planted_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 2, 40_000), rng.normal(0.5, 2, 40_000)  # W1 = 0.5, SD = 2: 0.25
    assert normalised_wasserstein(a, b) == pytest.approx(0.25, abs=0.02)
    assert normalised_wasserstein(np.ones(5), np.ones(7)) == 0.0
    assert normalised_wasserstein(np.zeros(5), np.r_[np.zeros(3), np.ones(3)]) > 0


def test_delong_auc_matches_sklearn_and_its_interval_covers_chance():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + 0.8 * y
    auc, low, high = delong_interval(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert low < auc < high
    covered = 0
    for rep in range(200):  # scores independent of the labels: the 95 % interval covers 0.5 about 95 % of the time
        y = rng.integers(0, 2, 300)
        _, low, high = delong_interval(y, rng.normal(size=300))
        covered += low <= 0.5 <= high
    assert 0.89 <= covered / 200 <= 0.99


@pytest.fixture(scope="module")
def two_simulations():
    return simulate("eplus", 3000, seed=11), simulate("eplus", 3000, seed=12)


def test_fidelity_of_the_simulator_against_itself_is_at_chance(two_simulations):
    a, b = two_simulations
    fid = fidelity(a, b)
    s = fid.summary()
    assert 0.44 < s["auc"] < 0.56 and s["auc_interval"][0] < 0.5 < s["auc_interval"][1]
    assert s["worst_wasserstein"] < 0.1  # the same physics: every observable within a tenth of its spread
    overall = fid.table[fid.table["energy_bin"] == "all"]
    assert len(overall) == 22 and set(fid.table["energy_bin"]) == {"all", "1-10 GeV", "10-30 GeV", "30-60 GeV",
                                                                   "60-100 GeV"}
    assert abs(s["response_bias"]) < 0.005


def test_fidelity_finds_a_planted_change_in_the_first_layer(two_simulations):
    a, b = two_simulations
    moved = 0.3 * b.layers[0]  # 70 % of layer 0's energy moved into layer 1, spread as layer 1 already is
    share = b.layers[1] / np.maximum(b.layers[1].sum(axis=(1, 2), keepdims=True), 1e-9)
    layer1 = b.layers[1] + share * (b.layers[0] - moved).sum(axis=(1, 2), keepdims=True)
    planted = Showers(b.energy, (moved, layer1, b.layers[2]), b.overflow, b.particle)
    fid = fidelity(a, planted)
    s = fid.summary()
    assert s["auc"] > 0.95 and s["auc_interval"][0] > 0.9
    assert s["worst_observable"] in {"E_0", "f_0", "depth", "depth_width"}  # all move with layer 0's share
    overall = fid.table[fid.table["energy_bin"] == "all"].set_index("observable")
    assert overall.loc["f_0", "wasserstein"] > 1.0 and overall.loc["E_tot", "wasserstein"] < 0.1  # energy kept
    assert abs(s["response_bias"]) < 0.005


def test_two_sample_test_sees_showers_right_for_another_energy(two_simulations):
    a, b = two_simulations
    swapped = Showers(b.energy[::-1].copy(), b.layers, b.overflow, b.particle)  # shapes fine, energies scrambled
    assert two_sample_auc(a, swapped)["auc"] > 0.9


# ---------------------------------------------------------------- training as recipes


def _cfg(**kw):
    base = dict(iterations=6, batch_size=16, critic_steps=1, curve_every=2, evaluate_showers=0)
    return GANConfig(**{**base, **kw})


def test_gan_training_is_deterministic_and_checkpoints_equal_one_run(tmp_path):
    from prunelab.experiment import Experiment
    from prunelab.hep.gan_recipes import TrainGAN

    def run(store, stops):
        exp = Experiment(store)
        state = exp.root(dataset="calo_showers_eplus", model="calogan", seed=5, model_options=TINY)
        for stop in stops:
            state = state.then(TrainGAN(_cfg(), stop=stop))
        exp.run()
        return state.load()

    whole, split, again = run(tmp_path / "a", [6]), run(tmp_path / "b", [3, 6]), run(tmp_path / "c", [6])
    for name in whole.weights:
        assert torch.equal(whole.weights[name], split.weights[name]), name
        assert torch.equal(whole.weights[name], again.weights[name]), name
    for index, state in whole.optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(value, split.optimizer["state"][index][key])
    root = Experiment(tmp_path / "a").root(dataset="calo_showers_eplus", model="calogan", seed=5, model_options=TINY)
    assert any(not torch.equal(v, whole.weights[k]) for k, v in root_weights(root).items())  # it did train


def root_weights(root):
    return {k: v for k, v in root.recipe.spec().build(seed=5).state_dict().items()}


SPEC = """
name = "tiny"
dataset = "calo_showers_eplus"
seeds = [0]
checkpoint_every = 4
[model]
latent = 4
hidden = 16
critic_hidden = 16
[gan]
iterations = 8
batch_size = 16
critic_steps = 1
evaluate_showers = 300
[pruning]
rounds = 2
amount = 0.5
one_shot = [0.75]
[pruning.finetune]
iterations = 3
batch_size = 16
critic_steps = 1
evaluate_showers = 300
"""


@pytest.fixture(scope="module")
def gan_store(tmp_path_factory):
    from prunelab.hep.gan_study import build_gan_study, load_gan_spec

    root = tmp_path_factory.mktemp("gan")
    (root / "tiny.toml").write_text(SPEC)
    exp = build_gan_study(load_gan_spec(root / "tiny.toml"), root / "store")
    exp.run()
    return root, exp


def test_gan_study_prunes_the_generator_only_and_records_fidelity(gan_store):
    from prunelab.experiment.query import open_store
    from prunelab.hep.gan_study import gan_points

    root, exp = gan_store
    points = gan_points(open_store(root / "store")).set_index("label")
    assert set(points.index) == {"checkpoint 4", "checkpoint 8", "trained", "dense + fine-tune", "IMP round 1",
                                 "IMP round 2", "one-shot 0.75"}
    generator_weights = sum(p.numel() for n, p in tiny_gan().named_parameters()
                            if n.startswith("generator.") and n.endswith("weight"))
    for label, expected in (("IMP round 1", 0.5), ("IMP round 2", 0.75), ("one-shot 0.75", 0.75),
                            ("trained", 0.0), ("dense + fine-tune", 0.0)):
        snap = exp.store.load(points.loc[label, "hash"])
        assert all(name.startswith("generator.") for name in snap.masks), label
        pruned = sum(int((~m).sum()) for m in snap.masks.values())
        assert pruned / generator_weights == pytest.approx(expected, abs=1 / generator_weights + 1e-3), label
        assert points.loc[label, "sparsity"] == pytest.approx(pruned / generator_weights)
        model = snap.model()
        for name, keep in snap.masks.items():  # pruned weights really are zero after fine-tuning
            module, _, param = name.rpartition(".")
            assert not getattr(model.get_submodule(module), param)[~keep].any()
        assert 0.0 <= points.loc[label, "auc"] <= 1.0 and points.loc[label, "worst_wasserstein"] > 0
    rows = exp.store.listing()  # the listing shows a generator's two-sample AUC
    assert rows[points.loc["trained", "hash"]]["headline"] == f"c2st {points.loc['trained', 'auc']:.4f}"
    doc = exp.store.documents()["gan-study-tiny"]
    assert doc["format"] == 1 and len(doc["points"]) == 7


def test_gan_study_reruns_nothing_and_recomputes_exactly(gan_store):
    from prunelab.experiment.audit import recompute
    from prunelab.hep.gan_study import build_gan_study, load_gan_spec

    root, exp = gan_store
    again = build_gan_study(load_gan_spec(root / "tiny.toml"), root / "store")
    summary = again.run()
    assert summary.computed == []
    finetuned = [s for s in exp.states.values() if s.recipe.type_name == "FinetuneGAN"][0]
    result = recompute(exp.store, finetuned.hash)
    assert result.identical, result.differences


def test_calo_cli_samples_reports_and_compares_files(gan_store, tmp_path):
    from prunelab.cli import app
    from prunelab.hep.io import read_showers, write_showers

    root, _ = gan_store
    runner = CliRunner()
    out = tmp_path / "gen.h5"
    r = runner.invoke(app, ["calo", "sample", str(root / "store"), "-n", "300", "-o", str(out), "--seed", "2"])
    assert r.exit_code == 0, r.output
    showers = read_showers(out)
    assert len(showers) == 300 and showers.layers[0].shape == (300, 3, 96) and showers.particle == "eplus"
    assert (showers.energy >= 1).all() and (showers.energy <= 100).all()
    meta = json.loads(__import__("h5py").File(out)["/"].attrs["prunelab"])
    assert meta["generator"] == "prunelab.hep.gan" and len(meta["state"]) == 64

    r = runner.invoke(app, ["calo", "fidelity", str(root / "store"), "-o", str(tmp_path / "gan.html")])
    assert r.exit_code == 0, r.output
    assert "IMP" in r.output and "AUC" in r.output
    page = (tmp_path / "gan.html").read_text()
    assert page.count("<img") == 3 and "Fidelity against sparsity" in page

    r = runner.invoke(app, ["report", str(root / "store"), "-o", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    assert "Fidelity against sparsity" in (tmp_path / "report.html").read_text()

    write_showers(tmp_path / "ref.h5", simulate("eplus", 300, seed=1))
    r = runner.invoke(app, ["calo", "fidelity", str(out), "--reference", str(tmp_path / "ref.h5"),
                            "-o", str(tmp_path / "files.html")])
    assert r.exit_code == 0, r.output
    assert "two-sample AUC" in r.output and (tmp_path / "files.html").is_file()
    r = runner.invoke(app, ["calo", "fidelity", str(out)])
    assert isinstance(r.exception, PrunelabError) and "--reference" in str(r.exception)


def test_gan_spec_errors_name_the_key(tmp_path):
    from prunelab.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace('dataset = "calo_showers_eplus"', 'dataset = "mnist"'))
    r = CliRunner().invoke(app, ["calo", "train-gan", str(bad)])
    assert isinstance(r.exception, PrunelabError) and "calo_showers_eplus" in str(r.exception)
    bad.write_text(SPEC.replace("critic_steps = 1\nevaluate_showers = 300\n[pruning]",
                                "critic_steps = 0\nevaluate_showers = 300\n[pruning]"))
    r = CliRunner().invoke(app, ["calo", "train", str(bad)])
    assert isinstance(r.exception, PrunelabError) and "critic_steps" in str(r.exception)


def test_torch_shower_shapes_equal_the_numpy_definitions():
    from prunelab.hep.gan import shape_tensors
    from prunelab.hep.shapes import shower_shapes

    showers = simulate("gamma", 300, seed=4)
    expected = shower_shapes(showers)
    got = shape_tensors(torch.from_numpy(showers.flat().astype(np.float64)))
    assert len(got) == 11
    for name, values in got.items():
        np.testing.assert_allclose(values.numpy(), expected[name].to_numpy(), rtol=1e-6, atol=2e-3, err_msg=name)


def test_pareto_mask_keeps_generators_no_other_beats_on_sparsity_and_auc():
    import pandas as pd

    from prunelab.hep.gan_study import pareto_mask

    points = pd.DataFrame({
        "kind": ["checkpoint", "trained", "imp", "imp", "one_shot", "one_shot"],
        "sparsity": [0.0, 0.0, 0.5, 0.75, 0.5, 0.75],
        "auc": [0.55, 0.70, 0.68, 0.80, 0.72, 0.79],
    })
    # the checkpoint is no candidate; trained (0.70) is beaten by IMP 0.5 (sparser and lower AUC);
    # one-shot 0.5 is beaten by IMP 0.5; one-shot 0.75 beats IMP 0.75
    assert pareto_mask(points).tolist() == [False, False, True, False, False, True]
