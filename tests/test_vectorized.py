"""Device options and many-model (vectorised) training, on the CPU.

Vectorised training is checked against one-at-a-time training (the independent
computation) within stated tolerances, and against itself bit for bit where the
design promises bits: a model's result does not depend on which models shared
its pass, a split training equals one training, a diverging model leaves the
others untouched.
"""

import pytest
import torch

from prunelab import PrunelabError, TrainConfig
from prunelab.experiment import Experiment, Prune, Rewind, Store, Train
from prunelab.experiment import planning
from prunelab.pruning import technique
from prunelab.pruning.masked import train_masked
from prunelab.pruning.masks import get_masks
from prunelab.tasks import build_model, load_dataset
from prunelab.tasks.training import TrainingDiverged, train
from prunelab.tasks.vectorized import train_group

from .experiment_helpers import Poison

DIGITS = load_dataset("digits")


def nets(name, seeds):
    return [build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=s) for s in seeds]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ------------------------------------------------------------ the device option


def test_device_is_resolved_and_only_the_backend_enters_identities():
    from prunelab.experiment.recipes import identity_dump

    assert TrainConfig(iterations=1, device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert TrainConfig(iterations=1, device="GPU:1").device == "cuda:1"
    assert "device" not in identity_dump(TrainConfig(iterations=1))  # stores made before devices keep hashes
    assert identity_dump(TrainConfig(iterations=1, device="cuda:1"))["device"] == "cuda"
    assert identity_dump(TrainConfig(iterations=1, device="cuda:0")) == identity_dump(TrainConfig(iterations=1, device="cuda"))
    assert TrainConfig(iterations=1, device="cpu", tf32=True).tf32 is False  # no TF32 on a CPU: no fork
    assert "vectorize" not in identity_dump(TrainConfig(iterations=1))
    assert identity_dump(TrainConfig(iterations=1, vectorize=8))["vectorize"] == 8
    with pytest.raises(PrunelabError, match="device must be"):
        TrainConfig.parse({"iterations": 1, "device": "tpu"})
    a = Train(TrainConfig(iterations=1)).params()
    b = Train(TrainConfig(iterations=1, device="cuda")).params()
    assert a != b  # CPU and CUDA states never share a hash


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_fails_in_one_line(tmp_path):
    model = nets("lenet_300_100", [0])[0]
    with pytest.raises(PrunelabError, match="sees no CUDA device"):
        train(model, DIGITS, TrainConfig(iterations=2, batch_size=32, device="cuda"), seed=0)
    exp = Experiment(tmp_path / "s")
    exp.root(dataset="digits", model="lenet_300_100").then(Train(TrainConfig(iterations=2, batch_size=32,
                                                                             device="cuda")))
    with pytest.raises(PrunelabError, match="sees no CUDA device.*nothing was run"):
        exp.run()  # checked before anything runs
    assert not list((tmp_path / "s" / "states").glob("*.json"))


# ------------------------------------------------------------ vectorised vs one at a time


@pytest.mark.parametrize("name, optimizer, lr, iterations, tolerance", [
    ("lenet_300_100", "sgd", 0.05, 20, 1e-5),
    ("lenet5", "momentum", 0.02, 20, 1e-4),
    # batch norm (running statistics are stacked buffers). ResNet-20 on 8x8 inputs is chaotic: in plain
    # one-at-a-time training, weights perturbed by 1e-7 (relative) differ by 0.02 after 5 steps.
    ("resnet20", "sgd", 0.002, 3, 1e-4),  # 1.1e-5 with torch 2.11, 4e-6 with 2.13
    ("lenet_300_100", "adam", 1.2e-3, 20, 2e-3),  # Adam divides by sqrt(v): rounding in tiny gradients grows
])
def test_vectorised_training_matches_one_at_a_time(name, optimizer, lr, iterations, tolerance):
    config = TrainConfig(iterations=iterations, batch_size=32, optimizer=optimizer, lr=lr, vectorize=4)
    group, alone = nets(name, [0, 1, 2]), nets(name, [0, 1, 2])
    results = train_group(group, DIGITS, config, seeds=[5, 6, 7])
    for seed, model in zip([5, 6, 7], alone):
        train(model, DIGITS, config.model_copy(update={"vectorize": 0}), seed=seed)
    for a, b, r in zip(group, alone, results):
        assert r.iterations == iterations and r.group["width"] == 4 and r.group["models"] == 3
        d = max_diff(weights(a), weights(b))
        assert d < tolerance, d
        assert not torch.equal(weights(a)[next(iter(weights(a)))], weights(nets(name, [0])[0])[next(iter(weights(a)))])


@pytest.mark.parametrize("name, optimizer", [("lenet_300_100", "adam"), ("lenet5", "adam"),
                                             ("lenet_300_100", "momentum")])
def test_a_models_bits_do_not_depend_on_who_shares_its_pass(name, optimizer):
    """Padding the group to its width fixes the kernel shapes, and aligned storage keeps the fused
    optimizer's scalar tail out of every lane: alone, with two others, or in the last lane (width 3),
    model 2 gets the same bits. (Unpadded, a grouped convolution of 1 vs 3 models rounds differently;
    unaligned, the last lane's final entries took the fused Adam's scalar path.)"""
    config = TrainConfig(iterations=12, batch_size=32, vectorize=3, optimizer=optimizer)
    three = nets(name, [0, 1, 2])
    train_group(three, DIGITS, config, seeds=[0, 1, 2])
    alone = nets(name, [2])
    train_group(alone, DIGITS, config, seeds=[2])
    shuffled = nets(name, [2, 7])
    train_group(shuffled, DIGITS, config, seeds=[2, 9])
    assert max_diff(weights(three[2]), weights(alone[0])) == 0
    assert max_diff(weights(three[2]), weights(shuffled[0])) == 0


def test_pruned_models_stay_pruned_and_a_split_training_equals_one():
    config = TrainConfig(iterations=16, batch_size=32, optimizer="adam", vectorize=2)
    models = []
    for seed, amount in ((0, 0.5), (1, 0.8)):
        m = nets("lenet_300_100", [seed])[0]
        from prunelab.pruning import prune

        prune(m, technique("l1_unstructured", amount=amount))
        models.append(m)
    masks = [get_masks(m) for m in models]
    clones = [nets("lenet_300_100", [0])[0], nets("lenet_300_100", [1])[0]]
    for c, m in zip(clones, models):
        c.load_state_dict(m.state_dict(), strict=False)
        from prunelab.pruning.masks import apply_masks

        apply_masks(c, get_masks(m))
        c.load_state_dict(m.state_dict())
    whole = train_group(models, DIGITS, config, seeds=[0, 1])
    first = train_group(clones, DIGITS, config, seeds=[0, 1], stop=7)
    rest = train_group(clones, DIGITS, config, seeds=[0, 1], start=7,
                       optimizer_states=[r.optimizer_state for r in first])
    for m, c, keep, w, r in zip(models, clones, masks, whole, rest):
        assert get_masks(m).keys() == keep.keys() and all(torch.equal(get_masks(m)[k], keep[k]) for k in keep)
        for k, mask in keep.items():
            module, _, param = k.rpartition(".")
            assert bool((getattr(m.get_submodule(module), param)[~mask] == 0).all())  # pruned entries stay zero
        assert max_diff(weights(m), weights(c)) == 0  # 0 → 7 → 16 equals 0 → 16, optimizer state included
        assert w.optimizer_state["state"][0]["exp_avg"].shape == next(iter(dict(m.named_parameters()).values())).shape
    # the one-at-a-time masked path agrees within rounding
    ref = nets("lenet_300_100", [0])[0]
    from prunelab.pruning import prune

    prune(ref, technique("l1_unstructured", amount=0.5))
    train_masked(ref, DIGITS, config.model_copy(update={"vectorize": 0}), seed=0)
    assert max_diff(weights(models[0]), weights(ref)) < 2e-3


def test_one_diverging_model_leaves_the_others_untouched():
    config = TrainConfig(iterations=10, batch_size=32, vectorize=3)
    group = nets("lenet_300_100", [0, 1, 2])
    with torch.no_grad():
        for p in group[1].parameters():
            p.fill_(float("nan"))
    results = train_group(group, DIGITS, config, seeds=[0, 1, 2])
    assert isinstance(results[1], TrainingDiverged) and "iteration 0" in str(results[1])
    clean = nets("lenet_300_100", [0, 2])
    train_group(clean, DIGITS, config, seeds=[0, 2])
    assert max_diff(weights(group[0]), weights(clean[0])) == 0
    assert max_diff(weights(group[2]), weights(clean[1])) == 0


def test_single_model_divergence_still_names_the_iteration():
    model = nets("lenet_300_100", [0])[0]
    with pytest.raises(TrainingDiverged, match="at iteration 3 "):
        train(model, DIGITS, TrainConfig(iterations=200, batch_size=32, optimizer="sgd", lr=10.0), seed=0,
              after_step=[lambda m, it: [p.data.fill_(float("inf")) for p in m.parameters()] if it == 2 else None])


# ------------------------------------------------------------ in the experiment tree


def imp_tree(root, width, seeds=(0, 1, 2), poison_seed=None):
    exp = Experiment(root)
    config = TrainConfig(iterations=24, batch_size=32, vectorize=width)
    leaves = []
    for seed in seeds:
        r = exp.root(dataset="digits", model="lenet5", seed=seed)
        start = r.then(Poison()) if seed == poison_seed else r
        s = start.then(Train(config, stop=8))
        dense = s.then(Train(config))
        leaves.append(dense.then(Prune(technique("global_unstructured", amount=0.5))).then(Rewind(to=s)).then(
            Train(config)))
    return exp, leaves


def test_lockstep_groups_give_the_bits_of_each_state_computed_alone(tmp_path, monkeypatch):
    exp, leaves = imp_tree(tmp_path / "grouped", 4)
    tasks, _, _ = planning.plan(exp)
    assert len(tasks) == 1 and tasks[0].lanes == (6, 6, 6)  # three seeds' chains run side by side
    summary = exp.run()
    assert summary.ok and len(summary.computed) == 18
    monkeypatch.setattr(planning, "merge_lanes", lambda tasks: tasks)  # every state on its own
    alone, _ = imp_tree(tmp_path / "alone", 4)
    assert len(planning.plan(alone)[0]) == 3
    assert alone.run().ok
    a, b = Store(tmp_path / "grouped"), Store(tmp_path / "alone")
    for h in exp.states:
        sa, sb = a.load(h), b.load(h)
        assert all(torch.equal(sa.weights[k], sb.weights[k]) for k in sa.weights), h
    grouped_metrics = a.manifest(leaves[0].hash)["metrics"]
    assert grouped_metrics["vectorized"]["models"] == 3 and grouped_metrics["vectorized"]["width"] == 4
    assert set(grouped_metrics["vectorized"]["members"]) == {leaf.hash for leaf in leaves}
    assert b.manifest(leaves[0].hash)["metrics"]["vectorized"]["models"] == 1
    assert a.manifest(leaves[0].hash)["recipe"]["params"]["config"]["vectorize"] == 4
    # the rerun is free, and an audit recomputes a grouped state alone, bit for bit
    again, _ = imp_tree(tmp_path / "grouped", 4)
    assert not again.run().computed
    from prunelab.experiment.audit import recompute

    check = recompute(a, leaves[1].hash)
    assert check.identical, check


def test_a_diverging_chain_fails_alone_in_a_lockstep_group(tmp_path):
    exp, leaves = imp_tree(tmp_path / "s", 4, poison_seed=1)
    summary = exp.run()
    assert len(summary.failed) == 1 and "loss became nan" in next(iter(summary.failed.values()))
    assert len(summary.skipped) == 4  # the poisoned chain's dense training, prune, rewind and retraining
    assert Store(tmp_path / "s").is_done(leaves[0].hash) and Store(tmp_path / "s").is_done(leaves[2].hash)


def test_vectorised_training_is_opt_in_and_differs_from_the_default_identity(tmp_path):
    plain, _ = imp_tree(tmp_path / "a", 0, seeds=(0,))
    vec, _ = imp_tree(tmp_path / "b", 4, seeds=(0,))
    assert set(plain.states) & set(vec.states) == {h for h, s in plain.states.items() if not isinstance(s.recipe, Train)
                                                    and s.depth == 0}


def test_dask_workers_run_lockstep_groups_with_the_same_bits(tmp_path):
    serial, leaves = imp_tree(tmp_path / "serial", 2, seeds=(0, 1, 2))
    assert serial.run().ok
    dask, _ = imp_tree(tmp_path / "dask", 2, seeds=(0, 1, 2))
    assert len(planning.plan(dask)[0]) == 2  # three chains, two lanes a task
    assert dask.run("local", workers=2, fallback=False).ok
    a, b = Store(tmp_path / "serial"), Store(tmp_path / "dask")
    for h in serial.states:
        sa, sb = a.load(h), b.load(h)
        assert all(torch.equal(sa.weights[k], sb.weights[k]) for k in sa.weights), h


def test_cli_device_option(tmp_path):
    from .conftest import run_cli_here

    spec = tmp_path / "s.toml"
    spec.write_text(f"""
[study]
name = "dev"
seeds = [0, 1]
store = "{tmp_path / 'store'}"
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 30
batch_size = 32
vectorize = 2
[branches.ticket]
technique = "global_unstructured"
rate = 0.5
rounds = 1
""")
    proc = run_cli_here("run", str(spec), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "0 failed" in proc.stdout
    if not torch.cuda.is_available():
        proc = run_cli_here("run", str(spec), "--device", "cuda")
        assert proc.returncode == 2 and "sees no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli_here("run", str(spec), "--device", "tpu")
    assert proc.returncode == 2 and "device must be" in proc.stderr
