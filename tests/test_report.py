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

from .conftest import run_cli_here
from .test_study import TINY, write_spec


HYPOTHESES = """
[[hypotheses]]
claim = "ticket > reinit"

[[hypotheses]]
claim = "ticket >= dense"
margin = 0.01

[[hypotheses]]
claim = "ticket > random"
test = "permutation"
"""


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    text = TINY.split("[transfer.sgd]")[0] + HYPOTHESES  # ticket, late, tuned, reinit, random; 2 seeds
    tree = build_study(load_spec(write_spec(folder, text)))
    assert tree.experiment.run().ok
    return folder / "store"


def test_report_embeds_every_plot_and_writes_csvs(study_store, tmp_path):
    out = build_report(study_store, tmp_path / "r.html", tmp_path / "csv")
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # accuracy, per-class, the population test, PIE counts, PIE images, gradient norm and margin, disparity,
    # pareto, similarity, structure, stability
    assert len(images) == 11
    for data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.size[0] > 300
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from outside: opens offline
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"accuracy.csv", "pareto.csv", "similarity.csv",
                                                             "population_classes.csv", "pies.csv", "sensitivity.csv"}
    assert "Pruning-identified exemplars (PIEs)" in page and "Welch" in page
    low = page.lower()
    assert ("adding the worst-class limit changes it to" in low or "does not change the choice" in low
            or "no point also meets" in low or "no branch and level meets" in low)
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
    out = run_cli_here("report", str(study_store), "-o", str(tmp_path / "x.html"))
    assert out.returncode == 0 and (tmp_path / "x.html").stat().st_size > 50_000


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(study_store, tmp_path):
    page = build_report(study_store, tmp_path / "r.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--window-size=1200,2000", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<title>report: 11/11 images loaded</title>" in dom
    assert 'data-scaled="0"' in dom  # every figure is shown at its drawn size (100 % zoom) in a 1200 px window
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
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 12  # with the 4 population figures
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
    out = run_cli_here(*args, *(["--group-column", column] if column else []))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "g.csv" in out.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_options_are_checked(swept_store, tmp_path):
    out = run_cli_here("report", str(swept_store), "-o", str(tmp_path / "r.html"), "--interval", "normal")
    assert out.returncode == 2 and "interval method 'normal'" in out.stderr
    out = run_cli_here("report", str(swept_store), "-o", str(tmp_path / "r.html"), "--config", "lr=9")
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
    out = run_cli_here("report", str(study_store), "-o", str(tmp_path / "x.html"), "--efficiency", "speed")
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
    out = run_cli_here("report", str(study_store), "-o", str(tmp_path / "x.html"), "--tensor-seeds", "-1")
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


# ---------------------------------------------------------------- the report leads with the finding (issue #33)


@pytest.fixture(scope="module")
def report_page(study_store, tmp_path_factory):
    """The report of the study store (with its CSVs), built once for the tests that read its page."""
    folder = tmp_path_factory.mktemp("page")
    return build_report(study_store, folder / "r.html", folder / "csv").read_text(), folder / "csv"


def _summary_text(page: str) -> str:
    """The summary section's text, tags removed, whitespace collapsed."""
    summary = page.split("<section class=summary id=summary>")[1].split("</section>")[0]
    return " ".join(re.sub(r"<[^>]+>", " ", summary).split()).replace("&lt;", "<").replace("&gt;", ">")


def _tables(page: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every rendered table as (headers, rows of cell texts)."""
    import html as html_module

    out = []
    for table in re.findall(r"<table>(.*?)</table>", page, flags=re.S):
        headers = [html_module.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
        rows = [[html_module.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
                for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])]
        out.append((headers, rows))
    return out


def test_summary_leads_and_states_each_hypothesis_verdict_with_its_numbers(study_store, report_page):
    from prunelab.analysis.effects import evaluate_hypotheses
    from prunelab.report.html import _interval, _p

    page = report_page[0]
    # the summary comes first: before the first figure and before every statistical table
    assert page.index("id=summary") < page.index("data:image/png") < page.index("<h2>Declared hypotheses</h2>")
    text = _summary_text(page)
    points = study_points(open_store(study_store))
    results = evaluate_hypotheses(points, points.attrs["hypotheses"], value="test.accuracy")
    assert len(results) == 3
    assert f"{sum(r.verdict == 'supported' for r in results)} of 3 declared hypotheses supported" in text
    assert "Does ticket beat reinit? Is ticket no worse than dense (within 0.01)? Does ticket beat random?" in text
    items = [" ".join(re.sub(r"<[^>]+>", " ", li).split()).replace("&lt;", "<")
             for li in re.findall(r"<li>(.*?)</li>", page.split("id=summary>")[1].split("</section>")[0])]
    assert len(items) == 3
    for r, line, words in zip(results, items, ("ticket has better accuracy than reinit",
                                               "ticket is no worse than dense by more than 0.01 accuracy",
                                               "ticket has better accuracy than random")):
        assert line.startswith(f"{r.verdict} {words} at ")  # the verdict badge, then the claim in words
        number = _interval(r.mean, r.ci_low, r.ci_high, signed=True)
        assert number.startswith(("+", "−")) and "[" in number
        assert f"{r.claim.split()[0]} − {r.claim.split()[-1]} = {number} accuracy (95 % CI over 2 seeds)" in line
        assert f"p = {_p(r.p)}" in line and f"Holm-adjusted over the 3 declared hypotheses p = {_p(r.p_adjusted)}" in line
        assert "None" not in line and "nan" not in line
    assert "one-sided paired t test" in text and "one-sided exact sign-flip permutation test" in text
    # the caveat that matters most with 2 seeds, and why the hypotheses' p can still be small
    caveat = text.split("Caveat :")[1].strip()
    assert caveat.startswith("2 seeds: no planned comparison can reach p < 0.05 with the exact permutation test")
    assert "its smallest two-sided p is 0.5" in caveat and "which has no such floor" in caveat
    assert "rows dense, " in text and "lenet_300_100 on digits" in text


def test_statistical_sections_say_which_test_and_why_they_differ(report_page):
    page = report_page[0]
    hypotheses = page.split("<h2>Declared hypotheses</h2>")[1].split("</section>")[0]
    comparisons = page.split("<h2>Planned comparisons: paired effects over seeds</h2>")[1].split("</section>")[0]
    assert "one-sided paired t test" in hypotheses and "has no floor with few seeds" in hypotheses
    assert "exact two-sided sign-flip permutation test" in comparisons
    assert "hence their smaller p-values" in comparisons  # the difference is explained where it shows
    assert "With 2 seeds the exact test cannot give p below 0.5 (2 / 2²)" in comparisons
    assert "nothing can reach" not in page  # the old, unqualified sentence


def test_rendered_tables_are_for_people(report_page):
    """No None/nan/True, no tuples, no internal columns (hash, config, planned, family, p_adjusted) in any
    rendered table; intervals as 'mean [low, high]', percentages with their unit; the CSVs stay raw."""
    page, csv = report_page
    tables = _tables(page)
    assert len(tables) >= 9
    for headers, rows in tables:
        assert not {"config", "planned", "family", "hash", "parent", "p_adjusted", "ci_low", "class_names"} & set(headers)
        for row in rows:
            for cell in row:
                assert cell.strip() not in ("None", "nan", "NaN", "True", "False"), headers
                assert not re.search(r"\bNone\b|\bnan\b|\(\d+(\.\d+)?, \d", cell), cell
                assert not cell.startswith("| ") and not re.fullmatch(r"[0-9a-f]{16,}", cell)
    by_title = {h[0]: (h, r) for h, r in tables}
    headers, rows = next((h, r) for h, r in tables if "comparison (A − B)" in h)
    assert headers[-2:] == ["p (exact, two-sided)", "Holm p"]
    assert all(re.fullmatch(r"[+−]\d\.\d{3} \[[+−]\d\.\d{3}, [+−]\d\.\d{3}\]", r[headers.index("A − B [95 % CI]")])
               for r in rows)
    assert all(r[headers.index("weights remaining")].endswith("%") for r in rows)
    headers, rows = next((h, r) for h, r in tables if "claim" in h)
    assert [r[0] for r in rows] == ["ticket > reinit", "ticket >= dense (margin 0.01)", "ticket > random"]
    assert all(re.fullmatch(r"[\d.]+(, [\d.]+)* %", r[headers.index("weights remaining")]) for r in rows)
    assert by_title  # the raw CSVs keep every column
    import pandas as pd

    raw = pd.read_csv(csv / "comparisons.csv")
    assert {"config", "planned", "family", "p_adjusted", "ci_low", "ci_high"} <= set(raw.columns)


def test_structure_rows_are_in_numeric_layer_order(study_store):
    import pandas as pd

    results = open_store(study_store)
    points = study_points(results)
    fig, table = plots.structure_plot(results, points)
    for _, group in table.groupby(["branch", "round"], sort=False):
        tensors = list(dict.fromkeys(group["tensor"]))
        assert tensors == sorted(tensors, key=plots.natural_key)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    shown = [label.split(" · ")[0] for label in labels]
    assert list(dict.fromkeys(shown)) == sorted(dict.fromkeys(shown), key=plots.natural_key)
    # the order the issue saw (0, 11, 3, 7, 9) becomes 0, 3, 7, 9, 11, groups kept in their order
    names = ["features.0.weight", "features.11.weight", "features.3.weight", "features.7.weight", "features.9.weight"]
    synthetic = pd.DataFrame([{"config": None, "branch": "ticket", "round": 1, "tensor": n, "group": g}
                              for n in names for g in ("filters", "input channels")])
    ordered = plots._structure_order(synthetic)
    assert list(dict.fromkeys(ordered["tensor"])) == [names[i] for i in (0, 2, 3, 4, 1)]
    assert list(ordered["group"][:2]) == ["filters", "input channels"]


def test_the_rendered_structure_table_is_in_layer_order(report_page):
    headers, rows = next((h, r) for h, r in _tables(report_page[0]) if "tensor" in h and "group size" in h)
    for branch in {r[0] for r in rows}:
        tensors = list(dict.fromkeys(r[headers.index("tensor")] for r in rows if r[0] == branch))
        assert tensors == sorted(tensors, key=plots.natural_key) and len(tensors) >= 2


def _texts(fig):
    return [t for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
            if t.get_text().strip() and t.get_visible()]


def test_figures_are_legible_at_100_percent(study_store):
    """Every figure fits the report's column unscaled, no text below 7.5 pt (11 px at 110 dpi), every axes
    with data has both axis labels, no empty panel; the issue's defects one by one."""
    results = open_store(study_store)
    points = study_points(results)
    branches = plots.branches_by_merit(points)
    figures = {"accuracy": plots.accuracy_vs_remaining(points)[0],
               "per_class": plots.per_class_heatmaps(points, branches)[0],
               "disparity": plots.disparity_vs_remaining(points)[0],
               "pareto": plots.pareto_plot(points)[0],
               "similarity": plots.mask_similarity(results, points)[0],
               "structure": plots.structure_plot(results, points)[0],
               "stability": plots.stability_plot(results, points)[0]}
    for name, fig in figures.items():
        assert fig.get_figwidth() * 110 <= 1000, name
        small = [t.get_text() for t in _texts(fig) if t.get_fontsize() < 7.5]
        assert not small, (name, small[:5])
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>" or not ax.get_visible() or not ax.axison:
                continue
            shared = [other.get_ylabel() for other in ax.get_shared_y_axes().get_siblings(ax)]
            assert ax.get_ylabel() or any(shared) or name == "similarity", (name, ax.get_title())
    # per-class: one panel per branch (no empty panel), tick labels horizontal
    heat = [ax for ax in figures["per_class"].axes if ax.get_label() != "<colorbar>"]
    assert len(heat) == min(len(branches), plots.MAX_PANELS) and all(ax.axison for ax in heat)
    assert all(t.get_rotation() == 0 for ax in heat for t in ax.get_xticklabels())
    # disparity: every panel has its y label, and says which way is better
    assert all("is better" in ax.get_ylabel() for ax in figures["disparity"].axes)
    # Pareto: weights remaining like every other plot, one legend entry per branch, one star when one point
    pareto = figures["pareto"].axes
    assert pareto[-1].get_xlabel() == "weights remaining (%)"
    legend = [t.get_text() for t in pareto[0].get_legend().get_texts()]
    assert set(branches) <= set(legend) and sum(t.startswith("chosen") for t in legend) in (1, 2)
    # similarity: no value or chance drawn on the diagonal, no black-and-yellow colour map
    for ax in figures["similarity"].axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.images[0].get_cmap().name == "Blues"
        assert not any("(1.00)" in t.get_text() for t in ax.texts)
        rows = [t.get_text() for t in ax.get_yticklabels()]
        columns = [t.get_text() for t in ax.get_xticklabels()]
        assert not set(rows[:1]) & set(columns[:1]) and len(ax.texts) >= len(rows)
    # stability: intervals (bands) and the number of seeds
    assert "95 % CI over 2 seeds" in figures["stability"].get_suptitle()
    assert all(ax.collections for ax in figures["stability"].axes)


def test_pareto_draws_one_star_when_both_choices_are_one_point():
    import pandas as pd

    rows = []
    for seed in (0, 1, 2):
        rows.append({"branch": "dense", "kind": "dense", "remaining": 100.0, "seed": seed, "test.accuracy": 0.90,
                     "worst_recall": 0.80})
        for level, acc in ((50.0, 0.905), (20.0, 0.895), (5.0, 0.80)):
            rows.append({"branch": "ticket", "kind": "imp", "remaining": level, "seed": seed,
                         "test.accuracy": acc + 0.001 * seed, "worst_recall": 0.80 + 0.001 * seed})
    fig, candidates, choice = plots.pareto_plot(pd.DataFrame(rows))
    assert choice["with_fairness"] is choice["without_fairness"] and choice["without_fairness"]["remaining"] == 20.0
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [t for t in legend if t.startswith("chosen")] == ["chosen (the same with\nor without worst-class limit)"]


def _synthetic_points(metric: str, branches: int, levels: int, seeds: int = 3, classes: int = 10,
                      configs: int = 0):
    """A study table as study_points gives it: ``branches`` pruned rows over ``levels`` levels."""
    import pandas as pd

    lower = metric.endswith("perplexity")
    rows = []
    for c in range(max(1, configs)):
        config = f"lr={c}" if configs else None
        for seed in range(seeds):
            rec = [0.9 - 0.002 * k - 0.01 * seed for k in range(classes)]
            rows.append({"config": config, "branch": "dense", "kind": "dense", "round": 0, "remaining": 100.0,
                         "seed": seed, metric: 4.3 if lower else 0.9, "recall": rec, "precision": rec, "f1": rec,
                         "class_names": tuple(str(k) for k in range(classes)), "worst_recall": min(rec),
                         "dataset": "digits", "of": None})
            for b in range(branches):
                for r in range(1, levels + 1):
                    quality = b / branches + r / levels  # larger: worse
                    rec = [0.9 - 0.002 * k - 0.01 * seed - 0.02 * quality * (1 + k % 7) for k in range(classes)]
                    rows.append({"config": config, "branch": f"row{b}", "kind": "imp", "round": r,
                                 "remaining": round(100 * 0.8 ** r, 1), "seed": seed,
                                 metric: (4.0 + quality + 0.01 * c) if lower else (0.9 - 0.1 * quality - 0.01 * c),
                                 "recall": rec, "precision": rec, "f1": rec,
                                 "class_names": tuple(str(k) for k in range(classes)), "worst_recall": min(rec),
                                 "dataset": "digits", "of": None})
    frame = pd.DataFrame(rows)
    for name in ("gap", "recall_std", "min_max_ratio"):
        frame[name] = 0.1
    return frame


def test_a_lower_is_better_metric_ranks_labels_and_selects_the_right_way():
    """A perplexity study: best first is the lowest, axes say 'lower is better', the Pareto front and the
    operating point prefer low perplexity, the limit is above the dense value."""
    points = _synthetic_points("test.perplexity", branches=3, levels=4)
    assert plots.branches_by_merit(points, "test.perplexity") == ["row0", "row1", "row2"]
    fig, table = plots.accuracy_vs_remaining(points, metric="test.perplexity")
    assert fig.axes[0].get_ylabel() == "test perplexity (lower is better)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:3] == ["row0", "row1", "row2"]
    assert table["ci_low"].min() >= 1.0  # clipped to perplexity's range, not accuracy's
    fig, candidates, choice = plots.pareto_plot(points, metric="test.perplexity")
    on = candidates[candidates.pareto]
    assert set(on.branch) == {"row0"}  # the lowest perplexity at every level dominates
    chosen = choice["without_fairness"]
    assert chosen["branch"] == "row0" and chosen["mean"] <= 4.3 * 1.01 and "above the dense mean" in choice["limits"][0]
    limit = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"][0]
    assert limit.get_ydata()[0] == pytest.approx(4.3 * 1.01)
    assert fig.axes[0].get_ylabel() == "test perplexity (lower is better)"


def test_a_study_of_a_thousand_models_and_fourteen_rounds_stays_readable():
    """20 branches x 14 levels x 3 seeds (and a 40-configuration sweep, 100 classes): legends, heatmaps and
    matrices are capped and say what they left out."""
    points = _synthetic_points("test.accuracy", branches=20, levels=14, classes=100)
    assert len(points) > 800
    fig, _ = plots.accuracy_vs_remaining(points)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) <= plots.MAX_LINES + 2 and legend[-1] == "12 more branches (grey; all in the table)"
    branches = plots.branches_by_merit(points)
    fig, table = plots.per_class_heatmaps(points, branches)
    heat = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(heat) == plots.MAX_PANELS and all(len(ax.get_yticklabels()) == plots.MAX_CLASSES for ax in heat)
    assert "the best 4 of 20 branches" in fig.get_suptitle() and "the 20 of 100 classes" in fig.get_suptitle()
    assert set(table.branch) == set(branches)  # the table keeps everything
    fig, _ = plots.disparity_vs_remaining(points)
    assert len(fig.legends[0].get_texts()) <= plots.MAX_LINES + 2
    fig, _, _ = plots.pareto_plot(points)
    assert len(fig.axes[0].get_legend().get_texts()) <= plots.MAX_LINES + 7
    swept = _synthetic_points("test.accuracy", branches=1, levels=14, configs=40, classes=10)
    fig = plots.variation_plot(swept)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == plots.MAX_LINES + 1 and labels[-1] == "32 more configurations (grey)"
    for fig_ in (fig,):
        assert fig_.get_figwidth() * 110 <= 1000
