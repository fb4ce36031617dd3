"""What a new user sees on an 80-column terminal and in a log (issue #33): tables that fit, whole
intervals, `show` as a summary (`--json` the manifest), progress named by what runs, with an ETA
in a log, and no third-party warnings."""

import json
import re
import socket

import pytest

from prunelab import progress

from .conftest import run_cli_here
from .test_cli import run_cli
from .test_study import write_spec

SPEC = """
[study]
name = "fmt"
store = "STORE"
seeds = [0, 1, 2]

[task]
dataset = "digits"
model = "lenet_300_100"

[training]
iterations = 40
batch_size = 32

[branches.ticket]
rate = 0.5
rounds = 2

[branches.reinit]
control = "reinit"
of = "ticket"

[[hypotheses]]
claim = "ticket > reinit"
rounds = [2]
"""

INTERVAL = re.compile(r"[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]")  # "+0.0287 [-0.0448, +0.1021]"
HASH = re.compile(r"^[0-9a-f]{12}\b")


def lines_fit(text: str, width: int) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} lines longer than {width}: {long[:3]}"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study run on --executor local (a cluster, not the fallback) with output to a file, while
    something else holds port 8787 (Dask's default dashboard port)."""
    folder = tmp_path_factory.mktemp("fmt")
    spec = write_spec(folder, SPEC)
    held = socket.socket()
    try:
        held.bind(("", 8787))
        held.listen()
    except OSError:  # already in use: exactly the case to test
        pass
    try:
        # a subprocess: a Dask cluster of worker processes, and the warnings its logging prints in that process
        out = run_cli("run", str(spec), "--executor", "local", "--workers", "2", "--no-fallback",
                      env={"COLUMNS": "80", "PRUNELAB_PROGRESS_SECONDS": "0"})
    finally:
        held.close()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return folder / "store", out


def test_a_local_run_shows_progress_lines_with_an_eta_and_no_dask_warning(study):
    _, out = study
    progress_lines = [line for line in out.stdout.splitlines() if re.search(r"\d+/\d+ states", line)]
    assert progress_lines, out.stdout
    assert all("ETA" in line and "elapsed" in line for line in progress_lines)
    assert any(re.search(r"ETA \d+(s|m\d\ds)", line) for line in progress_lines)
    assert "8787" not in out.stderr and "already in use" not in out.stderr, out.stderr
    assert "Warning" not in out.stderr, out.stderr


def test_run_tables_fit_80_columns_with_whole_intervals(study):
    _, out = study
    summary = out.stdout[out.stdout.index("states/probes"):]  # the tables after the run
    lines_fit(summary, 80)
    assert "…" not in summary
    assert len(INTERVAL.findall(summary)) == 5  # 2 rounds x (vs dense, vs reinit) + the hypothesis


@pytest.mark.parametrize("columns", [80, 60])
def test_compare_fits_and_never_cuts_an_interval(study, tmp_path, columns):
    store, _ = study
    csv = tmp_path / "compare.csv"
    out = run_cli_here("compare", str(store), "--csv", str(csv), env={"COLUMNS": str(columns)})
    assert out.returncode == 0, out.stderr
    lines_fit(out.stdout, columns)
    assert "…" not in out.stdout
    planned = len(csv.read_text().strip().splitlines()) - 1
    assert planned == 4 and len(INTERVAL.findall(out.stdout)) == planned + 1  # + the declared hypothesis
    assert "left out to fit" in out.stdout  # what did not fit is said, not cut


def test_ls_is_one_line_a_state_at_80_columns_with_usable_hashes(study):
    store, _ = study
    out = run_cli_here("ls", str(store), "--limit", "0", env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines_fit(out.stdout, 80)
    rows = [line for line in out.stdout.splitlines() if HASH.match(line)]
    states = list((store / "states").glob("*.json"))
    assert len(rows) == len(states)  # one line each: nothing wrapped onto a second line
    for row in rows[:5]:  # the hash shown is enough for show
        shown = run_cli_here("show", str(store), row[:12], "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["hash"].startswith(row[:12])
    wide = run_cli_here("ls", str(store), "--limit", "3", env={"COLUMNS": "200"})
    assert "seconds" in wide.stdout and "depth" in wide.stdout and "left out" not in wide.stdout


def test_show_is_a_summary_and_json_is_the_manifest(study):
    store, _ = study
    record = json.loads(next((store / "documents").glob("study-*.json")).read_text())
    point = next(p for p in record["points"] if p["branch"] == "ticket" and p["round"] == 2)
    out = run_cli_here("show", str(store), point["hash"][:10], env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("lineage", "lenet_300_100 on digits", "accuracy", "(higher is better)", "sparsity",
                   "% remain", "took", "finished", "pack file", "made with"):
        assert needle in text, needle
    assert len(text.splitlines()) < 60  # a summary, not the manifest
    assert not re.search(r"\b1[0-9]{9}\.[0-9]+", text)  # no Unix timestamps
    raw = run_cli_here("show", str(store), point["hash"][:10], "--json")
    assert raw.returncode == 0
    manifest = json.loads((store / "states" / f"{point['hash']}.json").read_text())
    assert json.loads(raw.stdout) == manifest


def test_a_bar_is_named_by_the_branch_round_and_seed_it_runs():
    lines = []
    display = progress.RunDisplay(3, how="log", write=lines.append, every=0)
    with display:
        with progress.running("ticket r3 s1"), progress.progress_bar(1000, "training Sequential") as bar:
            bar.advance(400)
            assert "ticket r3 s1 · train 400/1000" in display.line()
        display.finished([{"hash": "a", "status": "done"}])
    assert len(lines) == 1 and "1/3 states" in lines[0] and "ETA" in lines[0]
    with progress.progress_bar(10, "training Sequential", enabled=False) as bar:  # outside a run: its own name
        assert progress.bar_name("training Sequential") == "training Sequential"


def test_a_log_line_at_most_every_interval():
    lines = []
    display = progress.RunDisplay(100, how="log", write=lines.append, every=3600)
    with display:
        for _ in range(50):
            display.finished([{"hash": "a", "status": "done"}])
    assert lines == []  # 50 states finished within the hour: no line yet
    display = progress.RunDisplay(4, how="log", write=lines.append, every=0)
    with display:
        for status in ("done", "failed", "done"):
            display.finished([{"hash": "a", "status": status}])
    assert len(lines) == 3 and "3/4 states (1 failed)" in lines[-1]


def test_states_are_named_by_the_point_they_lead_to(tmp_path):
    from prunelab.experiment.run_display import state_labels
    from prunelab.spec import load_spec
    from prunelab.study import build_study

    tree = build_study(load_spec(write_spec(tmp_path, SPEC)))
    exp = tree.experiment
    labels = state_labels(exp, exp.states)
    ticket = next(p for p in tree.points if p.branch == "ticket" and p.round == 2 and p.seed == 1)
    rewind, prune = ticket.state.parent, ticket.state.parent.parent
    assert labels[ticket.state.hash] == labels[rewind.hash] == labels[prune.hash] == "ticket r2 s1"
    dense = next(p for p in tree.points if p.branch == "dense" and p.seed == 0)
    assert labels[dense.state.hash] == labels[dense.state.parent.hash] == "dense s0"  # and its root
    reinit = next(p for p in tree.points if p.branch == "reinit" and p.round == 1 and p.seed == 2)
    assert labels[reinit.state.hash] == labels[reinit.state.parent.hash] == "reinit r1 s2"
