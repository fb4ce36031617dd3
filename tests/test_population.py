"""Population analyses (analysis/population.py) against planted answers: a planted class effect of known
size is found and only it; a null population flags at the nominal rate; planted forgotten examples are
the PIEs; a planted growth of PIEs or of a class's loss is supported, a flat one is not."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from prunelab.analysis.effects import evaluate_hypotheses
from prunelab.analysis.population import (Populations, class_pays_trend, class_population_test, class_recalls,
                                          class_sensitivity, correlation, modal_predictions,
                                          pruning_identified_exemplars)
from prunelab.errors import PrunelabError

N_CLASSES = 10


def _labels(n=2000, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % N_CLASSES)


def _population(labels, p_correct, models, rng, wrong=None):
    """Each model predicts each example correctly with probability ``p_correct`` (per example); a wrong
    prediction is ``wrong`` (per example) or a uniformly drawn other class."""
    n = len(labels)
    correct = rng.random((models, n)) < p_correct[None, :]
    other = (labels[None, :] + rng.integers(1, N_CLASSES, size=(models, n))) % N_CLASSES
    if wrong is not None:
        other = np.where(wrong[None, :] >= 0, wrong[None, :], other)
    return np.where(correct, labels[None, :], other).astype(np.int16)


def test_class_recalls_match_sklearn():
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(1)
    labels = _labels(500)
    preds = _population(labels, np.full(500, 0.7), 3, rng)
    recall, accuracy = class_recalls(labels, preds, N_CLASSES)
    for m in range(3):
        assert np.allclose(recall[m], recall_score(labels, preds[m], average=None))
        assert accuracy[m] == pytest.approx((preds[m] == labels).mean())


def test_planted_class_is_flagged_with_its_size():
    rng = np.random.default_rng(2)
    labels = _labels()
    dense = _population(labels, np.full(len(labels), 0.95), 30, rng)
    p = np.where(labels == 3, 0.80, 0.93)
    pruned = _population(labels, p, 30, rng)
    table = class_population_test(labels, dense, pruned).set_index("class")
    planted = (0.80 - (0.9 * 0.93 + 0.1 * 0.80)) - 0.0  # class 3 recall minus accuracy, pruned − dense
    row = table.loc["3"]
    assert row["ci_low"] < planted < row["ci_high"]
    assert row["flagged"] and row["difference"] < 0 and row["hedges_g"] < -2
    hurt = set(table.index[table["flagged"] & (table["difference"] < 0)])
    assert hurt == {"3"}
    # the Welch test is scipy's
    from scipy import stats

    d = class_recalls(labels, dense, N_CLASSES)
    q = class_recalls(labels, pruned, N_CLASSES)
    ref = stats.ttest_ind(q[0][:, 3] - q[1], d[0][:, 3] - d[1], equal_var=False)
    assert row["p"] == pytest.approx(ref.pvalue)


def test_null_population_flags_at_the_nominal_rate():
    """Pruned = dense with new seeds: raw p < 0.05 in about 5 % of the classes, Holm's family-wise rate ≤ 5 %."""
    rng = np.random.default_rng(3)
    labels = _labels(1000)
    difficulty = rng.beta(8, 1, size=len(labels))  # examples differ in how hard they are, shared by both
    raw, family = [], []
    for _ in range(150):
        a = _population(labels, difficulty, 12, rng)
        b = _population(labels, difficulty, 12, rng)
        t = class_population_test(labels, a, b)
        raw.extend(t["p"] < 0.05)
        family.append(t["flagged"].any())
    assert 0.03 < np.mean(raw) < 0.075
    assert np.mean(family) < 0.09
    bh = class_population_test(labels, a, b, correction="bh")
    assert (bh["p_adjusted"] <= t["p_adjusted"] + 1e-12).all()  # BH is never stricter than Holm
    with pytest.raises(PrunelabError, match="correction"):
        class_population_test(labels, a, b, correction="bonferroni")


def test_modal_prediction_is_the_brute_force_mode():
    rng = np.random.default_rng(4)
    preds = rng.integers(0, 4, size=(7, 300))
    expected = [np.bincount(col, minlength=4).argmax() for col in preds.T]
    assert (modal_predictions(preds, 4) == expected).all()


def _forgetting(labels, rng, planted, models=20, forget=0.85):
    """Dense and pruned populations where the pruned models mostly predict (label + 1) on ``planted``."""
    base = np.full(len(labels), 0.97)
    dense = _population(labels, base, models, rng)
    p = base.copy()
    p[planted] = 1 - forget
    wrong = np.full(len(labels), -1)
    wrong[planted] = (labels[planted] + 1) % N_CLASSES
    return dense, _population(labels, p, models, rng, wrong)


def test_planted_forgotten_examples_are_the_pies():
    rng = np.random.default_rng(5)
    labels = _labels()
    planted = rng.choice(len(labels), 40, replace=False)
    dense, pruned = _forgetting(labels, rng, planted)
    pies = pruning_identified_exemplars(labels, dense, pruned)
    assert set(pies.indices) == set(planted)
    assert (pies.pruned_mode == (pies.labels + 1) % N_CLASSES).all() and (pies.dense_mode == pies.labels).all()
    assert pies.count_ci[0] <= 40 <= pies.count_ci[1]
    independent = pruning_identified_exemplars(labels, dense, pruned, paired=False)  # each population in turn
    assert independent.count == 40 and independent.count_ci[0] <= 40 <= independent.count_ci[1]
    with pytest.raises(PrunelabError, match="as many models"):
        pruning_identified_exemplars(labels, dense, pruned[:5], paired=True)
    assert pies.accuracy["pruned"]["pies"][0] < 0.3 < 0.9 < pies.accuracy["pruned"]["rest"][0]
    # a null population (the same models' distribution, new seeds) gives no PIE here
    null = pruning_identified_exemplars(labels, dense, _population(labels, np.full(len(labels), 0.97), 20, rng))
    assert null.count <= 2


def _study(rng, planted_per_round, rounds=4, seeds=8, n=1500, class_drop=0.0):
    """A fake study: a points table and each state's predictions, without a store."""
    labels = _labels(n)
    base = np.full(n, 0.96)
    rows, predictions = [], {}

    def add(branch, kind, rnd, seed, preds):
        h = f"{branch}{rnd}s{seed}".ljust(64, "0")
        predictions[h] = preds
        recall, acc = class_recalls(labels, preds[None, :], N_CLASSES)
        rows.append({"hash": h, "config": None, "branch": branch, "kind": kind, "round": rnd, "seed": seed,
                     "remaining": 100 * 0.8 ** rnd, "test.accuracy": float(acc[0]), "recall": list(recall[0]),
                     "class_names": tuple(str(c) for c in range(N_CLASSES))})

    order = rng.permutation(n)
    for s in range(seeds):
        add("dense", "dense", 0, s, _population(labels, base, 1, rng)[0])
        for r in range(1, rounds + 1):
            p = np.where(labels == 3, base - class_drop * r, base)
            planted = order[:planted_per_round * r]
            p[planted] = 0.1
            wrong = np.full(n, -1)
            wrong[planted] = (labels[planted] + 1) % N_CLASSES
            add("global", "imp", r, s, _population(labels, p, 1, rng, wrong)[0])
    points = pd.DataFrame(rows)
    populations = Populations(None, points)
    populations._predictions.update(predictions)  # what population_predictions would compute from a store
    populations.labels, populations.dataset = labels, "planted"
    return points, populations


def test_pies_grow_when_planted_and_not_when_flat():
    rng = np.random.default_rng(6)
    _, growing = _study(rng, planted_per_round=15)
    trend = growing.pies_trend("global")
    assert trend["p"] < 0.01 and trend["ci_low"] > 5 and trend["counts"][-1] > trend["counts"][0]
    _, flat = _study(rng, planted_per_round=0)
    assert flat.pies_trend("global")["p"] > 0.05
    per_round = growing.pies("global")
    assert [r for r, _, _ in per_round] == [1, 2, 3, 4]
    assert all(p.count >= 15 * r - 3 for r, _, p in per_round)
    tests = growing.class_tests("global")
    assert set(tests["round"]) == {1, 2, 3, 4} and len(tests) == 4 * N_CLASSES


def test_class_pays_hypothesis_on_a_planted_trend():
    rng = np.random.default_rng(7)
    points, populations = _study(rng, planted_per_round=10, class_drop=0.05)
    seeds, rounds, slopes = class_pays_trend(points, "3", "global")
    assert len(seeds) == 8 and rounds == [1, 2, 3, 4]
    assert -0.07 < slopes.mean() < -0.03  # planted: class 3's recall falls 0.05 a round
    hypotheses = [{"claim": "class 3 pays in global"}, {"claim": "class 5 pays in global"},
                  {"claim": "pies grow in global"}]
    out = evaluate_hypotheses(points, hypotheses, value="test.accuracy", populations=populations)
    verdicts = {r.claim: r.verdict for r in out}
    assert verdicts == {"class 3 pays in global": "supported", "class 5 pays in global": "not supported",
                        "pies grow in global": "supported"}
    assert all(r.p_adjusted >= r.p for r in out)
    without = evaluate_hypotheses(points, hypotheses[2:], value="test.accuracy")
    assert without[0].verdict.startswith("not testable")
    with pytest.raises(PrunelabError, match="class '11'"):
        class_pays_trend(points, "11", "global")


def test_population_claims_in_the_spec(tmp_path):
    from prunelab.spec import HypothesisSection, load_spec

    def load_spec_text(text):
        (tmp_path / "s.toml").write_text(text)
        return load_spec(tmp_path / "s.toml")

    assert HypothesisSection(claim="class 3 pays in global").population == ("class", "3", "global")
    assert HypothesisSection(claim="pies grow in my branch").population == ("pies", None, "my branch")
    with pytest.raises(ValueError, match="test does not apply"):
        HypothesisSection(claim="pies grow in global", test="permutation")
    base = """
[study]
name = "s"
seeds = [0, 1]
[task]
dataset = "digits"
model = "mlp"
[training]
iterations = 10
[branches.global]
technique = "global_unstructured"
rounds = {rounds}
[[hypotheses]]
claim = "{claim}"
"""
    load_spec_text(base.format(rounds=3, claim="class 3 pays in global"))
    for rounds, claim, error in ((1, "pies grow in global", "needs two or more"),
                                 (3, "pies grow in dense", "dense row"),
                                 (3, "pies grow in nowhere", "no study row")):
        with pytest.raises(PrunelabError, match=error):
            load_spec_text(base.format(rounds=rounds, claim=claim))


@pytest.mark.parametrize("layers", ["linear", "conv"])  # the closed-form norms of Linear layers, and torch.func's
def test_class_sensitivity_against_per_example_backward(layers):
    torch.manual_seed(0)
    if layers == "linear":
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3, bias=False))
        x = torch.randn(40, 5)
    else:
        model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6, 3))
        x = torch.randn(40, 1, 5)
    y = torch.arange(40) % 3
    table = class_sensitivity(model, x, y, 3, chunk=16)
    norms, margins = [], []
    for xi, yi in zip(x, y):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        norms.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
        prob = model(xi[None]).softmax(1)[0].detach()
        margins.append(float(prob[yi] - torch.cat([prob[:yi], prob[yi + 1:]]).max()))
    for c in range(3):
        assert table.loc[c, "grad_norm"] == pytest.approx(np.mean(np.array(norms)[y.numpy() == c]), rel=1e-5)
        assert table.loc[c, "margin"] == pytest.approx(np.mean(np.array(margins)[y.numpy() == c]), abs=1e-6)
    assert table["support"].tolist() == [14, 13, 13]


def test_correlation_finds_a_planted_relation():
    rng = np.random.default_rng(8)
    x = rng.normal(size=30)
    strong = correlation(x, 2 * x + rng.normal(scale=0.3, size=30))
    assert strong["pearson_r"] > 0.9 and strong["ci_low"] > 0.8
    none = correlation(x, rng.normal(size=30))
    assert none["ci_low"] < 0 < none["ci_high"]
    with pytest.raises(PrunelabError, match="at least 4"):
        correlation([1, 2, 3], [1, 2, float("nan")])


STUDY = """
[study]
name = "who_pays"
store = "STORE"
seeds = [0, 1, 2]

[task]
dataset = "digits[keep=3:0.05]"
model = "lenet_300_100"

[training]
iterations = 60
batch_size = 32

[branches.global]
technique = "global_unstructured"
rate = 0.6
rounds = 2

[[hypotheses]]
claim = "class 3 pays in global"

[[hypotheses]]
claim = "pies grow in global"
"""


def test_a_study_run_tests_its_population_claims_from_the_store(tmp_path):
    """End to end: `prunelab run` and `compare` test both population claims from the stored models (a verdict,
    never 'not testable'), and Populations' predictions are each state's own."""
    from prunelab.analysis.fairness import state_predictions
    from prunelab.analysis.tables import study_points
    from prunelab.experiment.query import open_store

    from .conftest import run_cli_here

    spec = tmp_path / "spec.toml"
    spec.write_text(STUDY.replace("STORE", str(tmp_path / "store")))
    for command in (("run", str(spec)), ("compare", str(tmp_path / "store"))):
        out = run_cli_here(*command, env={"COLUMNS": "200"})
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if "pays in global" in line or "grow in global" in line]
        assert len(lines) == 2 and all("supported" in line and "not testable" not in line for line in lines), lines
    results = open_store(tmp_path / "store")
    points = study_points(results)
    populations = Populations(results, points)
    seeds, dense, pruned = populations.pair("global", 2)
    assert seeds == [0, 1, 2]
    hashes = populations.seeds("global", 2)
    for row, s in zip(pruned, seeds):
        assert (row == state_predictions(results, hashes[s])[1]).all()
    assert populations.dataset == "digits[keep=3:0.05]" and len(populations.labels) == dense.shape[1]
    table = populations.class_tests("global")
    assert set(table["round"]) == {1, 2} and table["support"].sum() == 2 * len(populations.labels)
