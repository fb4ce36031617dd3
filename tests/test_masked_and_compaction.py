import copy

import pytest
import torch

from prunelab import TrainConfig, build_model
from prunelab.pruning import get_masks, prune, technique
from prunelab.pruning.masks import apply_masks
from prunelab.pruning.compaction import compact, mask_coupled_batchnorm
from prunelab.pruning.masked import train_masked
from prunelab.pruning.schedules import GradualPruning
from prunelab.tasks import train


def effective_weights(model):
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            out[name] = (module.weight_orig * module.weight_mask).detach().clone()
    return out


@pytest.mark.parametrize("model_name", ["lenet_300_100", "conv2"])
def test_reapply_and_hook_modes_train_the_same_weights(digits, model_name):
    config = TrainConfig(iterations=40, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-4)
    results = {}
    for mode in ("hook", "reapply"):
        model = build_model(model_name, digits.input_shape, 10, seed=0)
        prune(model, technique("global_unstructured", amount=0.8))
        train_masked(model, digits, config, seed=0, mode=mode)
        results[mode] = (effective_weights(model), get_masks(model))
    for name, w in results["hook"][0].items():
        assert torch.equal(w, results["reapply"][0][name]), name
    for name, m in results["hook"][1].items():
        assert torch.equal(m, results["reapply"][1][name])
        assert (results["reapply"][0][name.rpartition(".")[0]][~m] == 0).all()


@pytest.mark.parametrize("model_name", ["lenet_300_100", "conv2"])
def test_masks_given_train_an_unpruned_model_to_the_same_bits(digits, model_name):
    """masks= trains a model without torch's pruning attached: the same weights and optimizer state
    (bitwise) as attaching the masks and training through the re-applying path, from a dense
    optimizer state taken before pruning; the model leaves unpruned, its pruned entries zero."""
    config = TrainConfig(iterations=30, batch_size=32, optimizer="adam", lr=1e-3)
    dense = build_model(model_name, digits.input_shape, 10, seed=0)
    first = train(dense, digits, config, seed=0, stop=10)
    keep = prune(build_model(model_name, digits.input_shape, 10, seed=0),
                 technique("global_unstructured", amount=0.7)).masks
    attached = copy.deepcopy(dense)
    apply_masks(attached, keep)
    old = train_masked(attached, digits, config, seed=0, start=10, optimizer_state=first.optimizer_state)
    given = copy.deepcopy(dense)
    new = train_masked(given, digits, config, seed=0, start=10, optimizer_state=first.optimizer_state, masks=keep)
    assert not get_masks(given) and get_masks(attached).keys() == keep.keys()
    attached_weights = {k.removesuffix("_orig"): v for k, v in attached.state_dict().items() if not k.endswith("_mask")}
    given_weights = given.state_dict()
    assert attached_weights.keys() == given_weights.keys()
    for name, w in given_weights.items():
        assert torch.equal(w, attached_weights[name]), name
    for name, m in keep.items():
        assert (given_weights[name][~m] == 0).all() and (given_weights[name][m] != 0).any()
    assert [p["val_loss"] for p in new.curve] == [p["val_loss"] for p in old.curve]
    for index, state in old.optimizer_state["state"].items():
        for key, value in state.items():
            assert torch.equal(value, new.optimizer_state["state"][index][key]), (index, key)
    with pytest.raises(ValueError, match="without torch's pruning"):
        train_masked(attached, digits, config, seed=0, masks=keep)
    with pytest.raises(ValueError, match="mode='reapply'"):
        train_masked(given, digits, config, seed=0, masks=keep, mode="hook")


def test_optimizer_state_survives_pruning_between_pieces(digits):
    """Train dense 0→k, prune, continue k→T with the saved optimizer state."""
    config = TrainConfig(iterations=30, batch_size=32)
    model = build_model("lenet_300_100", digits.input_shape, 10, seed=0)
    first = train(model, digits, config, seed=0, stop=10)
    prune(model, amount=0.5)
    train_masked(model, digits, config, seed=0, start=10, optimizer_state=first.optimizer_state)
    for m in get_masks(model).values():
        assert m.float().mean() == pytest.approx(0.5, abs=0.01)


def test_gradual_pruning_follows_the_polynomial_schedule(digits):
    model = build_model("lenet_300_100", digits.input_shape, 10, seed=0)
    hook = GradualPruning(technique("global_unstructured", amount=0.0), final=0.9, begin=10, end=50, frequency=10)
    train(model, digits, TrainConfig(iterations=60, batch_size=32), seed=0, after_step=[hook])
    steps = [s for s, _ in hook.history]
    sparsities = [s for _, s in hook.history]
    assert steps == [10, 20, 30, 40, 50]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.9, abs=1e-4)
    assert sparsities[0] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("model_name", ["conv4", "vgg11", "resnet20", "densenet", "lenet_300_100"])
def test_compaction_is_exact_and_smaller(model_name):
    x = torch.randn(3, 3, 16, 16)
    model = build_model(model_name, (3, 16, 16), 10, seed=0)
    prune(model, technique("l2_structured", amount=0.5))
    mask_coupled_batchnorm(model, x)
    compacted, report = compact(model, x)
    assert report.parameters_after < 0.6 * report.parameters_before
    model.eval()
    with torch.no_grad():
        other = torch.randn(5, 3, 16, 16)  # not the input it was checked on
        torch.testing.assert_close(compacted(other), model(other), atol=1e-5, rtol=1e-4)
    assert not any(hasattr(m, "weight_mask") for m in compacted.modules())


def test_compaction_leaves_unstructured_models_alone():
    x = torch.randn(2, 1, 8, 8)
    model = build_model("conv2", (1, 8, 8), 10, seed=0)
    prune(model, technique("global_unstructured", amount=0.5))
    compacted, report = compact(model, x)
    assert report.removed == {} and report.parameters_after == report.parameters_before
