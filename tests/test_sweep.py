"""Declared hyperparameter sweeps: expansion, validation, and seed vs systematic variation."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prunelab import PrunelabError
from prunelab.analysis.tables import configurations, study_points
from prunelab.analysis.variation import seed_vs_systematic, variance_components
from prunelab.experiment import open_store
from prunelab.spec import load_spec
from prunelab.study import build_study, summarize

from .conftest import run_cli_here
from .test_study import write_spec

SWEPT = """
[study]
name = "swept"
store = "STORE"
seeds = [0, 1]

[task]
dataset = "digits"
model = "lenet_300_100"

[training]
iterations = 20
batch_size = 32
lr = 0.05

[branches.ticket]
rate = 0.5
rounds = 1

[sweep]
"training.lr" = [0.05, 0.02]
branches.ticket.rate = [0.5, 0.8]
"""


def test_sweep_expands_to_one_tree_per_combination_sharing_what_is_equal(tmp_path):
    spec = load_spec(write_spec(tmp_path, SWEPT))
    labels = [label for label, _ in spec.configurations()]
    assert labels == ["lr=0.05 rate=0.5", "lr=0.05 rate=0.8", "lr=0.02 rate=0.5", "lr=0.02 rate=0.8"]
    by_label = dict(spec.configurations())
    assert by_label["lr=0.02 rate=0.8"].training.lr == 0.02
    assert by_label["lr=0.02 rate=0.8"].branches["ticket"].rate == 0.8
    assert by_label["lr=0.02 rate=0.8"].sweep == {}
    tree = build_study(spec)
    dense = {p.state.hash for p in tree.points if p.branch == "dense"}
    tickets = {p.state.hash for p in tree.points if p.branch == "ticket"}
    assert len(dense) == 2 * 2  # the rate does not change the dense run: lr values x seeds
    assert len(tickets) == 4 * 2
    shared = next(p.state for p in tree.points if p.branch == "dense" and p.config == "lr=0.05 rate=0.5")
    assert {"config:lr=0.05 rate=0.5", "config:lr=0.05 rate=0.8"} <= shared.tags


@pytest.mark.parametrize("sweep, message", [
    ('"training.lr" = [0.05, -1.0]', r"sweep \[lr=-1\]: training.lr: Input should be greater than 0"),
    ('"study.seeds" = [1, 2]', r"sweep.study.seeds: \[study\] cannot be swept"),
    ('"branches.nope.rate" = [0.1, 0.2]', r"sweep.branches.nope.rate: the spec has no section 'branches.nope'"),
    ('"training.lr" = [0.1, 0.1]', r"sweep.training.lr: values must be distinct"),
    ('"training.lr" = 0.1', r"sweep.training.lr: needs a list of at least 2 values"),
    ('"training.colour" = [1, 2]', r"sweep \[colour=1\]: training.colour: Extra inputs are not permitted"),
])
def test_bad_sweeps_name_the_key_and_write_nothing(tmp_path, sweep, message):
    text = SWEPT.split("[sweep]")[0] + "[sweep]\n" + sweep + "\n"
    path = write_spec(tmp_path, text)
    with pytest.raises(PrunelabError, match=message):
        load_spec(path)
    out = run_cli_here("run", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr and str(path) in out.stderr
    assert not (tmp_path / "store").exists()


def test_variance_components_against_a_hand_anova():
    rng = np.random.default_rng(0)
    groups = [rng.normal(mu, 0.02, size=n) for mu, n in ((0.90, 3), (0.93, 4), (0.91, 3))]
    out = variance_components(groups)
    values = np.concatenate(groups)
    grand = values.mean()
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    ss_between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    df_w, df_b = len(values) - 3, 2
    f = (ss_between / df_b) / (ss_within / df_w)
    assert out["anova_p"] == pytest.approx(stats.f.sf(f, df_b, df_w))
    assert out["seed_sd"] == pytest.approx(math.sqrt(ss_within / df_w))
    assert out["config_sd"] == pytest.approx(np.std([g.mean() for g in groups], ddof=1))
    assert out["range"] == pytest.approx(max(g.mean() for g in groups) - min(g.mean() for g in groups))


def test_systematic_component_is_unbiased_and_anova_holds_its_level():
    """Simulation: the seed noise is removed from the spread of configuration means (fixed seed)."""
    rng = np.random.default_rng(1)
    estimates, p_null = [], []
    for _ in range(400):
        centres = rng.normal(0.9, 0.03, size=6)
        estimates.append(variance_components([rng.normal(c, 0.02, size=4) for c in centres])["systematic_sd"] ** 2)
        p_null.append(variance_components([rng.normal(0.9, 0.02, size=4) for _ in range(6)])["anova_p"])
    # E[estimate] is 0.03² up to the flooring at 0 (small here); the raw SD of the means would give 0.03² + 0.02²/4
    assert np.mean(estimates) == pytest.approx(0.03 ** 2, rel=0.15)
    assert 0.02 <= np.mean(np.array(p_null) < 0.05) <= 0.09


def test_configurations_that_share_states_count_once():
    frame = pd.DataFrame({
        "config": ["lr=1 rate=0.5"] * 2 + ["lr=1 rate=0.8"] * 2 + ["lr=2 rate=0.5"] * 2 + ["lr=2 rate=0.8"] * 2,
        "branch": "dense", "round": 0,
        "state": ["a", "b", "a", "b", "c", "d", "c", "d"],
        "acc": [0.9, 0.92, 0.9, 0.92, 0.8, 0.84, 0.8, 0.84],
    })
    row = seed_vs_systematic(frame, "acc").iloc[0]
    assert row["configs"] == 2 and row["seeds"] == 4
    assert row["best_config"] == "lr=1" and row["worst_config"] == "lr=2"
    assert row["best_mean"] == pytest.approx(0.91) and row["worst_mean"] == pytest.approx(0.82)


def test_swept_study_runs_and_reports_both_variations(tmp_path):
    path = write_spec(tmp_path, SWEPT)
    out = run_cli_here("run", str(path), "--csv", str(tmp_path / "s.csv"))
    assert out.returncode == 0, out.stderr
    assert "seed variation vs systematic variation" in out.stdout
    rows = summarize(build_study(load_spec(path)))
    assert {r.config for r in rows} == {label for label, _ in load_spec(path).configurations()}
    points = study_points(open_store(tmp_path / "store"))
    assert configurations(points) == sorted(label for label, _ in load_spec(path).configurations())
    one = study_points(open_store(tmp_path / "store"), config="lr=0.02 rate=0.8")
    assert sorted(one.branch.unique()) == ["dense", "ticket"] and len(one) == 4
    assert set(one[one.branch == "ticket"]["round"]) == {1} and set(one[one.branch == "dense"]["round"]) == {0}
    # the summary and the store agree on every configuration's values
    for r in rows:
        got = one if r.config == "lr=0.02 rate=0.8" else None
        if got is not None:
            values = got[(got.branch == r.branch) & (got["round"] == r.round)]["test.accuracy"]
            assert sorted(values) == pytest.approx(sorted(r.values))
    with pytest.raises(PrunelabError, match="no configuration 'lr=9'"):
        study_points(open_store(tmp_path / "store"), config="lr=9")
