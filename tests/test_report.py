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
    assert "adding the fairness constraint" in page or "does not change" in page or "no candidate" in page


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
