"""Analyses held to planted answers: chance levels, paired effects, hypotheses, bounded intervals (issue #15)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from prunelab import PrunelabError
from prunelab.analysis.effects import (compare_points, evaluate_hypotheses, min_attainable_p, paired_effect,
                                       power_note, seeds_needed)
from prunelab.analysis.masks import chance_jaccard, chance_overlap, emergent_structure, jaccard
from prunelab.study import mean_ci

SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


def fixed_count_mask(shape, kept: int, gen: torch.Generator) -> torch.Tensor:
    n = math.prod(shape)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:kept]] = True
    return mask.reshape(shape)


# per-tensor kept fractions of three ways of pruning LeNet-300-100 to ~5 % overall
DENSITIES = {
    "layer-wise": {"fc1.weight": 0.05, "fc2.weight": 0.05, "fc3.weight": 0.05},
    "global": {"fc1.weight": 0.035, "fc2.weight": 0.12, "fc3.weight": 0.45},
    "output rate": {"fc1.weight": 0.045, "fc2.weight": 0.045, "fc3.weight": 0.33},
}


@pytest.mark.parametrize("how", list(DENSITIES))
def test_random_mask_pairs_land_at_chance(how):
    """Two independent random masks with a study's per-layer counts: z within ±3 of the per-tensor chance,
    for layer-wise, global and output-rate pruning; the overall-density formula is far off where layers differ."""
    gen = torch.Generator().manual_seed(7)
    counts = {t: round(d * math.prod(SHAPES[t])) for t, d in DENSITIES[how].items()}
    sizes = {t: math.prod(s) for t, s in SHAPES.items()}
    chance = chance_overlap(counts, counts, sizes)
    zs = []
    for _ in range(20):
        a = {t: fixed_count_mask(SHAPES[t], counts[t], gen) for t in SHAPES}
        b = {t: fixed_count_mask(SHAPES[t], counts[t], gen) for t in SHAPES}
        zs.append(chance.z(jaccard(a, b)["overall"]))
    assert max(abs(z) for z in zs) < 3.5 and abs(np.mean(zs)) < 3 / math.sqrt(len(zs)) * 1.5
    density = sum(counts.values()) / sum(sizes.values())
    naive = chance_jaccard(density, density)
    if how == "layer-wise":
        assert chance.mean == pytest.approx(naive, rel=0.02)
    else:  # the old baseline made random masks look "above chance"
        assert chance.mean > naive and chance.z(naive) < -3


def test_per_tensor_chance_is_the_exact_hypergeometric_expectation():
    rng = np.random.default_rng(0)
    n, ka, kb = 20, 5, 8
    sims = []
    for _ in range(20_000):
        a, b = rng.permutation(n) < ka, rng.permutation(n) < kb
        sims.append((a & b).sum() / (a | b).sum())
    exact = chance_overlap({"w": ka}, {"w": kb}, {"w": n}).per_tensor["w"]
    assert abs(np.mean(sims) - exact) < 3 * np.std(sims) / math.sqrt(len(sims))
    # a large tensor: the windowed log-binomial sum equals the pmf over the whole support
    from scipy.stats import hypergeom

    n, ka, kb = 235_200, 8_000, 9_000
    i = np.arange(0, kb + 1)
    whole = float(np.sum(hypergeom(n, ka, kb).pmf(i) * i / (ka + kb - i)))
    assert chance_overlap({"w": ka}, {"w": kb}, {"w": n}, draws=10).per_tensor["w"] == pytest.approx(whole, rel=1e-9)
    with pytest.raises(PrunelabError, match="kept counts"):
        chance_overlap({"w": 30}, {"w": 1}, {"w": 20})


def test_structure_expectation_matches_random_pruning_and_finds_planted_structure():
    gen = torch.Generator().manual_seed(1)
    shape, pruned = (10, 3), 15  # small groups of a small tensor: s^g = 0.125, the exact chance 0.112
    fractions = []
    for _ in range(3000):
        keep = fixed_count_mask(shape, shape[0] * shape[1] - pruned, gen)
        row = next(s for s in emergent_structure({"w": keep}) if s.group == "output units")
        fractions.append(row.fraction)
    expected = row.expected
    assert abs(np.mean(fractions) - expected) < 3 * np.std(fractions) / math.sqrt(len(fractions))
    assert expected == pytest.approx(math.comb(15, 3) / math.comb(30, 3))
    assert abs(np.mean(fractions) - 0.5 ** 3) > 3 * np.std(fractions) / math.sqrt(len(fractions))
    planted = torch.ones(shape, dtype=torch.bool)
    planted[:5] = False  # 5 whole units pruned = 15 weights, the same count
    row = next(s for s in emergent_structure({"w": planted}) if s.group == "output units")
    assert row.fraction == 0.5 and row.expected == pytest.approx(expected) and row.excess > 0.35


def _frame(effect: float, seeds: int, noise: float = 0.01, rounds=(1, 2, 3), seed: int = 0):
    """A study table with a ticket beating its reinit control by ``effect`` at every round."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        rows.append({"config": None, "branch": "dense", "kind": "dense", "of": None, "dataset": "d", "seed": s,
                     "round": 0, "remaining": 100.0, "test.accuracy": 0.95 + rng.normal(0, noise)})
        for r in rounds:
            base = 0.9 - 0.02 * r + rng.normal(0, noise)
            rows.append({"config": None, "branch": "ticket", "kind": "imp", "of": None, "dataset": "d", "seed": s,
                         "round": r, "remaining": 100 * 0.5 ** r, "test.accuracy": base + effect})
            rows.append({"config": None, "branch": "reinit", "kind": "reinit", "of": "ticket", "dataset": "d",
                         "seed": s, "round": r, "remaining": 100 * 0.5 ** r,
                         "test.accuracy": base + rng.normal(0, noise)})
    frame = pd.DataFrame(rows)
    frame.attrs["comparisons"] = [["ticket", "dense", 0], ["ticket", "reinit"]]
    return frame


def test_a_planted_effect_is_found_with_its_size_and_a_null_is_not():
    table = compare_points(_frame(0.05, seeds=8))
    vs = table[table.b == "reinit"]
    assert len(vs) == 3 and (vs.ci_low > 0).all() and ((vs.ci_low < 0.05) & (vs.ci_high > 0.05)).all()
    assert vs.p.tolist() == pytest.approx([2 / 2 ** 8] * 3)  # every seed agrees: the exact test's floor
    assert vs.p_adjusted.tolist() == pytest.approx([3 * 2 / 2 ** 8] * 3)  # Holm over this comparison's 3 rounds
    null = compare_points(_frame(0.0, seeds=8, seed=3))
    vs = null[null.b == "reinit"]
    assert ((vs.ci_low < 0) & (vs.ci_high > 0)).sum() >= 2
    whole = compare_points(_frame(0.05, seeds=8), family="table")
    assert set(whole.family) == {"table"} and (whole.p_adjusted >= whole.p).all()


def test_minimum_attainable_p_and_seeds_needed():
    assert min_attainable_p(4, "permutation") == 0.125 and min_attainable_p(4, "t") == 0
    assert seeds_needed(1, "permutation") == 6  # 2 / 64 < 0.05
    assert seeds_needed(30, "permutation") == 11  # 30 x 2 / 2^11 < 0.05 <= 30 x 2 / 2^10
    table = compare_points(_frame(0.3, seeds=4))
    note = power_note(table, "permutation")
    assert "cannot give p below 0.125" in note and "at least 7 seeds" in note  # family of 3: 3 x 2 / 2^7 < 0.05
    assert power_note(compare_points(_frame(0.3, seeds=8)), "permutation") is None


def test_paired_effect_against_scipy():
    from scipy import stats

    d = np.array([0.21, 0.3, 0.25, 0.28])
    mean, lo, hi, dz = paired_effect(d)
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (mean, lo, hi) == pytest.approx((d.mean(), ci.low, ci.high)) and dz == pytest.approx(d.mean() / d.std(ddof=1))


def test_declared_hypotheses_on_planted_effects():
    frame = _frame(0.05, seeds=4)
    hyps = [{"claim": "ticket > reinit", "remaining_at_most": 30},  # rounds 2 and 3 (25 %, 12.5 %)
            {"claim": "ticket < reinit"},
            {"claim": "ticket >= reinit", "margin": 0.01, "test": "permutation"},
            {"claim": "ticket > dense", "rounds": [1]}]
    out = evaluate_hypotheses(frame, hyps, value="test.accuracy")
    first, second, third, fourth = out
    assert first.rounds == (2, 3) and first.supported and first.ci_low > 0
    assert second.verdict == "not supported" and second.p > 0.5
    assert third.p == pytest.approx(1 / 16)  # one-sided exact sign-flip floor with 4 seeds
    assert third.verdict == "not supported"  # Holm x 4 of 1/16: the family is honest about 4 seeds
    assert fourth.rounds == (1,) and fourth.verdict == "not supported"  # 0.88 + 0.05 < 0.95 dense
    assert [r.p_adjusted for r in out] == pytest.approx(
        __import__("prunelab.analysis.stats", fromlist=["holm"]).holm([r.p for r in out]))
    missing = evaluate_hypotheses(frame, [{"claim": "ticket > reinit", "remaining_at_most": 1}], value="test.accuracy")
    assert missing[0].verdict.startswith("not testable")


def test_hypotheses_are_validated_against_the_spec(tmp_path):
    from prunelab.spec import load_spec

    from .test_study import TINY, write_spec

    base = TINY.split("[transfer.sgd]")[0]
    good = write_spec(tmp_path, base + '\n[[hypotheses]]\nclaim = "ticket > reinit"\nremaining_at_most = 60\n')
    assert load_spec(good).hypotheses[0].parts == ("ticket", ">", "reinit")
    for text, message in [('claim = "ticket > nope"', "no study row 'nope'"),
                          ('claim = "ticket >= reinit"', "needs margin > 0"),
                          ('claim = "ticket beats reinit"', "must read 'A > B'"),
                          ('claim = "dense < ticket"', "dense reference on the right"),
                          ('claim = "ticket > reinit"\nrounds = [9]', "has rounds 1..")]:
        path = write_spec(tmp_path, base + f"\n[[hypotheses]]\n{text}\n")
        with pytest.raises(PrunelabError, match=message):
            load_spec(path)


def test_intervals_of_bounded_metrics_stay_in_range():
    mean, lo, hi = mean_ci([1.0, 0.96, 1.0])
    assert hi > 1  # the t interval alone leaves the range
    mean, lo, hi = mean_ci([1.0, 0.96, 1.0], bounds=(0.0, 1.0))
    assert hi == 1.0 and lo < mean < hi


def test_a_thousand_seeds_neither_overflow_nor_crawl():
    """From 14 seeds the sign-flip test is randomised (9,999 flips): its floor is 1/10,000 (2/10,000
    two-sided), not 2^-n (which overflowed a float at a thousand seeds); one-sided p is scipy's."""
    from scipy import stats

    from prunelab.analysis.effects import paired_p

    assert min_attainable_p(13, "permutation") == pytest.approx(2 / 2 ** 13)
    assert min_attainable_p(14, "permutation") == pytest.approx(2 / 10_000)
    assert min_attainable_p(1389, "permutation") == pytest.approx(2 / 10_000)
    assert min_attainable_p(1389, "wilcoxon") == 0.0 and min_attainable_p(1389, "permutation", "greater") == 1e-4
    assert seeds_needed(1000, "permutation") is None  # 1000 x 2/10,000 >= 0.05 whatever the seeds
    rng = np.random.default_rng(0)
    for n in (14, 40):
        a, b = rng.normal(0.8, 0.05, n), rng.normal(0.79, 0.05, n)
        ref = stats.permutation_test((a - b + 0.01,), np.mean, permutation_type="samples", alternative="greater",
                                     n_resamples=9999, random_state=np.random.default_rng(0)).pvalue
        assert paired_p(a, b, "permutation", "greater", margin=0.01) == pytest.approx(ref, abs=1e-12)


def test_paired_t_without_spread_up_to_rounding_is_undefined_not_a_crash():
    from prunelab.analysis.effects import paired_p

    a = np.array([0.1, 0.1, 0.1])
    b = np.array([0.0, np.nextafter(0.0, 1.0), 0.0])  # a − b: equal up to one ulp, standard deviation 0.0
    assert np.isnan(paired_p(a, b, "t", "greater"))
