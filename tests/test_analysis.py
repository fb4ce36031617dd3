import math

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score

from prunelab import PrunelabError
from prunelab.analysis import (bootstrap_ci, chance_jaccard, emergent_structure, group_metrics, holm, jaccard,
                               paired_test, pareto_front, per_class_impact, select_operating_point, similarity_matrix,
                               weight_stability)
from prunelab.tasks import Split, evaluate


def random_masks(seed, p=0.3, shapes=((20, 30), (10, 20))):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}.weight": torch.rand(s, generator=g) < p for i, s in enumerate(shapes)}


def test_jaccard_equals_brute_force_sets():
    a, b = random_masks(0), random_masks(1, p=0.6)
    got = jaccard(a, b)
    everything_a, everything_b = set(), set()
    for name in a:
        sa = {i for i, v in enumerate(a[name].flatten().tolist()) if v}
        sb = {i for i, v in enumerate(b[name].flatten().tolist()) if v}
        assert got[name] == pytest.approx(len(sa & sb) / len(sa | sb))
        everything_a |= {(name, i) for i in sa}
        everything_b |= {(name, i) for i in sb}
    assert got["overall"] == pytest.approx(len(everything_a & everything_b) / len(everything_a | everything_b))
    with pytest.raises(PrunelabError, match="different tensors"):
        jaccard(a, {"l0.weight": a["l0.weight"]})


@pytest.mark.parametrize("p, q", [(0.2, 0.2), (0.1, 0.5), (0.8, 0.3)])
def test_chance_level_matches_simulation(p, q):
    rng = np.random.default_rng(0)
    n, trials = 1000, 10_000  # 10,000 random mask pairs of 1,000 weights
    a = rng.random((trials, n)) < p
    b = rng.random((trials, n)) < q
    sims = (a & b).sum(1) / np.maximum((a | b).sum(1), 1)
    mean, se = sims.mean(), sims.std(ddof=1) / math.sqrt(trials)
    assert abs(mean - chance_jaccard(p, q)) < 3 * se


def test_similarity_matrix_is_symmetric_with_per_tensor_chance():
    from prunelab.analysis.masks import chance_overlap

    masks = {"a": random_masks(0), "b": random_masks(1), "c": random_masks(0)}
    labels, sim, chance, z = similarity_matrix(masks)
    assert labels == ["a", "b", "c"] and np.allclose(sim, sim.T) and sim[0, 2] == 1.0
    counts = {k: {t: int(m.sum()) for t, m in v.items()} for k, v in masks.items()}
    sizes = {t: m.numel() for t, m in masks["a"].items()}
    assert chance[0, 1] == pytest.approx(chance_overlap(counts["a"], counts["b"], sizes).mean)
    assert abs(z[0, 1]) < 3  # independent random masks sit at chance


def test_emergent_structure_against_hand_counts():
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[1] = False  # one fully pruned output unit (row)
    keep[:, 3] = False  # one fully pruned input unit (column)
    rows = {s.group: s for s in emergent_structure({"fc.weight": keep})}
    assert rows["output units"].fraction == pytest.approx(1 / 4)
    assert rows["input units"].fraction == pytest.approx(1 / 5)
    # 5 + 4 - 1 = 8 of 20 pruned: a given group of g weights is all pruned with chance C(8, g) / C(20, g)
    assert rows["output units"].expected == pytest.approx(math.comb(8, 5) / math.comb(20, 5))
    assert rows["input units"].expected == pytest.approx(math.comb(8, 4) / math.comb(20, 4))
    conv = torch.ones(2, 3, 2, 2, dtype=torch.bool)
    conv[0, 1] = False  # one kernel
    groups = {x.group: x for x in emergent_structure({"c.weight": conv})}
    assert groups["kernels"].fraction == pytest.approx(1 / 6) and groups["kernels"].size == 4
    assert groups["filters"].size == 12 and groups["input channels"].size == 8


def brute_force_front(points, maximize):
    signs = np.where(maximize, 1, -1)
    p = points * signs
    front = []
    for i in range(len(p)):
        if not any(np.all(p[j] >= p[i]) and np.any(p[j] > p[i]) for j in range(len(p)) if j != i):
            front.append(i)
    return front


@pytest.mark.parametrize("dims, seed", [(2, 0), (3, 1), (3, 2)])
def test_pareto_front_equals_brute_force(dims, seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(60, dims)).astype(float)  # many ties
    maximize = [True, True, False][:dims]
    assert pareto_front(points, maximize).tolist() == brute_force_front(points, maximize)


def test_operating_point_with_and_without_fairness():
    rows = [
        {"sparsity": 0.5, "acc": 0.95, "worst": 0.90},
        {"sparsity": 0.8, "acc": 0.945, "worst": 0.85},
        {"sparsity": 0.9, "acc": 0.90, "worst": 0.70},
    ]
    out = select_operating_point(rows, efficiency="sparsity", accuracy="acc", dense_accuracy=0.955,
                                 max_accuracy_drop=0.01, worst="worst", dense_worst=0.91, max_worst_drop=0.02)
    assert out["without_fairness"]["sparsity"] == 0.8 and out["with_fairness"]["sparsity"] == 0.5
    assert out["changed"] and "0.8 → 0.5" in out["statement"]
    same = select_operating_point(rows, efficiency="sparsity", accuracy="acc", dense_accuracy=0.955,
                                  max_accuracy_drop=0.01, worst="worst", dense_worst=0.91, max_worst_drop=0.1)
    assert not same["changed"] and "does not change" in same["statement"]


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(7)
    hits, trials = 0, 150
    for t in range(trials):
        sample = rng.exponential(scale=2.0, size=25)  # true mean 2.0, skewed
        _, lo, hi = bootstrap_ci(sample, n_resamples=2000, seed=t)
        hits += lo <= 2.0 <= hi
    assert 0.85 <= hits / trials <= 0.99
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(PrunelabError, match="at least 2"):
        bootstrap_ci([1.0])


def test_paired_tests_and_holm():
    a = [0.91, 0.92, 0.93, 0.94, 0.95]
    b = [0.90, 0.905, 0.91, 0.92, 0.93]  # a > b on every seed
    assert paired_test(a, b) == pytest.approx(2 / 32)  # exact sign-flip: 2 of 32 assignments
    assert paired_test(a, a) == 1.0
    assert paired_test(a, b, "wilcoxon") == pytest.approx(0.0625)
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    with pytest.raises(PrunelabError, match="same length"):
        paired_test([1.0], [1.0, 2.0])


class Fixed(torch.nn.Module):
    def forward(self, x):
        return x


def test_per_class_impact_against_scikit_learn():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 4, 300))
    dense_logits = torch.tensor(rng.normal(size=(300, 4)), dtype=torch.float32)
    dense_logits[torch.arange(300), y] += 2.0
    pruned_logits = dense_logits.clone()
    pruned_logits[y == 2, 2] -= 2.5  # class 2 pays for sparsity
    names = ("a", "b", "c", "d")
    dense = evaluate(Fixed(), Split(dense_logits, y), names)
    pruned = evaluate(Fixed(), Split(pruned_logits, y), names)
    impact = per_class_impact(dense, pruned, threshold=0.05)
    ref = recall_score(y, pruned_logits.argmax(1), average=None) - recall_score(y, dense_logits.argmax(1), average=None)
    np.testing.assert_allclose(impact.delta, ref)
    assert impact.hurt == ["c"]
    assert impact.disparity()["worst"] == pytest.approx(impact.pruned_recall.min())


def test_group_metrics_against_a_hand_group_by():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.8, y, rng.integers(0, 3, 200))
    groups = rng.choice(["x", "y"], 200)
    out = group_metrics(y, pred, groups)
    for g in ("x", "y"):
        sel = groups == g
        assert out["by_group"][g]["accuracy"] == pytest.approx((y[sel] == pred[sel]).mean())
    accs = [out["by_group"][g]["accuracy"] for g in ("x", "y")]
    assert out["difference"]["accuracy"] == pytest.approx(max(accs) - min(accs))


def test_weight_stability_by_hand():
    start = {"w": torch.tensor([1.0, -2.0, 3.0, 4.0])}
    end = {"w": torch.tensor([1.5, 2.0, 3.0, 100.0])}
    keep = {"w": torch.tensor([True, True, True, False])}
    s = weight_stability(start, end, keep)["w"]
    assert s["sign_agreement"] == pytest.approx(2 / 3)
    assert s["distance"] == pytest.approx(math.sqrt(0.25 + 16) / math.sqrt(14))
    a, b = np.array([1, -2, 3.0]), np.array([1.5, 2, 3.0])
    assert s["cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_compare_on_a_study_store_uses_the_recorded_comparisons(tmp_path):
    from prunelab.analysis.effects import compare_points
    from prunelab.analysis.tables import study_points
    from prunelab.experiment import open_store
    from prunelab.spec import load_spec
    from prunelab.study import build_study

    from .test_study import TINY, write_spec
    from .conftest import run_cli_here

    text = TINY.split("[branches.late]")[0] + '\n[branches.reinit]\ncontrol = "reinit"\nof = "ticket"\n'
    path = write_spec(tmp_path, text)
    tree = build_study(load_spec(path))
    assert tree.experiment.run().ok
    results = open_store(tmp_path / "store")
    points = study_points(results)
    assert set(points.branch) == {"dense", "ticket", "reinit"} and set(points.seed) == {0, 1}
    assert set(zip(points.branch, points.kind)) == {("dense", "dense"), ("ticket", "imp"), ("reinit", "reinit")}
    assert set(points[points.branch == "reinit"]["of"]) == {"ticket"}
    table = compare_points(points)
    assert set(zip(table.a, table.b)) == {("ticket", "dense"), ("ticket", "reinit")}  # the planned ones only
    pair = table[(table.a == "ticket") & (table.b == "reinit")]
    assert list(pair["round"]) == [1, 2]
    row = pair.iloc[0]
    ticket = points[(points.branch == "ticket") & (points["round"] == 1)].sort_values("seed")
    reinit = points[(points.branch == "reinit") & (points["round"] == 1)].sort_values("seed")
    diff = ticket["test.accuracy"].to_numpy() - reinit["test.accuracy"].to_numpy()
    assert row.difference == pytest.approx(diff.mean())
    assert row.p == pytest.approx(paired_test(ticket["test.accuracy"].to_numpy(), reinit["test.accuracy"].to_numpy()))
    assert pair.p_adjusted.tolist() == pytest.approx(holm(pair.p.tolist()))  # family: this comparison's rounds
    exploratory = compare_points(points, exploratory=True)
    assert exploratory["planned"].all()  # ticket/reinit/dense pairs are all planned already
    out = run_cli_here("compare", str(tmp_path / "store"))
    assert out.returncode == 0 and "planned comparisons" in out.stdout and "cannot give p below 0.5" in out.stdout
    bad = run_cli_here("compare", str(tmp_path / "store"), "--metric", "test.nope")
    assert bad.returncode == 2 and "no metric 'test.nope'" in bad.stderr
    bad = run_cli_here("compare", str(tmp_path / "store"), "--family", "everything")
    assert bad.returncode == 2 and "--family 'everything'" in bad.stderr


def test_with_three_seeds_the_bootstrap_undercovers_and_t_does_not():
    """Why ``interval="auto"`` uses Student t below 30 seeds (measured, fixed seed)."""
    from prunelab.study import mean_ci

    rng = np.random.default_rng(3)
    hits = {"t": 0, "bootstrap": 0}
    trials = 300
    for t in range(trials):
        sample = rng.normal(0.9, 0.02, size=3).tolist()  # 3 seeds of an accuracy
        for method in hits:
            _, lo, hi = (mean_ci(sample, method="t") if method == "t" else
                         bootstrap_ci(sample, n_resamples=1000, seed=t, method="percentile"))
            hits[method] += lo <= 0.9 <= hi
    assert 0.91 <= hits["t"] / trials <= 0.98
    assert hits["bootstrap"] / trials <= 0.85  # a 3-value bootstrap resamples at most 10 distinct means
    assert mean_ci([0.1, 0.2, 0.4], method="bootstrap") == pytest.approx(bootstrap_ci([0.1, 0.2, 0.4]))
    with pytest.raises(PrunelabError, match="interval method 'normal'"):
        mean_ci([0.1, 0.2], method="normal")


def test_exact_sign_flip_equals_scipy_permutation_test():
    """The enumerated sign-flip test (used up to 13 pairs, for speed) gives scipy's p exactly, ties included."""
    from scipy import stats

    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 8, 13):
        for _ in range(5):
            a = np.round(rng.normal(0.8, 0.05, n), 2)
            b = np.round(a - rng.normal(0.02, 0.05, n), 2)  # rounding makes ties
            if np.all(a == b):
                continue
            ref = stats.permutation_test((a - b,), np.mean, permutation_type="samples", alternative="two-sided",
                                         n_resamples=9999, random_state=np.random.default_rng(0)).pvalue
            assert paired_test(a, b) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_intervals_equal_scipy_bootstrap(method):
    """bootstrap_cis draws scipy's resamples and applies its formulas: the same interval as
    scipy.stats.bootstrap (up to the order of float sums), skewed data and ties included; columns of
    one length share their draws and still get each its own scipy interval."""
    from scipy import stats

    from prunelab.analysis.stats import bootstrap_cis

    rng = np.random.default_rng(7)
    for n in (5, 40, 300):
        columns = [np.round(0.9 + rng.normal(0, 0.01, n), 3), rng.lognormal(0, 1, n), rng.exponential(size=n)]
        mine = bootstrap_cis(columns, method=method)
        for column, (mean, low, high) in zip(columns, mine):
            ref = stats.bootstrap((column,), np.mean, n_resamples=9999, method=method,
                                  random_state=np.random.default_rng(0)).confidence_interval
            assert mean == pytest.approx(column.mean(), rel=1e-12)
            assert low == pytest.approx(ref.low, rel=1e-6) and high == pytest.approx(ref.high, rel=1e-6)
    assert bootstrap_cis([[0.5, 0.5, 0.5]])[0] == (0.5, 0.5, 0.5)
    with pytest.raises(PrunelabError, match="at least 2 values"):
        bootstrap_cis([[1.0]])


def test_random_sign_flip_equals_scipy_permutation_test():
    """Above 13 pairs the sign-flip test is randomised: scipy's flips, its tie rule and its
    (count + 1) / (n + 1), computed in batches; the p-values are scipy's exactly."""
    from scipy import stats

    rng = np.random.default_rng(3)
    for n in (14, 20, 57, 300):
        a = np.round(rng.normal(0.8, 0.05, n), 3)
        b = np.round(a - rng.normal(0.01, 0.05, n), 3)
        ref = stats.permutation_test((a - b,), np.mean, permutation_type="samples", alternative="two-sided",
                                     n_resamples=9999, random_state=np.random.default_rng(0)).pvalue
        assert paired_test(a, b) == pytest.approx(ref, abs=1e-12)


def test_mean_cis_are_mean_ci_column_by_column():
    from prunelab.study import mean_ci, mean_cis

    rng = np.random.default_rng(0)
    columns = [rng.normal(0.9, 0.02, 40).tolist(), rng.normal(0.5, 0.1, 40).tolist(), [0.7, 0.8, 0.75],
               rng.normal(0.9, 0.02, 35).tolist(), [0.3]]
    for method in ("auto", "t", "bootstrap"):
        together = mean_cis(columns[:4], method=method, bounds=(0.0, 1.0))
        assert together == [mean_ci(c, method=method, bounds=(0.0, 1.0)) for c in columns[:4]]
    mean, lo, hi = mean_cis([columns[4]])[0]
    assert mean == 0.3 and lo != lo and hi != hi  # one value: no interval
