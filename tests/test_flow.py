"""The shower flow (prunelab.hep.flow): the spline couplings invert and their log-determinant is the
Jacobian's, a conditional density is learned (planted answer), the shower coordinates round-trip,
training through the experiment tree is deterministic, and a flow study prunes every layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prunelab.errors import PrunelabError
from prunelab.hep.flow import CUT, ZERO_ZONE, CaloFlow, ConditionalFlow, FlowConfig, train_flow
from prunelab.hep.generation import sample
from prunelab.hep.simulator import simulate
from prunelab.hep.tasks import CELL_COUNTS, CELL_FEATURES

from .flow_helpers import tiny_flow_spec

TINY = {"hidden": 16, "blocks": 2, "bins": 4, "energy_hidden": 8, "energy_blocks": 2}


def _randomised(flow: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A flow whose couplings are not the identity (they start as it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return flow


def test_couplings_invert_and_their_log_determinant_is_the_jacobians():
    flow = _randomised(ConditionalFlow(features=5, context=2, hidden=8, bins=6, blocks=3, key=9)).double()
    x, c = torch.randn(7, 5, dtype=torch.float64) * 2, torch.randn(7, 2, dtype=torch.float64)

    def to_noise(row, context):
        z = row[None]
        for block in flow.blocks:
            z, _ = block(z, context[None])
        return z[0]

    total = torch.zeros(7, dtype=torch.float64)
    z = x
    for block in flow.blocks:
        z, ladj = block(z, c)
        total += ladj
    for i in range(7):  # independent: the determinant of the full Jacobian by autograd
        jac = torch.autograd.functional.jacobian(lambda r: to_noise(r, c[i]), x[i])
        assert total[i].item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-8)
    assert torch.allclose(flow.sample(c, z), x, atol=1e-7)
    expected = total - 0.5 * (z**2).sum(1) - 2.5 * math.log(2 * math.pi)
    assert torch.allclose(flow.log_prob(x, c), expected)


def test_a_conditional_flow_learns_a_planted_conditional_density():
    """x | c ~ N(2c, 0.5²) per coordinate, x₂ = x₁ + N(0, 0.1²): the trained flow's samples have those
    moments, and its mean log-likelihood approaches the true one."""
    torch.manual_seed(0)
    flow = ConditionalFlow(features=2, context=1, hidden=32, bins=8, blocks=3, key=3)
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)

    def draw(n, c=None):
        c = torch.rand(n, 1, generator=g) * 2 - 1 if c is None else c
        x1 = 2 * c[:, 0] + 0.5 * torch.randn(n, generator=g)
        return torch.stack([x1, x1 + 0.1 * torch.randn(n, generator=g)], 1), c

    for _ in range(500):
        x, c = draw(128)
        loss = -flow.log_prob(x, c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        c = torch.full((4000, 1), 0.5)
        s = flow.sample(c, torch.randn(4000, 2, generator=g))
        true_ll = -(math.log(2 * math.pi) + math.log(0.5 * 0.1) + 1.0)  # the entropy of the planted density
        x, c = draw(4000)
        assert flow.log_prob(x, c).mean().item() == pytest.approx(true_ll, abs=0.1)
    assert s[:, 0].mean().item() == pytest.approx(1.0, abs=0.05)
    assert s[:, 0].std().item() == pytest.approx(0.5, abs=0.05)
    assert (s[:, 1] - s[:, 0]).std().item() == pytest.approx(0.1, abs=0.02)


def _showers(n=200, seed=0):
    return simulate("eplus", n, seed=seed, energy=(1.0, 100.0))


def _tensors(showers):
    from prunelab.hep.gan import ShowerTensors

    return ShowerTensors.of(showers)


@pytest.mark.parametrize("hit_counts", [True, False])
def test_shower_coordinates_round_trip_with_empty_cells_layers_and_overflow(hit_counts):
    data = _tensors(_showers())
    flow = CaloFlow(**TINY, hit_counts=hit_counts)
    assert flow.energy_coordinates == (9 if hit_counts else 6)
    flow.fit_scaling(data.cells, data.overflow, data.energy, seed=0)
    from prunelab.hep.generation import noise_generator

    energy, voxels = flow.coordinates(data.cells, data.overflow, data.energy, noise_generator(0, 1, 0))
    cells, overflow = flow.decode(energy, voxels, data.energy)
    assert (data.cells == 0).any() and (data.overflow == 0).any()  # the sample has empty cells and overflows
    assert torch.equal(cells == 0, data.cells == 0) and torch.equal(overflow == 0, data.overflow == 0)
    assert torch.allclose(cells, data.cells, rtol=1e-4, atol=1e-3)
    assert torch.allclose(overflow, data.overflow, rtol=1e-4, atol=1e-3)
    raw = voxels * flow.voxel_scale + flow.voxel_shift  # empty cells sit in the zone, below the cut
    empty = data.cells == 0
    assert raw[empty].min() >= ZERO_ZONE[0] - 1e-5 and raw[empty].max() <= ZERO_ZONE[1] + 1e-5 < CUT
    assert raw[~empty].min() > CUT


def test_standardised_training_values_lie_inside_the_splines_and_generation_stays_in_their_range():
    """A rarely hit cell (most of layer 2) has a small spread: standardised by it alone, its hits would
    lie beyond the splines' ±5, where a coupling is the identity. Generated coordinates far out in the
    Gaussian tail are clipped to the training showers' range."""
    from prunelab.hep.generation import noise_generator

    data = _tensors(_showers())
    flow = CaloFlow(**TINY)
    flow.fit_scaling(data.cells, data.overflow, data.energy, seed=0)
    energy, voxels = flow.coordinates(data.cells, data.overflow, data.energy, noise_generator(0, 3, 0))
    rare = (data.cells > 0).float().mean(0)
    assert ((rare > 0) & (rare < 0.02)).any()  # cells hit in under 2 % of the showers are there
    assert energy.abs().max() <= 4 + 1e-4 and voxels.abs().max() <= 4 + 1e-4
    raw_energy, raw_voxels = flow.raw_coordinates(data.cells, data.overflow, data.energy, noise_generator(0, 3, 0))
    assert torch.equal(flow.voxel_high, raw_voxels.max(0).values)
    far = torch.full((len(data), flow.energy_coordinates), 50.0)
    cells, overflow = flow.decode(far, torch.full((len(data), 504), 50.0), data.energy)
    layer_2 = cells[:, sum(CELL_COUNTS[:2]):].sum(1)
    assert layer_2.max() <= math.exp(raw_energy[:, 2].max()) * (1 + 1e-5)
    assert (overflow <= torch.exp(raw_energy[:, -3:].max(0).values) * (1 + 1e-5)).all()
    assert (cells.sum(1) <= 1000 * data.energy * math.exp(raw_energy[:, 0].max()) * (1 + 1e-5)).all()


def test_decoding_keeps_each_layers_drawn_count_of_largest_cells():
    """Against a brute force: for a count n drawn for a layer, the kept cells are the n largest
    generated values of that layer, whatever the cut, and the layer holds its drawn energy."""
    flow = CaloFlow(**TINY)
    g = torch.Generator().manual_seed(4)
    n = 64
    counts = torch.stack([torch.randint(0, size + 1, (n,), generator=g) for size in CELL_COUNTS], 1)
    counts[:3] = torch.tensor(CELL_COUNTS)  # a full layer
    counts[3:6] = 0  # a layer given energy but no count: its likeliest cell, as without counts
    log_cells = torch.randn(n, sum(CELL_COUNTS), generator=g) * 2
    raw = torch.zeros(n, 9)
    raw[:, 0] = math.log(0.9)  # 90 % of 10 GeV deposited
    raw[:, 2] = math.log(5.0)  # 5 MeV in layer 2
    sizes = torch.tensor(CELL_COUNTS, dtype=torch.float32)
    raw[:, 3:6] = torch.logit((counts + 0.5) / (sizes + 1))
    raw[:, 6:] = ZERO_ZONE[0]  # no overflow
    cells, overflow = flow.decode((raw - flow.energy_shift) / flow.energy_scale,
                                  (log_cells - flow.voxel_shift) / flow.voxel_scale, torch.full((n,), 10.0))
    assert not overflow.any()
    start = 0
    for layer, size in enumerate(CELL_COUNTS):
        part, logs = cells[:, start:start + size], log_cells[:, start:start + size]
        for row in range(n):
            want = max(int(counts[row, layer]), 1)
            largest = set(sorted(range(size), key=lambda j: -float(logs[row, j]))[:want])
            assert set(torch.nonzero(part[row]).flatten().tolist()) == largest
        start += size
    assert torch.allclose(cells[:, sum(CELL_COUNTS[:2]):].sum(1), torch.full((n,), 5.0))
    assert torch.allclose(cells.sum(1), torch.full((n,), 9000.0))


def test_generated_showers_are_physical_and_reproducible():
    data = _tensors(_showers())
    flow = _randomised(CaloFlow(**TINY))
    flow.fit_scaling(data.cells, data.overflow, data.energy, seed=0)
    energies = np.geomspace(1, 100, 50)
    showers = sample(flow, energies, seed=3, batch=16)
    cells = showers.flat()
    assert np.isfinite(cells).all() and (cells >= 0).all() and (showers.overflow >= 0).all()
    deposited = cells.sum(1) / (1000 * energies)
    assert (deposited > 0).all() and (deposited < math.e + 1e-4).all()  # the response is bounded by construction
    again = sample(flow, energies, seed=3, batch=16)
    assert np.array_equal(again.flat(), cells)
    assert not np.array_equal(sample(flow, energies, seed=4, batch=16).flat(), cells)


def test_caloflow_refuses_ordinary_training_and_an_unfitted_density():

    model = CaloFlow(**TINY)
    with pytest.raises(PrunelabError, match="calo train"):
        model(torch.ones(2, 508))
    with pytest.raises(PrunelabError, match="never fitted"):
        model.log_prob(torch.ones(2, 504), torch.ones(2, 3), torch.ones(2), torch.Generator())
    from prunelab.hep.flow import caloflow

    with pytest.raises(PrunelabError, match="bins"):
        caloflow((CELL_FEATURES,), 1, bins=1)
    with pytest.raises(PrunelabError, match="hit_counts must be true or false, got 1"):
        caloflow((CELL_FEATURES,), 1, hit_counts=1)


def test_flow_training_is_deterministic_and_checkpoints_equal_one_run(tmp_path):
    from prunelab.experiment import Experiment
    from prunelab.hep.flow_recipes import TrainFlow

    config = FlowConfig(iterations=6, batch_size=32, curve_every=2, evaluate_showers=0)

    def run(store, stops):
        exp = Experiment(store)
        state = exp.root(dataset="calo_showers_eplus", model="caloflow", seed=5, model_options=TINY)
        for stop in stops:
            state = state.then(TrainFlow(config, stop=stop))
        exp.run()
        return state.load()

    whole, split = run(tmp_path / "a", [6]), run(tmp_path / "b", [3, 6])
    assert float(whole.weights["scaled"]) == 1.0  # standardisation fitted before the first step
    for name in whole.weights:
        assert torch.equal(whole.weights[name], split.weights[name]), name
    for index, state in whole.optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(value, split.optimizer["state"][index][key])
    curve = whole.metrics["flow_curve"]
    assert [p["iteration"] for p in curve] == [2, 4, 6]
    assert curve[-1]["learning_rate"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_flow_config_reads_the_device_like_classifier_training():
    assert FlowConfig(iterations=1, device="gpu").device == "cuda"
    with pytest.raises(Exception, match="device"):
        FlowConfig(iterations=1, device="tpu")
    if not torch.cuda.is_available():
        data = _tensors(_showers(50))
        with pytest.raises(PrunelabError, match="no CUDA device"):
            train_flow(CaloFlow(**TINY), data, FlowConfig(iterations=1, device="cuda"), seed=0, start=0, stop=1)


SPEC = tiny_flow_spec()


def test_a_flow_study_prunes_every_layer_and_keeps_pruned_weights_at_zero(tmp_path):
    from prunelab.experiment.query import open_store
    from prunelab.hep.gan_study import build_gan_study, gan_points, load_gan_spec

    (tmp_path / "tiny.toml").write_text(SPEC)
    spec = load_gan_spec(tmp_path / "tiny.toml")
    assert spec.generator == "caloflow" and isinstance(spec.pruning.finetune, FlowConfig)
    exp = build_gan_study(spec, tmp_path / "store")
    exp.run()
    points = gan_points(open_store(tmp_path / "store")).set_index("label")
    assert set(points.index) == {"checkpoint 4", "checkpoint 8", "trained", "dense + fine-tune", "IMP round 1",
                                 "one-shot 0.75"}
    weights = sum(p.numel() for n, p in CaloFlow(**TINY).named_parameters() if n.endswith("weight"))
    for label, expected in (("IMP round 1", 0.5), ("one-shot 0.75", 0.75), ("trained", 0.0)):
        snap = exp.store.load(points.loc[label, "hash"])
        pruned = sum(int((~m).sum()) for m in snap.masks.values())
        assert pruned / weights == pytest.approx(expected, abs=1 / weights + 1e-3), label
        assert {n.split(".")[0] for n in snap.masks} <= {"energy_flow", "voxel_flow"}
        model = snap.model()
        for name, keep in snap.masks.items():
            module, _, param = name.rpartition(".")
            assert not getattr(model.get_submodule(module), param)[~keep].any()
        assert 0.0 <= points.loc[label, "auc"] <= 1.0
    doc = exp.store.documents()["gan-study-tinyflow"]
    assert doc["generator"] == "caloflow"


@pytest.mark.parametrize("text, message", [
    ("[gan]\niterations = 3\n", "exactly one training section"),
    ("", "exactly one training section"),
])
def test_a_study_spec_names_one_training_section(tmp_path, text, message):
    from prunelab.hep.gan_study import load_gan_spec

    body = SPEC.split("[flow]")[0].replace("[model]\nhidden = 16\nblocks = 2\nbins = 4\nenergy_hidden = 8\n"
                                           "energy_blocks = 2\n", "")
    flow = "[flow]\niterations = 8\n" if text else ""
    (tmp_path / "s.toml").write_text(body + text + flow)
    with pytest.raises(PrunelabError, match=message):
        load_gan_spec(tmp_path / "s.toml")


def test_a_study_spec_switches_the_cell_counts_off(tmp_path):
    from prunelab.experiment.snapshot import ModelSpec
    from prunelab.hep.gan_study import load_gan_spec

    (tmp_path / "s.toml").write_text(SPEC.replace("energy_blocks = 2\n", "energy_blocks = 2\nhit_counts = false\n"))
    spec = load_gan_spec(tmp_path / "s.toml")
    assert spec.model["hit_counts"] is False
    assert ModelSpec("caloflow", (CELL_FEATURES,), 1, options=tuple(spec.model.items())).build().energy_coordinates == 6


def test_a_flow_finetune_section_is_read_with_the_flows_keys(tmp_path):
    from prunelab.hep.gan_study import load_gan_spec

    (tmp_path / "s.toml").write_text(SPEC.replace("learning_rate = 3e-4", "critic_steps = 2"))
    with pytest.raises(PrunelabError, match="critic_steps"):
        load_gan_spec(tmp_path / "s.toml")


def test_gan_and_flow_configs_leave_the_cpu_device_out_of_identities():
    """States trained before the device option existed keep their hashes; a CUDA run is another state."""
    from prunelab.experiment.recipes import identity_dump
    from prunelab.hep.gan import GANConfig

    for config in (GANConfig, FlowConfig):
        assert "device" not in identity_dump(config(iterations=3))
        assert identity_dump(config(iterations=3, device="cuda:1"))["device"] == "cuda"
        assert config(iterations=3, device="gpu").device == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gan_and_flow_train_on_cuda_and_come_back_as_cpu_states(tmp_path):
    from prunelab.experiment import Experiment
    from prunelab.hep.flow_recipes import TrainFlow
    from prunelab.hep.gan import GANConfig
    from prunelab.hep.gan_recipes import TrainGAN

    exp = Experiment(tmp_path / "s")
    gan = exp.root(dataset="calo_showers_eplus", model="calogan", seed=1,
                   model_options={"latent": 4, "hidden": 16, "critic_hidden": 16}).then(
        TrainGAN(GANConfig(iterations=4, batch_size=16, critic_steps=1, evaluate_showers=0, device="cuda")))
    flow = exp.root(dataset="calo_showers_eplus", model="caloflow", seed=1, model_options=TINY).then(
        TrainFlow(FlowConfig(iterations=4, batch_size=32, evaluate_showers=0, device="cuda")))
    exp.run()
    for state in (gan, flow):
        snap = state.load()
        assert snap.metrics["device"].startswith("cuda")
        assert all(t.device.type == "cpu" for t in snap.weights.values())
        assert sample(snap.model(), [10.0, 50.0], seed=0).flat().sum() > 0
