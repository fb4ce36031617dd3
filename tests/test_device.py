"""Training on a CUDA device. Skipped where no GPU is visible (CI); run on a GPU machine with
``pytest tests/test_device.py``."""

import pytest
import torch

from prunelab import TrainConfig
from prunelab.experiment import Experiment, Prune, Store, Train
from prunelab.pruning import technique
from prunelab.tasks import build_model, load_dataset
from prunelab.tasks.training import train
from prunelab.tasks.vectorized import train_group

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DIGITS = load_dataset("digits") if torch.cuda.is_available() else None
CUDA = TrainConfig(iterations=30, batch_size=32, device="cuda")


def weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "resnet20"])
def test_cuda_training_is_bitwise_reproducible(name):
    runs = []
    for _ in range(2):
        model = build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=0)
        result = train(model, DIGITS, CUDA, seed=3)
        assert next(model.parameters()).is_cuda and result.device.startswith("cuda:")
        assert all(not v.is_cuda for s in result.optimizer_state["state"].values() for v in s.values()
                   if isinstance(v, torch.Tensor))
        runs.append(weights(model))
    assert max_diff(*runs) == 0
    if name == "resnet20":
        return  # chaotic on 8x8 inputs (see test_vectorized): CPU and GPU rounding part ways within steps
    cpu = build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=0)
    train(cpu, DIGITS, CUDA.model_copy(update={"device": "cpu"}), seed=3)
    assert max_diff(runs[0], weights(cpu)) < 5e-2  # the same training, another device: close, not equal


def test_cuda_states_in_the_tree(tmp_path):
    exp = Experiment(tmp_path / "s")
    root = exp.root(dataset="digits", model="lenet5", seed=0)
    one = root.then(Train(CUDA))
    split = root.then(Train(CUDA, stop=12)).then(Train(CUDA))
    pruned = one.then(Prune(technique("global_unstructured", amount=0.5))).then(Train(CUDA.model_copy(
        update={"iterations": 40})))
    on_cpu = root.then(Train(CUDA.model_copy(update={"device": "cpu"})))
    assert exp.run().ok
    store = Store(tmp_path / "s")
    a, b = store.load(one.hash), store.load(split.hash)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)  # 0 → 12 → 30 equals 0 → 30 on CUDA
    assert all(not t.is_cuda for t in a.weights.values())
    manifest = store.manifest(one.hash)
    assert manifest["recipe"]["params"]["config"]["device"] == "cuda" and "cuda" in manifest["metrics"]["device"]
    assert on_cpu.hash != one.hash and "device" not in store.manifest(on_cpu.hash)["metrics"]
    p = store.load(pruned.hash)
    for name, keep in p.masks.items():
        assert bool((p.weights[name][~keep] == 0).all())


def test_cuda_vectorised_training_matches_and_does_not_depend_on_its_group():
    config = TrainConfig(iterations=20, batch_size=32, optimizer="sgd", lr=0.05, device="cuda", vectorize=4)
    group = [build_model("lenet5", DIGITS.input_shape, DIGITS.num_classes, seed=s) for s in range(3)]
    train_group(group, DIGITS, config, seeds=[0, 1, 2])
    alone = build_model("lenet5", DIGITS.input_shape, DIGITS.num_classes, seed=2)
    train_group([alone], DIGITS, config, seeds=[2])
    assert max_diff(weights(group[2]), weights(alone)) == 0
    plain = build_model("lenet5", DIGITS.input_shape, DIGITS.num_classes, seed=2)
    train(plain, DIGITS, config.model_copy(update={"vectorize": 0}), seed=2)
    assert max_diff(weights(group[2]), weights(plain)) < 2e-3  # 5.2e-4 measured on an H100


def optimizer_tensors(result):
    return {f"{j}.{k}": v for j, s in result.optimizer_state["state"].items() for k, v in s.items()
            if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("name,update,captures,replayed", [
    # constant lr, pruned models, an idle lane, evaluations between replays: one capture after 3 warm-up steps
    ("lenet_300_100", {"optimizer": "adam", "iterations": 60, "eval_every": 25}, 1, 57),
    # steps 0-2 warm up, 3 (lr 4/5 of the base) and 24-33 are shorter than MIN_RUN (eager); 4-23 (step 4 ends
    # the lr warm-up at the base lr) and 34-69 are captured and replayed
    ("lenet5", {"optimizer": "momentum", "lr": 0.05, "iterations": 70, "warmup_iterations": 5, "schedule": "step",
                "milestones": (24, 34), "gamma": 0.5}, 2, 56),
])
def test_cuda_graph_replays_give_the_eager_loops_bits(monkeypatch, name, update, captures, replayed):
    from prunelab.pruning import prune
    from prunelab.tasks import cuda_graphs

    config = CUDA.model_copy(update={"vectorize": 3, **update})

    def run(graphs: bool, **window):
        monkeypatch.setattr(cuda_graphs, "ENABLED", graphs)
        group = [build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=s) for s in (0, 1)]
        prune(group[1], technique("global_unstructured", amount=0.6))
        return group, train_group(group, DIGITS, config, seeds=[0, 1], **window)

    eager, eager_results = run(False)
    graphed, results = run(True)
    assert results[0].group["cuda_graph"] == {"replayed_steps": replayed, "captures": captures}
    assert "cuda_graph" not in eager_results[0].group
    for a, b, ra, rb in zip(eager, graphed, eager_results, results):
        assert max_diff(weights(a), weights(b)) == 0
        oa, ob = optimizer_tensors(ra), optimizer_tensors(rb)
        assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
        assert ra.curve == rb.curve
        assert all(g.get("capturable", False) is False for g in rb.optimizer_state["param_groups"])
    # a window split in two (each half warms up and captures again) still gives the same bits
    monkeypatch.setattr(cuda_graphs, "ENABLED", True)
    halves = [build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=s) for s in (0, 1)]
    prune(halves[1], technique("global_unstructured", amount=0.6))
    first = train_group(halves, DIGITS, config, seeds=[0, 1], stop=30)
    train_group(halves, DIGITS, config, seeds=[0, 1], start=30, optimizer_states=[r.optimizer_state for r in first])
    for a, b in zip(graphed, halves):
        assert max_diff(weights(a), weights(b)) == 0


@pytest.mark.parametrize("name,mode,update,captures,replayed", [
    ("lenet_300_100", "reapply", {"optimizer": "adam", "iterations": 60, "eval_every": 25}, 1, 57),
    ("lenet5", "hook", {"optimizer": "momentum", "lr": 0.05, "iterations": 70, "warmup_iterations": 5,
                        "schedule": "step", "milestones": (24, 34), "gamma": 0.5}, 2, 56),
    ("resnet20", "reapply", {"optimizer": "sgd", "lr": 0.05, "iterations": 40}, 1, 37),  # batch norm buffers too
])
def test_one_at_a_time_cuda_graph_replays_give_the_eager_loops_bits(monkeypatch, name, mode, update, captures,
                                                                     replayed):
    """Masks re-applied by the graph-safe hook (or by torch's forward pre-hook), an lr schedule that
    captures twice, batch-norm statistics, a resumed window: replays equal the eager loop bit for bit."""
    from prunelab.pruning import prune
    from prunelab.pruning.masked import train_masked
    from prunelab.tasks import cuda_graphs

    config = CUDA.model_copy(update=update)

    def net():
        model = build_model(name, DIGITS.input_shape, DIGITS.num_classes, seed=0)
        prune(model, technique("global_unstructured", amount=0.6))
        return model

    runs = {}
    for graphs in (False, True):
        monkeypatch.setattr(cuda_graphs, "ENABLED", graphs)
        model = net()
        runs[graphs] = (model, train_masked(model, DIGITS, config, seed=1, mode=mode))
    (eager, r_eager), (graphed, r_graph) = runs[False], runs[True]
    assert r_eager.cuda_graph is None and r_graph.cuda_graph == {"replayed_steps": replayed, "captures": captures}
    assert max_diff(weights(eager), weights(graphed)) == 0
    oa, ob = optimizer_tensors(r_eager), optimizer_tensors(r_graph)
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert r_eager.curve == r_graph.curve
    halves = net()
    first = train_masked(halves, DIGITS, config, seed=1, mode=mode, stop=30)
    train_masked(halves, DIGITS, config, seed=1, mode=mode, start=30, optimizer_state=first.optimizer_state)
    assert max_diff(weights(graphed), weights(halves)) == 0
    # a hook that is not marked graph-safe keeps the eager loop, and runs at every step
    seen = []
    plain = net()
    r = train_masked(plain, DIGITS, config, seed=1, mode=mode, after_step=[lambda m, it: seen.append(it)])
    assert r.cuda_graph is None and seen == list(range(config.iterations))
    assert max_diff(weights(eager), weights(plain)) == 0
