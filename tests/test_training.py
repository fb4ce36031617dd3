import math

import pytest
import torch

from prunelab import PrunelabError, TrainConfig, build_model, evaluate, train
from prunelab.tasks import TrainingDiverged
from prunelab.tasks.training import batch_indices


def config(**kw):
    base = dict(iterations=60, batch_size=32, eval_every=20)
    base.update(kw)
    return TrainConfig(**base)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_name", ["lenet_300_100", "resnet20"])
def test_same_config_and_seed_gives_bitwise_identical_weights(digits, model_name):
    results = []
    for _ in range(2):
        model = build_model(model_name, digits.input_shape, digits.num_classes, seed=3)
        train(model, digits, config(iterations=25), seed=3)
        results.append(weights(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    other = build_model(model_name, digits.input_shape, digits.num_classes, seed=3)
    train(other, digits, config(iterations=25), seed=4)  # other data order
    assert any(not torch.equal(results[0][k], v) for k, v in other.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_training_in_two_pieces_equals_one_run(digits, optimizer):
    cfg = config(optimizer=optimizer, lr=0.01 if optimizer == "momentum" else 1e-3, schedule="cosine",
                 warmup_iterations=10, iterations=80)
    whole = build_model("lenet_300_100", digits.input_shape, 10, seed=1)
    train(whole, digits, cfg, seed=9)
    pieces = build_model("lenet_300_100", digits.input_shape, 10, seed=1)
    first = train(pieces, digits, cfg, seed=9, stop=37)
    assert first.iterations == 37
    train(pieces, digits, cfg, seed=9, start=37, optimizer_state=first.optimizer_state)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, pieces.state_dict()[k]), k


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_training_leaves_the_optimizer_state_it_started_from_untouched(digits, optimizer):
    # a stored parent held in memory must stay what was stored while a child trains on from it
    cfg = config(optimizer=optimizer, lr=0.01, iterations=30)
    model = build_model("lenet_300_100", digits.input_shape, 10, seed=1)
    first = train(model, digits, cfg, seed=2, stop=10)
    before = {i: {k: v.clone() for k, v in s.items()} for i, s in first.optimizer_state["state"].items()}
    train(model, digits, cfg, seed=2, start=10, optimizer_state=first.optimizer_state)
    for i, s in first.optimizer_state["state"].items():
        for k, v in s.items():
            assert torch.equal(v, before[i][k]), (i, k)


def test_training_learns_digits(digits):
    model = build_model("lenet_300_100", digits.input_shape, 10, seed=0)
    before = evaluate(model, digits.test, digits.class_names).accuracy
    result = train(model, digits, config(iterations=400, eval_every=100), seed=0)
    after = evaluate(model, digits.test, digits.class_names).accuracy
    assert before < 0.3 and after > 0.9
    assert [p["iteration"] for p in result.curve] == [100, 200, 300, 400]
    best = min(result.curve, key=lambda p: p["val_loss"])
    assert result.early_stopping_iteration == best["iteration"]


def test_epochs_are_converted_to_iterations(digits):
    cfg = TrainConfig(epochs=1.5, batch_size=100)
    per_epoch = len(digits.train) // 100
    assert cfg.total_iterations(len(digits.train)) == math.ceil(1.5 * per_epoch)


def test_data_order_covers_each_example_once_per_epoch():
    n, b = 103, 10
    seen = torch.cat([batch_indices(5, i, n, b) for i in range(10)])  # one epoch = 10 batches
    assert len(set(seen.tolist())) == 100  # 3 dropped, none repeated
    nxt = torch.cat([batch_indices(5, i, n, b) for i in range(10, 20)])
    assert not torch.equal(seen, nxt)  # a new permutation each epoch


def test_learning_rate_schedules():
    step = TrainConfig(iterations=100, lr=1.0, schedule="step", milestones=(50, 80), gamma=0.1)
    assert [step.lr_at(i, 100) for i in (0, 49, 50, 79, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = TrainConfig(iterations=100, lr=2.0, schedule="cosine")
    assert cos.lr_at(0, 100) == pytest.approx(2.0) and cos.lr_at(50, 100) == pytest.approx(1.0)
    assert cos.lr_at(100, 100) == pytest.approx(0.0, abs=1e-12)
    warm = TrainConfig(iterations=100, lr=1.0, warmup_iterations=4)
    assert [warm.lr_at(i, 100) for i in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_nan_loss_is_reported(digits):
    model = build_model("lenet_300_100", digits.input_shape, 10, seed=0)
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="at iteration 0"):
        train(model, digits, config(), seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(iterations=0), "iterations: Input should be greater than 0"),
        (dict(iterations=10, lr=0), "lr: Input should be greater than 0"),
        (dict(iterations=10, optimizer="rmsprop"), "optimizer: Input should be"),
        (dict(), "exactly one of 'iterations' or 'epochs'"),
        (dict(iterations=10, epochs=1), "exactly one of 'iterations' or 'epochs'"),
        (dict(iterations=10, bogus=1), "bogus: Extra inputs are not permitted"),
    ],
)
def test_bad_configs_name_the_key(kwargs, message):
    with pytest.raises(PrunelabError, match=message):
        TrainConfig.parse(kwargs)


def test_batch_larger_than_training_set(digits):
    model = build_model("lenet_300_100", digits.input_shape, 10)
    with pytest.raises(PrunelabError, match="larger than the training set"):
        train(model, digits, config(batch_size=100_000), seed=0)
