import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunelab import PrunelabError, build_model
from prunelab.pruning import (apply_masks, get_masks, pack, prune, select, sparsity_report,
                              technique, unpack)
from prunelab.pruning import selection
from prunelab.pruning.masks import output_positions
from prunelab.pruning.schedules import polynomial_sparsity, remaining_after, rounds_to_reach


def two_layer(seed=0, with_ties=False):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    if with_ties:  # many equal magnitudes: tie-breaking must be deterministic
        with torch.no_grad():
            for layer in (net[0], net[2]):
                layer.weight.copy_(torch.randint(-3, 4, layer.weight.shape).float())
    return net


def brute_force_keep(scores: list[torch.Tensor], eligible: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Reference: stable sort of the concatenated eligible scores, prune the first k."""
    flat = torch.cat([s.detach().reshape(-1) for s in scores]).double()
    elig = torch.cat([e.reshape(-1) for e in eligible])
    order = np.argsort(np.where(elig.numpy(), flat.numpy(), np.inf), kind="stable")
    keep = elig.clone()
    keep[torch.from_numpy(order[:k])] = False
    out, pos = [], 0
    for s in scores:
        out.append(keep[pos : pos + s.numel()].reshape(s.shape))
        pos += s.numel()
    return out


# ------------------------------------------------------------ selection core


@pytest.mark.parametrize("path", ["radix", "concatenated", "concatenated, numpy"])
@pytest.mark.parametrize("chunk", [7, 1 << 22])
@pytest.mark.parametrize("seed", range(4))
def test_selection_equals_stable_sort_with_ties_and_chunks(monkeypatch, chunk, seed, path):
    """Every path (radix passes for big models; for small ones one k-th value, by torch or numpy)
    against a stable sort."""
    monkeypatch.setattr(selection, "CHUNK", chunk)
    monkeypatch.setattr(selection, "SMALL", 0 if path == "radix" else 1 << 24)
    monkeypatch.setattr(selection, "PARTITION_FROM", 0 if path.endswith("numpy") else 1 << 40)
    g = torch.Generator().manual_seed(seed)
    scores = [torch.randint(0, 5, (4, 9), generator=g).float() / 4, torch.rand(31, generator=g), torch.zeros(5)]
    eligible = [torch.rand(s.shape, generator=g) > 0.3 for s in scores]
    n = int(sum(e.sum() for e in eligible))
    for k in (0, 1, n // 3, n - 1, n):
        sources = [selection.ScoreSource(s, None, e.float()) for s, e in zip(scores, eligible)]
        got = selection.lowest_k_masks(sources, k)
        want = brute_force_keep(scores, eligible, k)
        for a, b in zip(got, want):
            assert torch.equal(a, b), (k, chunk)


@pytest.mark.parametrize("small", [0, 1 << 24])
def test_selection_rejects_negative_scores_and_too_many(monkeypatch, small):
    monkeypatch.setattr(selection, "SMALL", small)
    with pytest.raises(ValueError, match="non-negative"):
        selection.lowest_k_masks([selection.ScoreSource(torch.tensor([-1.0, 2.0]))], 1)
    with pytest.raises(ValueError, match="only 2 are eligible"):
        selection.lowest_k_masks([selection.ScoreSource(torch.tensor([1.0, 2.0]))], 3)


# ------------------------------------------------------------ methods vs references


@pytest.mark.parametrize("with_ties", [False, True])
def test_layer_magnitude_equals_brute_force_and_reaches_exact_sparsity(with_ties):
    net = two_layer(with_ties=with_ties)
    weights = [net[0].weight.detach().clone(), net[2].weight.detach().clone()]
    prune(net, amount=0.4)
    for w, layer in zip(weights, (net[0], net[2])):
        k = round(0.4 * w.numel())
        want = brute_force_keep([w.abs()], [torch.ones_like(w, dtype=torch.bool)], k)[0]
        assert torch.equal(layer.weight_mask.bool(), want)
        assert int((layer.weight_mask == 0).sum()) == k


def test_layer_magnitude_equals_torch_l1_unstructured_without_ties():
    ours, theirs = two_layer(3), two_layer(3)
    prune(ours, amount=0.3)
    prune(ours, amount=0.5)  # iterative: only still-unpruned weights
    torch_prune.l1_unstructured(theirs[0], "weight", amount=0.3)
    torch_prune.l1_unstructured(theirs[2], "weight", amount=0.3)
    torch_prune.l1_unstructured(theirs[0], "weight", amount=0.5)
    torch_prune.l1_unstructured(theirs[2], "weight", amount=0.5)
    assert torch.equal(ours[0].weight_mask, theirs[0].weight_mask)
    assert torch.equal(ours[2].weight_mask, theirs[2].weight_mask)


@pytest.mark.parametrize("with_ties", [False, True])
def test_global_magnitude_equals_brute_force_and_torch(with_ties):
    net, ref = two_layer(1, with_ties), two_layer(1, with_ties)
    ws = [net[0].weight.detach().abs().clone(), net[2].weight.detach().abs().clone()]
    prune(net, scope="global", amount=0.55)
    k = round(0.55 * sum(w.numel() for w in ws))
    want = brute_force_keep(ws, [torch.ones_like(w, dtype=torch.bool) for w in ws], k)
    assert torch.equal(net[0].weight_mask.bool(), want[0]) and torch.equal(net[2].weight_mask.bool(), want[1])
    if not with_ties:
        torch_prune.global_unstructured([(ref[0], "weight"), (ref[2], "weight")], torch_prune.L1Unstructured, amount=0.55)
        assert torch.equal(net[0].weight_mask, ref[0].weight_mask) and torch.equal(net[2].weight_mask, ref[2].weight_mask)


def test_global_and_layer_scope_differ_as_defined():
    """Global: one threshold (layers end at different sparsities); layer: each at the rate."""
    net = build_model("lenet_300_100", (1, 28, 28), 10, seed=0)
    with torch.no_grad():
        net[5].weight.mul_(10)  # the output layer has large weights: global keeps them
    layer_net = build_model("lenet_300_100", (1, 28, 28), 10, seed=0)
    with torch.no_grad():
        layer_net[5].weight.mul_(10)
    g = prune(net, scope="global", amount=0.5).report
    l = prune(layer_net, scope="layer", amount=0.5).report
    assert [round(x.sparsity, 3) for x in l.layers] == [0.5, 0.5, 0.5]
    assert g.sparsity == pytest.approx(0.5, abs=1e-6)
    assert g.layers[2].sparsity < 0.05 and g.layers[0].sparsity > 0.5
    kept = torch.cat([net[i].weight_orig.abs()[net[i].weight_mask.bool()] for i in (1, 3, 5)])
    dropped = torch.cat([net[i].weight_orig.abs()[~net[i].weight_mask.bool()] for i in (1, 3, 5)])
    assert dropped.max() <= kept.min()  # one global threshold


def test_random_pruning_is_seeded_and_exact():
    a, b, c = two_layer(), two_layer(), two_layer()
    prune(a, method="random", amount=0.5, seed=1)
    prune(b, method="random", amount=0.5, seed=1)
    prune(c, method="random", amount=0.5, seed=2)
    assert torch.equal(a[0].weight_mask, b[0].weight_mask)
    assert not torch.equal(a[0].weight_mask, c[0].weight_mask)
    assert int(a[0].weight_mask.sum()) == 15


@pytest.mark.parametrize("norm, torch_n", [(1, 1), (2, 2), ("inf", float("inf"))])
@pytest.mark.parametrize("dim", [0, 1])
def test_structured_equals_torch_ln_structured(norm, torch_n, dim):
    ours = build_model("conv2", (1, 8, 8), 10, seed=2)
    theirs = build_model("conv2", (1, 8, 8), 10, seed=2)
    prune(ours, structure="structured", amount=0.25, dim=dim, norm=norm, include=["0", "2"], prune_bias=False)
    for idx in (0, 2):
        torch_prune.ln_structured(theirs[idx], "weight", amount=0.25, n=torch_n, dim=dim)
        assert torch.equal(ours[idx].weight_mask, theirs[idx].weight_mask)
        per_slice = ours[idx].weight_mask.movedim(dim, 0).reshape(ours[idx].weight.shape[dim], -1)
        assert set(per_slice.sum(1).tolist()) <= {0.0, float(per_slice.shape[1])}  # whole slices only


def test_structured_prunes_bias_of_removed_neurons_and_composes():
    net = two_layer()
    prune(net, structure="structured", amount=0.4, include=["0"])
    dead = (net[0].weight_mask.sum(1) == 0)
    assert int(dead.sum()) == 2
    assert torch.equal(net[0].bias_mask.bool(), ~dead)
    prune(net, structure="structured", amount=0.34, include=["0"])  # of the 3 remaining rows → 1
    assert int((net[0].weight_mask.sum(1) == 0).sum()) == 3
    assert (net[0].weight_mask.sum(1) == 0)[dead].all()  # earlier removals stay removed


def test_two_rounds_prune_only_unpruned_weights():
    net = build_model("lenet_300_100", (1, 8, 8), 10, seed=0)
    prune(net, amount=0.5)
    first = get_masks(net)
    prune(net, amount=0.5)
    second = get_masks(net)
    for name in first:
        assert not (second[name] & ~first[name]).any()  # nothing revived
        assert int(second[name].sum()) == int(first[name].sum()) - round(0.5 * int(first[name].sum()))


def test_frankle_carbin_remaining_percentages():
    """fc 20 %/round, output 10 %/round: 100, 51.3, 26.3, 13.5, 7.0, 3.6, 1.9, 1.0, 0.5, 0.3 every 3 rounds."""
    net = build_model("lenet_300_100", (1, 28, 28), 10, seed=0)
    config = technique("l1_unstructured", amount=0.2, overrides={"<output>": 0.1})
    remaining = [100.0]
    for round_ in range(1, 28):
        report = prune(net, config).report
        if round_ % 3 == 0:
            remaining.append(round(100 * report.remaining_fraction, 1))
    assert remaining == [100.0, 51.3, 26.3, 13.5, 7.0, 3.6, 1.9, 1.0, 0.5, 0.3]


def test_target_sparsity_and_overrides_in_global_scope():
    net = build_model("lenet_300_100", (1, 8, 8), 10, seed=0)
    report = prune(net, scope="global", target=0.8, overrides={"<output>": 0.4}).report
    assert report.layers[2].sparsity == pytest.approx(0.4, abs=1e-3)
    pooled = report.layers[0].total + report.layers[1].total
    pooled_kept = report.layers[0].kept + report.layers[1].kept
    assert 1 - pooled_kept / pooled == pytest.approx(0.8, abs=1e-4)
    with pytest.raises(PrunelabError, match="below the current sparsity"):
        prune(net, scope="global", target=0.5)


def test_prune_remove_and_is_pruned_work():
    net = two_layer()
    prune(net, technique("global_unstructured", amount=0.5))
    assert torch_prune.is_pruned(net)
    effective = net[0].weight.detach().clone()
    torch_prune.remove(net[0], "weight")
    assert torch.equal(net[0].weight, effective) and not hasattr(net[0], "weight_mask")


# ------------------------------------------------------------ SNIP / SynFlow by hand


def test_snip_scores_match_hand_computation():
    net = two_layer(4)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    # by hand: gradients of the mean cross-entropy with respect to each weight
    w1, b1, w2, b2 = (p.detach().clone().requires_grad_() for p in (net[0].weight, net[0].bias, net[2].weight, net[2].bias))
    logits = torch.relu(x @ w1.T + b1) @ w2.T + b2
    torch.nn.functional.cross_entropy(logits, y).backward()
    s1, s2 = (w1.grad * w1).abs(), (w2.grad * w2).abs()
    prune(net, method="snip", scope="global", amount=0.5, batch=(x, y))
    k = round(0.5 * (s1.numel() + s2.numel()))
    want = brute_force_keep([s1, s2], [torch.ones_like(s1, dtype=torch.bool), torch.ones_like(s2, dtype=torch.bool)], k)
    assert torch.equal(net[0].weight_mask.bool(), want[0]) and torch.equal(net[2].weight_mask.bool(), want[1])


def test_synflow_scores_match_hand_computation():
    from prunelab.pruning.scores import synflow_scores

    net = two_layer(5)
    w1, b1, w2, b2 = (p.detach().double().abs().requires_grad_() for p in (net[0].weight, net[0].bias, net[2].weight, net[2].bias))
    r = (torch.relu(torch.ones(1, 6, dtype=torch.float64) @ w1.T + b1) @ w2.T + b2).sum()
    r.backward()
    scores = synflow_scores(net, select(net), (6,))
    torch.testing.assert_close(scores["0.weight"], (w1.grad * w1).float())
    torch.testing.assert_close(scores["2.weight"], (w2.grad * w2).float())


def test_synflow_reaches_target_and_keeps_layers_alive():
    net = build_model("lenet_300_100", (1, 8, 8), 10, seed=0)
    report = prune(net, technique("synflow", target=0.95, synflow_iterations=20), input_shape=(1, 8, 8)).report
    assert report.sparsity == pytest.approx(0.95, abs=1e-4)
    assert all(layer.kept > 0 for layer in report.layers)  # no layer collapse


# ------------------------------------------------------------ masks as data


def test_masks_round_trip_to_a_fresh_model_and_bitpack():
    net = build_model("conv4", (1, 8, 8), 10, seed=0)
    prune(net, technique("global_unstructured", amount=0.7))
    masks = get_masks(net)
    fresh = build_model("conv4", (1, 8, 8), 10, seed=1)
    apply_masks(fresh, masks)
    for name, keep in get_masks(fresh).items():
        assert torch.equal(keep, masks[name])
        packed = pack(keep)
        assert packed.nbytes == (keep.numel() + 7) // 8
        assert torch.equal(unpack(packed, keep.shape), keep)
    with pytest.raises(PrunelabError, match="has shape"):
        apply_masks(build_model("conv4", (1, 28, 28), 10), masks)


def test_sparsity_report_counts_and_flops():
    net = build_model("conv2", (1, 8, 8), 10, seed=0)
    prune(net, amount=0.5, include=["0"])
    report = sparsity_report(net, (1, 8, 8))
    conv0 = report.layers[0]
    assert conv0.kept == conv0.total // 2
    assert conv0.flops == 64 * 1 * 9 * 64  # out × in × k² × 8·8 positions
    assert conv0.kept_flops == conv0.kept * 64
    linear = report.layers[2]
    assert linear.flops == linear.total  # one position


@pytest.mark.parametrize("name", ["l1_unstructured", "global_unstructured", "random_unstructured", "l2_structured"])
def test_a_prunes_masks_are_the_models_masks_after_it(name):
    """PruneResult.masks (what the Prune recipe stores) equals reading every mask back off the model,
    after a first prune and after a second one on top of it, including a tensor outside the call."""
    model = build_model("conv2", (1, 8, 8), 10, seed=0)
    prune(model, amount=0.3, include=["0"])
    for _ in range(2):
        result = prune(model, technique(name, amount=0.3, exclude=["0"], seed=1), input_shape=(1, 8, 8))
        read = get_masks(model)
        assert result.masks.keys() == read.keys() and "0.weight" in read
        assert all(result.masks[k].dtype == torch.bool and torch.equal(result.masks[k], read[k]) for k in read)


def test_output_positions_found_once_give_every_prune_the_same_flops():
    """Positions found on one build of an architecture (what the Prune recipe keeps per architecture)
    give the report of another model of it, pruned twice, exactly what its own forward pass gives."""
    positions = output_positions(build_model("conv2", (1, 8, 8), 10, seed=1), (1, 8, 8))
    assert positions["0.weight"] == 64 and positions[next(reversed(positions))] == 1  # 8·8 (padded 3x3); a Linear
    own, given = (build_model("conv2", (1, 8, 8), 10, seed=0) for _ in range(2))
    for _ in range(2):
        a = prune(own, amount=0.4, input_shape=(1, 8, 8))
        b = prune(given, amount=0.4, input_shape=(1, 8, 8), positions=positions)
        assert a.report == b.report and a.report.kept_flops < a.report.flops
        assert b.report == sparsity_report(given, (1, 8, 8))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(amount=1.5), "must be in \\[0, 1\\]"),
        (dict(amount=-2), "non-negative count"),
        (dict(), "exactly one of 'amount'"),
        (dict(amount=0.2, method="obd"), "unknown pruning method 'obd'"),
        (dict(amount=0.2, include=["nope*"]), "matches no prunable module"),
        (dict(amount=0.2, overrides={"zzz": 0.1}), "override 'zzz' matches no"),
        (dict(amount=10_000), "only 30 remain"),
        (dict(amount=0.2, method="synflow", structure="structured"), "supports unstructured, not structured"),
        (dict(amount=0.2, method="snip"), "snip pruning needs a batch"),
        (dict(amount=0.2, method="wanda"), "wanda pruning needs calibration data"),
        (dict(amount=0.2, method="wanda", scope="global"), "wanda' prunes with scope layer"),
        (dict(pattern="2:4", amount=0.5), "fixes the sparsity"),
        (dict(pattern="4:2"), "must read 'N:M'"),
        (dict(pattern="2:4", method="synflow"), "supports unstructured, not an N:M pattern"),
    ],
)
def test_bad_pruning_requests_are_clear_errors(settings, message):
    with pytest.raises(PrunelabError, match=message):
        prune(two_layer(), **settings)


def test_snip_without_batch_and_unknown_technique():
    with pytest.raises(PrunelabError, match="needs a batch"):
        prune(two_layer(), method="snip", amount=0.1)
    with pytest.raises(PrunelabError, match="did you mean 'l2_structured'"):
        technique("l2_structure", amount=0.1)


# ------------------------------------------------------------ schedules


def test_schedules():
    assert remaining_after(3, 0.2) == pytest.approx(0.512)
    assert rounds_to_reach(0.05, 0.2) == 14  # 0.8^13 = 0.055, 0.8^14 = 0.044
    values = [polynomial_sparsity(t, initial=0.0, final=0.9, begin=0, end=100) for t in (0, 50, 100, 200)]
    assert values == pytest.approx([0.0, 0.9 - 0.9 * 0.125, 0.9, 0.9])
