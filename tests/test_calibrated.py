"""Calibrated pruning (Wanda, SparseGPT, N:M, GraSP) against planted answers and independent computations."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunelab import PrunelabError
from prunelab.pruning.calibrated import (InputStatistics, as_matrix, from_matrix, grasp_scores, input_matrix, nm_mask,
                                         obs_exact, observe, reconstruction_error, row_mask, sparsegpt, wanda_scores)
from prunelab.pruning.targets import select

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def fill_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter from a private generator (module construction used the global RNG
    inside fork_rng, so the test leaves the global state alone)."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def build(factory, seed):
    with torch.random.fork_rng():
        return fill_(factory(), seed)


def without_bias(module, x):
    out = module(x)
    if module.bias is not None:
        shape = [1, -1] + [1] * (out.dim() - 2) if not isinstance(module, nn.Linear) else [-1]
        out = out - module.bias.reshape(shape)
    return out


# ------------------------------------------------------------------ layout

@pytest.mark.parametrize("factory, xshape", [
    (lambda: nn.Linear(6, 5), (3, 7, 6)),  # tokens become samples
    (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 11)),
    (lambda: nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (2, 3, 9, 8)),
    (lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 2, 7, 6)),  # even kernel: asymmetric pad
    (lambda: nn.Conv2d(2, 3, 3, padding="valid", bias=False), (1, 2, 5, 5)),
    (lambda: nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=1, dilation=(2, 1, 1)), (2, 2, 5, 6, 4)),
])
def test_input_matrix_reproduces_the_layer(factory, xshape):
    module = build(factory, 1).double()
    x = randn(*xshape, seed=2, dtype=F64)
    X = input_matrix(module, x)
    W = as_matrix(module.weight)
    assert X.shape[1] == W.shape[1]
    out = without_bias(module, x)
    expected = out.reshape(-1, out.shape[-1]) if isinstance(module, nn.Linear) else out.movedim(1, -1).reshape(-1, out.shape[1])
    torch.testing.assert_close(X @ W.T, expected)
    assert torch.equal(from_matrix(W, module.weight.shape), module.weight)


def test_conv2d_columns_are_unfold_columns():
    conv = build(lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2), 3)
    x = randn(2, 3, 10, 9, seed=4)
    patches = torch.nn.functional.unfold(x, 3, dilation=2, padding=1, stride=2)  # (N, C*k*k, L)
    assert torch.equal(input_matrix(conv, x), patches.transpose(1, 2).reshape(-1, patches.shape[1]))


def test_input_matrix_refuses_groups_and_other_layers():
    with pytest.raises(PrunelabError, match="groups=2"):
        input_matrix(nn.Conv2d(4, 4, 3, groups=2), torch.zeros(1, 4, 5, 5))
    with pytest.raises(PrunelabError, match="BatchNorm"):
        input_matrix(nn.BatchNorm1d(3), torch.zeros(2, 3))
    with pytest.raises(PrunelabError, match="does not fit"):
        input_matrix(nn.Linear(3, 2), torch.zeros(2, 4))


def test_input_statistics_accumulate_batches_and_observe():
    layer = build(lambda: nn.Linear(5, 3), 5)
    x = randn(40, 5, seed=6)
    one = InputStatistics(hessian=True)
    one.update(layer, x)
    parts = InputStatistics(hessian=True)
    with observe(layer, parts), torch.no_grad():
        for chunk in x.split(13):
            layer(chunk)
    layer(x)  # the hook is gone: no effect
    Xd = x.double().numpy()
    assert parts.samples == one.samples == 40
    # each chunk is multiplied in float32 (as the reference implementations do), summed in float64
    np.testing.assert_allclose(one.hessian_matrix().numpy(), Xd.T @ Xd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parts.hessian_matrix().numpy(), Xd.T @ Xd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(parts.column_norms().numpy(), np.linalg.norm(Xd, axis=0), rtol=1e-6)
    torch.testing.assert_close(torch.diagonal(one.hessian_matrix()), one.sum_squares, rtol=1e-5, atol=1e-5)
    plain = InputStatistics()
    plain.update(layer, x)
    assert plain.gram is None
    with pytest.raises(PrunelabError, match="hessian=False"):
        plain.hessian_matrix()


# ------------------------------------------------------------------- masks

def brute_row_prune(scores: np.ndarray, sparsity: float, eligible: np.ndarray) -> np.ndarray:
    keep = eligible.copy()
    for r in range(scores.shape[0]):
        idx = np.flatnonzero(eligible[r])
        k = round(sparsity * len(idx))
        order = idx[np.argsort(scores[r, idx], kind="stable")]
        keep[r, order[:k]] = False
    return keep


def test_wanda_row_mask_matches_brute_force():
    W = randn(12, 40, seed=10)
    X = randn(300, 40, seed=11) * torch.linspace(0.1, 5.0, 40)
    stats = InputStatistics()
    stats.update(nn.Linear(40, 12), X)
    scores = wanda_scores(W, stats.column_norms())
    expected_scores = np.abs(W.numpy()) * np.linalg.norm(X.double().numpy(), axis=0)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-6)
    for sparsity in (0.5, 0.3, 0.9):
        keep = row_mask(scores, sparsity)
        assert torch.equal(keep, torch.from_numpy(brute_row_prune(scores.numpy(), sparsity, np.ones((12, 40), bool))))
        assert (keep.logical_not().sum(1) == round(sparsity * 40)).all()
    # Wanda differs from magnitude here (the input norms vary 50x)
    assert not torch.equal(row_mask(scores, 0.5), row_mask(W.abs(), 0.5))


def test_row_mask_eligible_ties_and_rounding():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 2.0, 0.0, 5.0]])
    # ties: lower column pruned first; round(0.5 * 5) = 2 (half to even)
    assert row_mask(scores, 0.5).tolist() == [[False, False, True, True, True], [True, False, True, False, True]]
    eligible = torch.tensor([[True, False, True, True, True], [True, True, True, False, True]])
    keep = row_mask(scores, 0.5, eligible)  # 4 eligible per row: 2 more pruned
    assert keep.tolist() == [[False, False, False, True, True], [True, False, False, False, True]]
    assert not keep[~eligible].any()
    s = randn(9, 31, seed=12)
    e = torch.rand(9, 31, generator=gen(13)) > 0.3
    assert torch.equal(row_mask(s, 0.37, e), torch.from_numpy(brute_row_prune(s.numpy(), 0.37, e.numpy())))
    with pytest.raises(PrunelabError):
        row_mask(s, 1.5)


def brute_nm_keep(scores: np.ndarray, n: int, m: int, eligible: np.ndarray) -> np.ndarray:
    keep = np.zeros_like(eligible)
    for r in range(scores.shape[0]):
        for g0 in range(0, scores.shape[1], m):
            idx = [j for j in range(g0, g0 + m) if eligible[r, j]]
            order = sorted(idx, key=lambda j: (-scores[r, j], j))
            keep[r, order[:n]] = True
    return keep


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_keeps_the_n_largest_of_every_group(n, m):
    scores = randn(10, 48, seed=20 + m)
    scores[0, :m] = 1.0  # a group of ties: the lower columns are kept
    keep = nm_mask(scores, n, m)
    assert (keep.reshape(10, -1, m).sum(2) == n).all()
    assert keep[0, :m].tolist() == [True] * n + [False] * (m - n)
    assert torch.equal(keep, torch.from_numpy(brute_nm_keep(scores.numpy(), n, m, np.ones((10, 48), bool))))
    eligible = torch.rand(10, 48, generator=gen(21)) > 0.4
    keep = nm_mask(scores, n, m, eligible)
    assert not keep[~eligible].any()
    assert torch.equal(keep, torch.from_numpy(brute_nm_keep(scores.numpy(), n, m, eligible.numpy())))
    per_group = keep.reshape(10, -1, m).sum(2)
    assert torch.equal(per_group, eligible.reshape(10, -1, m).sum(2).clamp(max=n))


def test_nm_mask_refuses_a_width_that_is_not_a_multiple_of_m():
    with pytest.raises(PrunelabError, match=r"\(3, 10\)"):
        nm_mask(torch.ones(3, 10), 2, 4)
    with pytest.raises(PrunelabError):
        nm_mask(torch.ones(3, 8), 5, 4)


# --------------------------------------------------------------- SparseGPT

def correlated_inputs(samples, cols, seed, loud=(3, 17, 40)):
    """X = Z @ A (random mixing: correlated columns) with a few high-variance columns."""
    Z = randn(samples, cols, seed=seed, dtype=F64)
    A = randn(cols, cols, seed=seed + 1, dtype=F64) / cols ** 0.5 + torch.eye(cols, dtype=F64) * 0.3
    X = Z @ A
    X[:, list(loud)] *= 20.0
    return X


def naive_sequential_obs(W, H, prune):
    """SparseGPT's update without the Cholesky trick: for each column i left to right, if it is pruned,
    the OBS step on the columns i.. with the explicit inverse of H restricted to them."""
    W = W.clone()
    cols = W.shape[1]
    for i in range(cols):
        Finv = torch.linalg.inv(H[i:, i:])
        for r in range(W.shape[0]):
            if prune[r, i]:
                W[r, i:] -= W[r, i] * Finv[0] / Finv[0, 0]
    return W


def test_sparsegpt_fixed_mask_is_sequential_obs_and_exact_for_prefix_masks():
    rows, cols = 4, 16
    X = correlated_inputs(200, cols, seed=30, loud=(2, 9))
    H = X.T @ X
    W = randn(rows, cols, seed=32, dtype=F64)
    mask = torch.rand(rows, cols, generator=gen(33)) > 0.5
    keep, W_sgpt = sparsegpt(W, H, mask=mask, blocksize=cols, percdamp=0.0, dtype=F64)
    assert torch.equal(keep, mask) and (W_sgpt[~mask] == 0).all()
    # 1) the Cholesky-based update is the greedy left-to-right OBS, computed here with explicit inverses
    torch.testing.assert_close(W_sgpt, naive_sequential_obs(W, H, ~mask), rtol=1e-9, atol=1e-9)
    # 2) it is NOT the exact least-squares reconstruction for a general mask: a kept weight left of a
    #    pruned one never compensates it, and a weight it moved may be zeroed later. With a mask that
    #    SparseGPT did not choose (random here) the greedy result can even be worse than no update
    #    (here about 9.5e5 against 5.5e5; the exact optimum is 2.1e5).
    W_exact = obs_exact(W, H, mask)
    e_sgpt, e_exact = reconstruction_error(W, W_sgpt, H), reconstruction_error(W, W_exact, H)
    assert e_exact < e_sgpt * 0.99
    assert e_exact < reconstruction_error(W, W * mask, H)
    assert not torch.allclose(W_sgpt, W_exact)
    # 3) it is exact when in every row all pruned columns come before all kept ones
    prefix = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        prefix[r, 3 + 3 * r:] = True
    _, W_prefix = sparsegpt(W, H, mask=prefix, blocksize=cols, percdamp=0.0, dtype=F64)
    torch.testing.assert_close(W_prefix, obs_exact(W, H, prefix), rtol=1e-9, atol=1e-9)
    # ... with dampening too, when obs_exact is given the same dampening
    _, W_damp = sparsegpt(W, H, mask=prefix, blocksize=cols, percdamp=0.05, dtype=F64)
    torch.testing.assert_close(W_damp, obs_exact(W, H, prefix, percdamp=0.05), rtol=1e-9, atol=1e-9)
    # 4) the lazy block update changes nothing: small blocks give the one-block result
    for blocksize in (1, 5, 8):
        _, W_blocks = sparsegpt(W, H, mask=mask, blocksize=blocksize, percdamp=0.0, dtype=F64)
        torch.testing.assert_close(W_blocks, W_sgpt, rtol=1e-9, atol=1e-9)


def test_sparsegpt_beats_wanda_and_magnitude():
    rows, cols = 32, 64
    X = correlated_inputs(512, cols, seed=40)
    H = X.T @ X
    W = randn(rows, cols, seed=42)
    norms = torch.linalg.vector_norm(X, dim=0)
    wanda = wanda_scores(W, norms)
    results = {}
    for name, kwargs, mask_of in [
        ("50%", {"sparsity": 0.5}, lambda s: row_mask(s, 0.5)),
        ("2:4", {"n": 2, "m": 4}, lambda s: nm_mask(s, 2, 4)),
    ]:
        keep, W_sgpt = sparsegpt(W, H, blocksize=32, **kwargs)
        assert (W_sgpt[~keep] == 0).all() and W_sgpt.dtype == W.dtype
        if name == "50%":
            assert int((~keep).sum()) == rows * cols // 2
        else:
            assert (keep.reshape(rows, -1, 4).sum(2) == 2).all()
        e_sgpt = reconstruction_error(W, W_sgpt, H)
        e_wanda = reconstruction_error(W, W * mask_of(wanda), H)
        e_mag = reconstruction_error(W, W * mask_of(W.abs()), H)
        results[name] = (e_sgpt, e_wanda, e_mag)
        assert e_sgpt < e_wanda and e_sgpt < e_mag, results
        assert e_wanda < e_mag, results
    print("reconstruction errors (sparsegpt, wanda, magnitude):", results)


def test_sparsegpt_eligible_dead_columns_and_errors():
    rows, cols = 6, 16
    X = correlated_inputs(100, cols, seed=50, loud=(1,))
    X[:, 5] = 0.0  # a dead input
    H = X.T @ X
    W = randn(rows, cols, seed=51)
    eligible = torch.rand(rows, cols, generator=gen(52)) > 0.2
    keep, W_new = sparsegpt(W, H, sparsity=0.5, blocksize=8, eligible=eligible)
    assert not keep[~eligible].any()
    assert (W_new[:, 5] == 0).all() and (W_new[~keep] == 0).all()
    for i1 in (0, 8):  # per block: round(0.5 * 48) = 24 pruned, the forced ones among them
        assert int((~keep[:, i1:i1 + 8]).sum()) == max(24, int((~eligible[:, i1:i1 + 8]).sum()))
    keep, _ = sparsegpt(W, H, n=2, m=4, blocksize=8, eligible=eligible)
    assert not keep[~eligible].any()
    assert torch.equal(keep.reshape(rows, -1, 4).sum(2), eligible.reshape(rows, -1, 4).sum(2).clamp(max=2))
    with pytest.raises(PrunelabError, match="multiple of m"):
        sparsegpt(W, H, n=2, m=4, blocksize=6)
    with pytest.raises(PrunelabError, match="exactly one"):
        sparsegpt(W, H, sparsity=0.5, n=2, m=4)
    with pytest.raises(PrunelabError, match="H has shape"):
        sparsegpt(W, H[:4, :4], sparsity=0.5)


def test_determinism():
    X = correlated_inputs(128, 32, seed=60, loud=(4,))
    H = X.T @ X
    W = randn(8, 32, seed=61)
    a = sparsegpt(W, H, sparsity=0.6, blocksize=16)
    b = sparsegpt(W, H, sparsity=0.6, blocksize=16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    s = wanda_scores(W, torch.linalg.vector_norm(X, dim=0))
    assert torch.equal(row_mask(s, 0.5), row_mask(s.clone(), 0.5))
    assert torch.equal(nm_mask(s, 2, 4), nm_mask(s.clone(), 2, 4))
    model, batch = grasp_model()
    targets = select(model)
    first, second = grasp_scores(model, targets, batch), grasp_scores(model, targets, batch)
    assert all(torch.equal(first[k], second[k]) for k in first)


# ------------------------------------------------------------------ GraSP

def grasp_model():
    model = build(lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), 70).double()
    x = randn(8, 3, seed=71, dtype=F64)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    return model, (x, y)


def finite_difference_hg(model, targets, batch, temperature, h=1e-4):
    """Hg by central differences of the gradient along g (unit direction, rescaled)."""
    x, y = batch
    params = [t.original for t in targets]

    def grad():
        loss = torch.nn.functional.cross_entropy(model(x) / temperature, y)
        return torch.autograd.grad(loss, params)

    g = grad()
    norm = torch.sqrt(sum((gi * gi).sum() for gi in g))
    u = [gi / norm for gi in g]
    with torch.no_grad():
        for p, ui in zip(params, u):
            p.add_(h * ui)
    plus = grad()
    with torch.no_grad():
        for p, ui in zip(params, u):
            p.sub_(2 * h * ui)
    minus = grad()
    with torch.no_grad():
        for p, ui in zip(params, u):
            p.add_(h * ui)
    return [(a - b) / (2 * h) * norm for a, b in zip(plus, minus)]


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_matches_finite_differences(temperature):
    model, batch = grasp_model()
    model.train()
    targets = select(model)
    sentinel = torch.ones_like(targets[0].original)
    targets[0].original.grad = sentinel
    scores = grasp_scores(model, targets, batch, temperature=temperature)
    assert model.training and targets[0].original.grad is sentinel and targets[1].original.grad is None
    model.eval()
    hg = finite_difference_hg(model, targets, batch, temperature)
    for t, h in zip(targets, hg):
        expected = (t.original * h).detach()
        torch.testing.assert_close(scores[t.name], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert float(sum(s.abs().sum() for s in scores.values())) > 0


def test_grasp_already_pruned_weights_score_lowest():
    model, batch = grasp_model()
    keep = torch.rand(4, 3, generator=gen(72)) > 0.4
    torch_prune.custom_from_mask(model[0], "weight", keep)
    targets = select(model)
    scores = grasp_scores(model, targets, batch, temperature=1.0)
    s0 = scores[targets[0].name]
    assert torch.isneginf(s0[~keep]).all() and torch.isfinite(s0[keep]).all()
    hg = finite_difference_hg(model, targets, batch, 1.0)
    expected = (targets[0].effective * hg[0]).detach()
    torch.testing.assert_close(s0[keep], expected[keep], rtol=1e-4, atol=1e-10)
