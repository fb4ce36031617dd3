import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

from prunelab.experiment import open_store
from prunelab.report import build_report
from prunelab.report import plots
from prunelab.analysis.tables import study_points
from prunelab.spec import load_spec
from prunelab.study import build_study

from .test_cli import run_cli
from .test_study import TINY, write_spec


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    text = TINY.split("[transfer.sgd]")[0]  # ticket, late, tuned, reinit, random; 2 seeds
    tree = build_study(load_spec(write_spec(folder, text)))
    assert tree.experiment.run().ok
    return folder / "store"


def test_report_embeds_every_plot_and_writes_csvs(study_store, tmp_path):
    out = build_report(study_store, tmp_path / "r.html", tmp_path / "csv")
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 7  # accuracy, per-class, disparity, pareto, similarity, structure, stability
    for data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.size[0] > 300
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from outside: opens offline
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"accuracy.csv", "pareto.csv", "similarity.csv"}
    low = page.lower()
    assert "adding the fairness constraint" in low or "does not change" in low or "no candidate" in low
    # the planned comparisons (paired effects) and the per-tensor chance level are explained on the page
    assert "Planned comparisons: paired effects over seeds" in page and "same kept count in every tensor" in page
    assert {"comparisons.csv", "structure.csv"} <= {p.name for p in (tmp_path / "csv").iterdir()}


def test_plot_functions_return_figures_and_the_tables_behind_them(study_store):
    results = open_store(study_store)
    points = study_points(results)
    fig, table = plots.accuracy_vs_remaining(points)
    assert fig.axes and set(table.branch) >= {"dense", "ticket", "reinit"}
    ticket = table[table.branch == "ticket"].sort_values("remaining", ascending=False)
    assert list(ticket.seeds) == [2, 2]
    fig, table = plots.mask_similarity(results, points)
    pair = table[(table.a == "ticket") & (table.b == "reinit")]
    assert pair.jaccard.iloc[0] == pytest.approx(1.0)  # the reinit control reuses the ticket's masks


def test_cli_report(study_store, tmp_path):
    out = run_cli("report", str(study_store), "-o", str(tmp_path / "x.html"))
    assert out.returncode == 0 and (tmp_path / "x.html").stat().st_size > 50_000


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(study_store, tmp_path):
    page = build_report(study_store, tmp_path / "r.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<title>report: 7/7 images loaded</title>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    image = Image.open(shot)
    assert image.size == (1200, 2000)
    colours = image.convert("RGB").resize((60, 100)).getcolors(maxcolors=10_000)
    assert colours is not None and len(colours) > 50  # plots drawn, not a blank page


@pytest.fixture(scope="module")
def swept_store(tmp_path_factory):
    from .test_sweep import SWEPT

    folder = tmp_path_factory.mktemp("swept")
    assert build_study(load_spec(write_spec(folder, SWEPT))).experiment.run().ok
    return folder / "store"


def _ink_groups(path):
    """A sensitive attribute for digits' test split: heavy or light strokes (total ink above the median)."""
    import numpy as np

    from prunelab.tasks.datasets import load_dataset

    x = load_dataset("digits").test.x.flatten(1).numpy()
    ink = x.sum(axis=1)
    values = np.where(ink > np.median(ink), "heavy", "light")
    path.write_text("id,ink\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return values


def test_report_of_a_swept_study_with_groups(swept_store, tmp_path):
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from prunelab.analysis.fairness import group_impact, state_predictions

    groups = _ink_groups(tmp_path / "groups.csv")
    out = build_report(swept_store, tmp_path / "r.html", tmp_path / "csv", groups=tmp_path / "groups.csv",
                       group_column="ink", config="lr=0.02 rate=0.8")
    page = out.read_text()
    # 7 + variation + groups, less mask similarity: one pruned branch has nothing to compare with
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 8
    assert "needs two or more pruned branches" in page
    assert "<b>lr=0.02 rate=0.8</b>" in page and "Group fairness: accuracy by ink" in page
    variation = pd.read_csv(tmp_path / "csv" / "variation.csv")
    dense = variation[variation.branch == "dense"].iloc[0]
    assert dense["configs"] == 2 and dense["best_config"] in ("lr=0.05", "lr=0.02")  # the rate does not touch it
    assert set(variation[variation.branch == "ticket"]["configs"]) == {4}
    # group accuracies against scikit-learn on the stored model's predictions; overall equals the stored metric
    results = open_store(swept_store)
    points = study_points(results, config="lr=0.02 rate=0.8")
    impact = group_impact(results, points, groups)
    ticket = points[points.branch == "ticket"].iloc[0]
    y, predicted, _ = state_predictions(results, ticket["hash"])
    mine = impact[(impact.branch == "ticket") & (impact.seed == ticket["seed"])].set_index("group")
    for name in ("heavy", "light"):
        assert mine.loc[name, "accuracy"] == pytest.approx(accuracy_score(y[groups == name], predicted[groups == name]))
    assert mine["overall"].iloc[0] == pytest.approx(ticket["test.accuracy"])
    dense_row = impact[(impact.branch == "dense") & (impact.seed == ticket["seed"])].set_index("group")
    assert mine.loc["heavy", "delta"] == pytest.approx(mine.loc["heavy", "accuracy"] - dense_row.loc["heavy", "accuracy"])
    assert np.isclose(mine["difference"].iloc[0], abs(mine.loc["heavy", "accuracy"] - mine.loc["light", "accuracy"]))


@pytest.mark.parametrize("content, column, message", [
    ("ink\nheavy\nlight\n", None, r"match the test split of no state"),
    ("ink\n" + "heavy\n" * 359, None, r"single group"),
    ("a,b\n1,2\n", "ink", r"no column 'ink' \(columns: a, b\)"),
])
def test_bad_group_files_are_one_clear_error_and_no_report(swept_store, tmp_path, content, column, message):
    (tmp_path / "g.csv").write_text(content)
    with pytest.raises(Exception, match=message):
        build_report(swept_store, tmp_path / "r.html", groups=tmp_path / "g.csv", group_column=column)
    args = ["report", str(swept_store), "-o", str(tmp_path / "r.html"), "--groups", str(tmp_path / "g.csv")]
    out = run_cli(*args, *(["--group-column", column] if column else []))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "g.csv" in out.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_options_are_checked(swept_store, tmp_path):
    out = run_cli("report", str(swept_store), "-o", str(tmp_path / "r.html"), "--interval", "normal")
    assert out.returncode == 2 and "interval method 'normal'" in out.stderr
    out = run_cli("report", str(swept_store), "-o", str(tmp_path / "r.html"), "--config", "lr=9")
    assert out.returncode == 2 and "no configuration 'lr=9'" in out.stderr
    assert not (tmp_path / "r.html").exists()


def test_class_impact_table_against_scikit_learn(study_store):
    """Per-class recall/precision/F1 deltas from the store equal scikit-learn on recomputed predictions."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    from prunelab.analysis.fairness import state_predictions
    from prunelab.analysis.tables import class_impact

    results = open_store(study_store)
    points = study_points(results)
    impact = class_impact(points)
    ticket = points[(points.branch == "ticket")].sort_values("remaining").iloc[0]
    dense = points[(points.branch == "dense") & (points.seed == ticket["seed"])].iloc[0]
    per = {}
    for name, row in (("pruned", ticket), ("dense", dense)):
        y, predicted, _ = state_predictions(results, row["hash"])
        per[name] = precision_recall_fscore_support(y, predicted, labels=range(10), zero_division=0)
    mine = impact[(impact.branch == "ticket") & (impact.seed == ticket["seed"])
                  & (impact.remaining == ticket["remaining"])]
    assert len(mine) == 10
    for i, metric in enumerate(("precision", "recall", "f1")):
        assert np.allclose(mine[metric], per["pruned"][i]) and np.allclose(mine[f"dense_{metric}"], per["dense"][i])
        assert np.allclose(mine[f"delta_{metric}"], per["pruned"][i] - per["dense"][i])
    overall = ticket["test.accuracy"] - dense["test.accuracy"]
    assert np.allclose(mine["relative"], per["pruned"][1] - per["dense"][1] - overall)
    assert list(mine["hurt"]) == list(per["pruned"][1] - per["dense"][1] - overall < -0.01)
    # the disparity summaries of the same state
    recall = np.asarray(ticket["recall"])
    assert ticket["gap"] == pytest.approx(recall.max() - recall.min())
    assert ticket["recall_std"] == pytest.approx(recall.std())
    assert ticket["min_max_ratio"] == pytest.approx(recall.min() / recall.max())


def test_efficiency_axes_by_hand(study_store, tmp_path):
    """For an MLP a kept weight is one MAC per example, so FLOPs removed equals weights removed;
    parameters removed also counts the biases, which are never pruned."""
    from prunelab.analysis.tables import with_efficiency

    results = open_store(study_store)
    points = with_efficiency(results, study_points(results))
    row = points[points.branch == "ticket"].sort_values("remaining").iloc[0]
    snap = results.snapshot(row["hash"])
    removed = sum(int((m == 0).sum()) for m in snap.masks.values())
    weights = sum(t.numel() for name, t in snap.weights.items() if name.endswith("weight"))
    everything = sum(t.numel() for t in snap.weights.values())
    assert row["flops_removed"] == pytest.approx(100 * removed / weights)
    assert row["params_removed"] == pytest.approx(100 * removed / everything)
    assert 100 - row["remaining"] == pytest.approx(row["flops_removed"], abs=0.05)
    page = build_report(study_store, tmp_path / "r.html", tmp_path / "csv", efficiency="params_removed").read_text()
    assert "Pareto operating points (params removed" in page
    assert "params_removed" in (tmp_path / "csv" / "pareto.csv").read_text().splitlines()[0]
    out = run_cli("report", str(study_store), "-o", str(tmp_path / "x.html"), "--efficiency", "speed")
    assert out.returncode == 2 and "efficiency 'speed' must be one of" in out.stderr


def _measured_efficiency(results, state_hash):
    """What with_efficiency once did for every state: build its model and count."""
    from prunelab.pruning.masks import sparsity_report

    snap = results.snapshot(state_hash)
    model = snap.model()
    report = sparsity_report(model, snap.spec.input_shape)
    total = sum(p.numel() for p in model.parameters())
    return 100 * (1 - report.kept_flops / report.flops), 100 * (report.total - report.kept) / total


def test_efficiency_from_manifests_equals_measuring_every_model(study_store, tmp_path):
    """with_efficiency reads kept counts from manifests and measures each architecture once; every
    row must equal building that state's model and counting, for an MLP study and a conv net."""
    import pandas as pd

    from prunelab.analysis.tables import with_efficiency
    from prunelab.experiment import Experiment, Prune
    from prunelab.pruning import technique

    results = open_store(study_store)
    points = with_efficiency(results, study_points(results))
    assert len(points) > 10
    for row in points.itertuples():
        flops, params = _measured_efficiency(results, row.hash)
        assert row.flops_removed == pytest.approx(flops, abs=1e-9) and row.params_removed == pytest.approx(params, abs=1e-9)
    exp = Experiment(tmp_path / "conv")
    root = exp.root(dataset="digits", model="conv2", seed=0)
    once = root.then(Prune(technique("l1_unstructured", amount=0.4)))
    twice = once.then(Prune(technique("l2_structured", amount=0.3)))
    assert exp.run().ok
    conv = open_store(tmp_path / "conv")
    table = with_efficiency(conv, pd.DataFrame({"hash": [root.hash, once.hash, twice.hash]}))
    for row in table.itertuples():
        flops, params = _measured_efficiency(conv, row.hash)
        assert row.flops_removed == pytest.approx(flops, abs=1e-9) and row.params_removed == pytest.approx(params, abs=1e-9)
    assert table.flops_removed.iloc[0] == 0 and table.flops_removed.iloc[2] > table.flops_removed.iloc[1] > 0


def test_stability_across_consecutive_rounds_by_hand(study_store):
    import torch

    results = open_store(study_store)
    points = study_points(results)
    fig, table = plots.stability_plot(results, points)
    ticket = points[(points.branch == "ticket") & (points.seed == 0)].sort_values("round")
    first, second = (results.snapshot(h) for h in ticket["hash"])
    a = torch.cat([first.weights[n][m].double() for n, m in second.masks.items()])
    b = torch.cat([second.weights[n][m].double() for n, m in second.masks.items()])
    row = table[(table.kind == "round → next round") & (table.branch == "ticket") & (table.seed == 0)]
    assert len(row) == 1 and row["round"].iloc[0] == 2
    assert row["cosine"].iloc[0] == pytest.approx(float(a @ b / (a.norm() * b.norm())))
    assert set(table[table.kind == "rewind point → trained"].branch) == {"ticket", "late"}  # the rewinding ones


def test_tensor_sections_read_the_first_seeds_and_say_so(study_store, tmp_path, monkeypatch):
    """--tensor-seeds bounds what the report reads from tensors (a 100,000-state study reports in a
    minute); the sections that read the index keep every seed, and the page says which is which."""
    from prunelab.report import html as report_html

    monkeypatch.setattr(report_html, "TREE_LINES", 5)
    out = build_report(study_store, tmp_path / "r.html", tmp_path / "csv", tensor_seeds=1)
    page = out.read_text()
    assert page.count("Read from the stored tensors of the first 1 of 2 seeds") == 3  # similarity, structure, stability
    structure = (tmp_path / "csv" / "structure.csv").read_text().splitlines()
    header = structure[0].split(",")
    assert {row.split(",")[header.index("seeds")] for row in structure[1:]} == {"1"}
    stability = (tmp_path / "csv" / "stability.csv").read_text().splitlines()
    header = stability[0].split(",")
    assert {row.split(",")[header.index("seed")] for row in stability[1:]} == {"0"}
    accuracy = (tmp_path / "csv" / "accuracy.csv").read_text().splitlines()
    header = accuracy[0].split(",")
    assert {row.split(",")[header.index("seeds")] for row in accuracy[1:]} == {"2"}  # from the index: every seed
    tree = page.split("<h2>Experiment tree</h2><pre>")[1].split("</pre>")[0]
    assert len(tree.splitlines()) == 6 and "the tree continues" in tree and "prunelab tree" in tree
    full = build_report(study_store, tmp_path / "all.html", tmp_path / "csv_all", tensor_seeds=0).read_text()
    assert "Read from the stored tensors" not in full
    stability = (tmp_path / "csv_all" / "stability.csv").read_text().splitlines()
    header = stability[0].split(",")
    assert {row.split(",")[header.index("seed")] for row in stability[1:]} == {"0", "1"}
    out = run_cli("report", str(study_store), "-o", str(tmp_path / "x.html"), "--tensor-seeds", "-1")
    assert out.returncode == 2 and "tensor-seeds" in out.stderr


def test_study_points_equal_the_manifests(study_store):
    """study_points reads summaries from the index; every row equals an independent read of its manifest."""
    import json

    from prunelab.study import remaining_percent

    points = study_points(open_store(study_store))
    assert len(points) > 10
    for row in points.itertuples():
        m = json.loads((study_store / "states" / f"{row.hash}.json").read_text())
        test = m["metrics"]["test"]
        assert row.remaining_seed == pytest.approx(remaining_percent(m))
        assert list(row.recall) == [c["recall"] for c in test["per_class"]]
        assert row.parent == m["parent"]
    assert list(points["test.accuracy"]) == [
        json.loads((study_store / "states" / f"{h}.json").read_text())["metrics"]["test"]["accuracy"]
        for h in points["hash"]]
