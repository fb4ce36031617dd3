"""Pruned generators scored the CaloChallenge way: one generator's scores against planted answers (the
simulator posing as a generator: nothing to find; the same with layer 1 scaled by 1.1), parameter counts by
hand, the t-interval over seeds by hand, the store cache (reuse, tampered records), and a tiny GAN study
scored end to end through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from typer.testing import CliRunner

from prunelab.errors import PrunelabError
from prunelab.hep.calochallenge_classifier import ClassifierSettings
from prunelab.hep.generator_score_study import (FIDELITY_PROBE, ScoreSettings, aggregate, check_fidelity_record,
                                                score_study)
from prunelab.hep.generator_scores import generation_timing, parameter_counts, score_model, simulator_generator
from prunelab.hep.simulator import simulate

from .flow_helpers import tiny_flow_spec

# small and quick, yet able to learn a planted 10 % layer scale from 1,200 training showers
FAST = ClassifierSettings(hidden=(32,), epochs=10, batch_size=100, learning_rate=1e-3, patience=3, bootstrap=200)
# the cheapest settings the evaluation accepts: for tests of plumbing, not of numbers
TINY = ClassifierSettings(hidden=(32,), epochs=3, bootstrap=200)


def _json_round_trip(value):
    return json.loads(json.dumps(value, allow_nan=False))


# ---------------------------------------------------------------- one generator, planted answers


def test_the_simulator_posing_as_a_generator_scores_at_chance():
    reference = simulate("eplus", 1000, seed=11)
    score = score_model(simulator_generator(), reference, seed=3, classifier_settings=FAST)
    for kind in ("low-level", "high-level"):
        c = score["classifiers"][kind]
        assert c["auc_low"] < 0.5 < c["auc_high"], (kind, c["auc"])
        assert c["test_events"] == 400
        assert [r["energy_range"] for r in c["by_energy"]] == ["1-10 GeV", "10-30 GeV", "30-60 GeV", "60-100 GeV"]
    sep = score["separation"]
    assert sep["cells"] == 19 * 5  # 19 features, all energies and four ranges
    assert sep["largest"] < 2 * sep["largest_floor"] and sep["cells_above_twice_floor"] <= 2
    assert sep["median"] < sep["largest"]
    d = score["distances"]
    assert d["fpd"] <= 3 * d["fpd_error"] + 1e-4 and abs(d["kpd"]) <= 3 * d["kpd_error"]
    assert d["fpd_reference_split"] is not None  # 500 showers a half: enough for FPD
    assert score["events"] == [1000, 1000]
    record = _json_round_trip({"format": 1, "fidelity": score,
                               "parameters": {"scope": None, "parameters": 0, "parameters_remaining": 0, "weights": 0,
                                              "weights_remaining": 0, "weight_sparsity": 0.0}})
    assert check_fidelity_record(record, 1000) is None
    assert "not 999" in check_fidelity_record(record, 999)


def test_a_generator_with_layer_1_scaled_by_1_1_scores_far_from_chance():
    reference = simulate("eplus", 1000, energy=50.0, seed=21)
    score = score_model(simulator_generator(scale=(1, 1.1)), reference, seed=3, classifier_settings=FAST)
    assert score["classifiers"]["high-level"]["auc_low"] > 0.8
    assert score["classifiers"]["low-level"]["auc_low"] > 0.5
    by_range = {r["energy_range"]: r["auc"] for r in score["classifiers"]["high-level"]["by_energy"]}
    assert by_range["30-60 GeV"] > 0.8 and by_range["1-10 GeV"] is None  # every shower is at 50 GeV
    sep = score["separation"]
    # E_tot/E_inc moves by 8 % against a 1 % resolution; the layer shapes do not move at all
    assert sep["largest_feature"] == "E_tot/E_inc" and sep["largest"] > 0.9
    assert sep["cells_above_twice_floor"] >= 2
    d = score["distances"]
    assert d["fpd"] > 10 * d["fpd_error"] and d["fpd"] > 10 * d["fpd_reference_split"]


# ---------------------------------------------------------------- parameter counts


class _TwoNetworks(nn.Module):
    sparsity_scope = "gen"

    def __init__(self):
        super().__init__()
        self.gen = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        self.critic = nn.Linear(5, 5)


def _mask(shape, pruned: int) -> torch.Tensor:
    keep = torch.ones(shape, dtype=torch.bool).flatten()
    keep[:pruned] = False
    return keep.reshape(shape)


def test_parameter_counts_by_hand_on_a_pruned_model():
    model = _TwoNetworks()
    prune.custom_from_mask(model.gen[0], "weight", _mask((4, 3), 5))
    prune.custom_from_mask(model.gen[2], "weight", _mask((2, 4), 3))
    prune.custom_from_mask(model.critic, "weight", _mask((5, 5), 10))  # the critic is not the generator
    counts = parameter_counts(model)
    # generator: 3*4 + 4 and 4*2 + 2 parameters; 5 + 3 weights pruned; 12 + 8 prunable weights
    assert counts == {"scope": "gen", "parameters": 26, "parameters_remaining": 18, "weights": 20,
                      "weights_remaining": 12, "weight_sparsity": pytest.approx(8 / 20)}
    model.sparsity_scope = None  # the whole model: critic included (25 weights + 5 biases, 10 pruned)
    whole = parameter_counts(model)
    assert whole["parameters"] == 56 and whole["parameters_remaining"] == 38 and whole["weights_remaining"] == 27


# ---------------------------------------------------------------- over seeds


def test_aggregate_over_seeds_matches_a_hand_computed_t_interval():
    import pandas as pd
    from scipy import stats

    def row(kind, label, seed, auc, fpd, sparsity, **extra):
        return {"study": "s", "kind": kind, "label": label, "seed": seed, "round": extra.get("round"),
                "target": extra.get("target"), "sparsity": sparsity, "low_level_auc": auc, "high_level_auc": auc,
                "fpd": fpd, "parameters": 100, "parameters_remaining": round(100 * (1 - sparsity)),
                "seconds_per_shower_batch_1": 1e-3 * (1 + seed)}

    table = pd.DataFrame([
        row("one_shot", "one-shot 0.75", 0, 0.8, 0.004, 0.75, target=0.75),
        row("imp", "IMP round 1", 0, 0.60, 0.001, 0.50, round=1),
        row("imp", "IMP round 1", 1, 0.70, 0.003, 0.50, round=1),
        row("imp", "IMP round 1", 2, 0.65, 0.002, 0.50, round=1),
        row("trained", "trained", 0, 0.99, 0.0, 0.0, round=0),
        row("trained", "trained", 1, 0.95, 0.0, 0.0, round=0),
        row("trained", "trained", 2, 0.999, 0.0, 0.0, round=0),
    ])
    points = aggregate(table).set_index("label")
    assert list(points.index) == ["trained", "IMP round 1", "one-shot 0.75"]  # trained, IMP rounds, one-shot
    x = np.array([0.60, 0.70, 0.65])
    low, high = stats.t.interval(0.95, 2, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(3))
    imp = points.loc["IMP round 1"]
    assert imp["seeds"] == 3 and imp["sparsity"] == pytest.approx(0.5)
    assert imp["low_level_auc"] == pytest.approx(0.65)
    assert imp["low_level_auc_low"] == pytest.approx(low) and imp["low_level_auc_high"] == pytest.approx(high)
    f = np.array([0.001, 0.003, 0.002])
    half = stats.t.ppf(0.975, 2) * f.std(ddof=1) / np.sqrt(3)
    assert imp["fpd_low"] == pytest.approx(max(0.0, f.mean() - half)) == 0.0  # FPD cannot be negative: clipped
    assert imp["fpd_high"] == pytest.approx(f.mean() + half)
    assert imp["seconds_per_shower_batch_1"] == pytest.approx(2e-3) and imp["interval"] == "95 % t over 3 seeds"
    trained = points.loc["trained"]
    t = np.array([0.99, 0.95, 0.999])
    low_t, high_t = stats.t.interval(0.95, 2, loc=t.mean(), scale=t.std(ddof=1) / np.sqrt(3))
    assert high_t > 1 and trained["low_level_auc_high"] == 1.0  # an AUC interval stops at 1
    assert trained["low_level_auc_low"] == pytest.approx(low_t)
    assert trained["fpd_low"] == trained["fpd_high"] == trained["fpd"] == 0.0  # equal values: zero width
    one = points.loc["one-shot 0.75"]
    assert one["seeds"] == 1 and one["interval"] == "one seed: no interval"
    assert one["low_level_auc"] == 0.8 and pd.isna(one["low_level_auc_low"]) and pd.isna(one["low_level_auc_high"])


# ---------------------------------------------------------------- a tiny GAN study

SPEC = """
name = "tiny"
dataset = "calo_showers_eplus"
seeds = [0, 1]
[model]
latent = 4
hidden = 16
critic_hidden = 16
[gan]
iterations = 6
batch_size = 16
critic_steps = 1
evaluate_showers = 0
[pruning]
rounds = 1
amount = 0.5
one_shot = [0.75]
[pruning.finetune]
iterations = 2
batch_size = 16
critic_steps = 1
evaluate_showers = 0
"""


@pytest.fixture(scope="module")
def gan_store(tmp_path_factory):
    from prunelab.hep.gan_study import build_gan_study, load_gan_spec

    root = tmp_path_factory.mktemp("scores")
    (root / "tiny.toml").write_text(SPEC)
    build_gan_study(load_gan_spec(root / "tiny.toml"), root / "store").run()
    return root / "store"


def test_parameter_counts_and_timing_of_a_pruned_gan(gan_store):
    from prunelab.experiment.query import open_store
    from prunelab.hep.gan_study import gan_points

    results = open_store(gan_store)
    points = gan_points(results)
    row = points[(points["label"] == "one-shot 0.75") & (points["seed"] == 0)].iloc[0]
    model = results.load_model(row["hash"])
    generator = sum(p.numel() for p in model.generator.parameters())
    pruned = sum(int((~m).sum()) for m in results.snapshot(row["hash"]).masks.values())
    counts = parameter_counts(model)
    assert counts["scope"] == "generator" and counts["parameters"] == generator
    assert counts["parameters_remaining"] == generator - pruned
    assert counts["weight_sparsity"] == pytest.approx(row["sparsity"])
    timing = generation_timing(model, (1, 100, 10000), repeats=2, min_showers=10, max_batch=200, threads=1)
    assert [(b["batch"], b["batch_used"], b["showers"]) for b in timing["batches"]] == [(1, 1, 10), (100, 100, 100),
                                                                                          (10000, 200, 200)]
    assert timing["threads"] == 1 and all(0 < b["min"] <= b["median"] <= b["max"] for b in timing["batches"])
    assert parameter_counts(model) == counts  # timed on a copy: the masks are still attached


def _probe_file(store, state: str, probe: str):
    for path in (store / "probes" / state).glob("*.json"):
        if json.loads(path.read_text())["probe"]["probe"] == probe:
            return path
    raise AssertionError(f"no {probe} record for {state[:10]}")


def test_scores_are_cached_in_the_store_and_a_tampered_record_is_scored_again(gan_store, monkeypatch):
    from prunelab.experiment.query import open_store
    from prunelab.experiment.store import manifest_digest
    from prunelab.hep import calochallenge

    calls = []
    real = calochallenge.evaluate
    monkeypatch.setattr(calochallenge, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    settings = ScoreSettings(events=400, seed=5, classifier=TINY)
    first = score_study(open_store(gan_store), settings, None)
    assert len(calls) == 8 and first.computed == 8 and first.reused == 0  # 2 seeds × 4 studied points
    assert set(first.rows["label"]) == {"trained", "dense + fine-tune", "IMP round 1", "one-shot 0.75"}
    again = score_study(open_store(gan_store), settings, None)
    assert len(calls) == 8 and again.reused == 8 and again.notes == []
    assert again.rows.equals(first.rows)

    state = first.rows.iloc[2]["hash"]
    path = _probe_file(gan_store, state, FIDELITY_PROBE)
    record = json.loads(path.read_text())
    record["result"]["fidelity"]["classifiers"]["low-level"]["auc"] = 0.5  # edited: the digest no longer matches
    path.write_text(json.dumps(record))
    third = score_study(open_store(gan_store), settings, None)
    assert len(calls) == 9 and third.computed == 1
    assert len(third.notes) == 1 and str(path) in third.notes[0] and "digest" in third.notes[0]
    assert third.rows.equals(first.rows)  # recomputed: the same numbers, deterministic

    record = json.loads(path.read_text())
    record["result"]["fidelity"]["classifiers"]["low-level"]["auc"] = "0.5"  # a string, digest made to match
    record["digest"] = manifest_digest(record)
    path.write_text(json.dumps(record))
    fourth = score_study(open_store(gan_store), settings, None)
    assert len(calls) == 10 and "not usable (fidelity.classifiers.low-level.auc" in fourth.notes[0]
    assert fourth.rows.equals(first.rows)
    assert json.loads(path.read_text())["result"]["fidelity"]["classifiers"]["low-level"]["auc"] != "0.5"  # replaced

    other = score_study(open_store(gan_store), ScoreSettings(events=400, seed=6, classifier=TINY), None)
    assert len(calls) == 18 and other.computed == 8  # other settings: records of their own


def test_calo_score_command_end_to_end(gan_store, tmp_path):
    from prunelab.cli import app

    runner = CliRunner()
    html, numbers = tmp_path / "score.html", tmp_path / "score.json"
    args = ["calo", "score", str(gan_store), "-n", "400", "--hidden", "32", "--epochs", "3", "--max-batch", "100",
            "-o", str(html), "--json", str(numbers)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "IMP round 1" in r.output and "16 scores computed, 0 read" in r.output  # 8 states: fidelity + timing
    page = html.read_text()
    assert page.count("<img") == 1 and "Fidelity against generator weights remaining" in page
    assert "µs / shower, batch 10,000" in page and "Scored states" in page
    data = json.loads(numbers.read_text())
    assert len(data["states"]) == 8 and data["settings"]["events"] == 400
    points = {p["label"]: p for p in data["points"]}
    assert list(points) == ["trained", "dense + fine-tune", "IMP round 1", "one-shot 0.75"]
    for p in points.values():
        assert p["seeds"] == 2 and p["interval"] == "95 % t over 2 seeds"
        for metric in ("low_level_auc", "high_level_auc"):
            assert p[f"{metric}_low"] <= p[metric] <= p[f"{metric}_high"]
        assert p["parameters"] == data["states"][0]["parameters"]  # one architecture
    assert points["IMP round 1"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert points["one-shot 0.75"]["parameters_remaining"] < points["IMP round 1"]["parameters_remaining"]
    state = data["states"][0]
    assert state["seconds_per_shower_batch_10000"] > 0 and state["batch_used_10000"] == 100

    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "0 scores computed, 16 read from the store" in r.output

    # the Python interface reads what the command cached (the same settings: the same records); one seed's
    # report says there is no interval
    from prunelab.experiment.query import open_store
    from prunelab.hep.generator_score_report import write_report
    from prunelab.hep.generator_score_study import TimingSettings

    settings = ScoreSettings(classifier=ClassifierSettings(hidden=(32,), epochs=3, seed=0))
    cached = score_study(open_store(gan_store), settings, TimingSettings(max_batch=100), events=400)
    assert cached.computed == 0 and cached.reused == 16
    assert cached.rows["low_level_auc"].tolist() == [s["low_level_auc"] for s in data["states"]]
    one_seed = cached.rows[cached.rows["seed"] == 0]
    page = write_report(cached, aggregate(one_seed), settings, None, tmp_path / "one.html").read_text()
    assert "one seed: no interval" in page and "generation time not measured" in page


def test_calo_score_errors_are_one_line(gan_store, tmp_path):
    from prunelab.cli import app
    from prunelab.experiment.store import Store

    runner = CliRunner()
    r = runner.invoke(app, ["calo", "score", str(gan_store), "-n", "100"])
    assert isinstance(r.exception, PrunelabError) and "at least 400" in str(r.exception)
    r = runner.invoke(app, ["calo", "score", str(gan_store), "-n", "20000", "--no-timing"])
    assert isinstance(r.exception, PrunelabError) and "10,000 held-out showers" in str(r.exception)
    plain = Store(tmp_path / "plain")  # a store, but of no generator study
    r = runner.invoke(app, ["calo", "score", str(plain.root)])
    assert isinstance(r.exception, PrunelabError) and "not a generator study store" in str(r.exception)
    plain.write_document("gan-study-unrun", {"format": 1, "name": "unrun", "dataset": "calo_showers_eplus",
                                             "points": [{"hash": "0" * 64, "kind": "trained", "seed": 0}]})
    r = runner.invoke(app, ["calo", "score", str(plain.root)])
    assert isinstance(r.exception, PrunelabError) and "no finished generator" in str(r.exception)
    r = runner.invoke(app, ["calo", "score", str(tmp_path / "nothing")])
    assert isinstance(r.exception, PrunelabError) and "not a prunelab store" in str(r.exception)


FLOW_SPEC = tiny_flow_spec(evaluate_showers=0, checkpoint_every=None, dense_control=False)


def test_a_flow_study_is_scored_the_same_way(tmp_path):
    """Nothing but generate(energy, rng) is asked of a generator: the flow's study scores like the GAN's, its
    parameters counted over the whole model (a flow has no critic)."""
    from prunelab.experiment.query import open_store
    from prunelab.hep.gan_study import build_gan_study, load_gan_spec

    (tmp_path / "flow.toml").write_text(FLOW_SPEC)
    build_gan_study(load_gan_spec(tmp_path / "flow.toml"), tmp_path / "store").run()
    results = open_store(tmp_path / "store")
    scores = score_study(results, ScoreSettings(events=400, classifier=TINY), None)
    rows = scores.rows.set_index("label")
    assert list(rows.index) == ["trained", "IMP round 1", "one-shot 0.75"] and scores.computed == 3
    for label in rows.index:
        model = results.load_model(rows.loc[label, "hash"])
        masked = sum(int((~m).sum()) for m in results.snapshot(rows.loc[label, "hash"]).masks.values())
        assert rows.loc[label, "parameters"] == sum(p.numel() for p in model.parameters())
        assert rows.loc[label, "parameters_remaining"] == rows.loc[label, "parameters"] - masked
    assert rows.loc["one-shot 0.75", "weight_sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert 0 <= rows.loc["trained", "low_level_auc"] <= 1 and rows.loc["trained", "fpd"] >= 0
