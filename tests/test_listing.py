"""The store's listing: ls, tree and filters from the index, manifests opened only when changed."""

import json
import os
import sqlite3

import pytest

from prunelab.experiment import Store, open_store
from prunelab.experiment import planning
from prunelab.experiment.store import StoreError

from .experiment_helpers import small_tree


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store"
    exp, root, dense, leaves = small_tree(path, branches=("l1_unstructured", "global_unstructured"), rounds=2)
    assert exp.run().ok
    return path, exp, leaves


def count_reads(monkeypatch):
    reads = []
    original = Store._read_manifest

    def spy(self, path):
        reads.append(path)
        return original(self, path)

    monkeypatch.setattr(Store, "_read_manifest", spy)
    return reads


def test_a_current_listing_opens_no_manifest(store, monkeypatch):
    path, exp, leaves = store
    reads = count_reads(monkeypatch)
    results = open_store(path)
    rows = results.rows(tag="l1_unstructured", recipe="Train")
    assert reads == []  # ls, tree and filters: one directory scan and the index
    assert {leaves[0].hash} <= {r["hash"] for r in rows}
    lines = list(results.tree_lines())
    assert len(lines) == 1 + len(exp.states) and reads == []
    # the rows say what the manifests say (an independent read of each file)
    for h in exp.states:
        m = json.loads((path / "states" / f"{h}.json").read_text())
        r = results.row(h)
        assert (r["parent"], r["depth"], r["recipe"], r["status"], r["tags"]) == (
            m["parent"], m["depth"], m["recipe"]["type"], m["status"], m["tags"])
        test = m["metrics"].get("test")
        assert (r["headline"] is None) == (test is None)
        if test:
            assert r["headline"] == f"acc {test['accuracy']:.4f}"
    assert results.get(leaves[0].hash)["hash"] == leaves[0].hash and len(reads) == 1  # full manifest: on demand


def test_a_store_indexed_before_listings_is_listed_then_cached(store, monkeypatch):
    path, exp, _ = store
    with sqlite3.connect(path / "index.sqlite") as con:
        con.execute("DROP TABLE listing")
    reads = count_reads(monkeypatch)
    first = open_store(path)
    assert len(first) == len(exp.states) and len(reads) == len(exp.states)  # every manifest, verified
    reads.clear()
    assert len(open_store(path)) == len(exp.states) and reads == []  # written back: the next listing is free


def test_a_changed_manifest_is_read_again_and_a_damaged_one_left_out(store, monkeypatch):
    path, exp, leaves = store
    target = path / "states" / f"{leaves[1].hash}.json"
    m = json.loads(target.read_text())
    m["metrics"]["test"]["accuracy"] = 0.999  # edited after it was indexed: the digest no longer matches
    target.write_text(json.dumps(m))
    os.utime(target, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    reads = count_reads(monkeypatch)
    results = open_store(path)
    assert reads == [target]  # only the changed file is opened
    assert target in results.damaged and leaves[1].hash not in {r["hash"] for r in results.rows()}
    ls = results.rows(tag="global_unstructured")
    assert all(r["headline"] != "acc 0.9990" for r in ls)


def test_a_vanished_manifest_leaves_the_listing(store):
    path, exp, leaves = store
    (path / "states" / f"{leaves[0].hash}.json").unlink()
    results = open_store(path)
    assert leaves[0].hash not in {r["hash"] for r in results.rows()}
    with sqlite3.connect(path / "index.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM listing WHERE hash = ?", (leaves[0].hash,)).fetchone()[0] == 0


def test_a_read_only_store_lists_without_writing(store, monkeypatch):
    path, exp, _ = store
    with sqlite3.connect(path / "index.sqlite") as con:
        con.execute("DELETE FROM listing")  # stale: every manifest must be read, and nothing written back
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    import prunelab.experiment.query as query

    monkeypatch.setattr(query.os, "access", lambda *a, **k: False)  # as on a read-only mount (root writes anyway)
    results = open_store(path)
    assert not results.store.cache_writable
    assert len(results) == len(exp.states) and list(results.tree_lines())
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == before


def test_a_large_plan_reads_the_listing_and_stops_at_a_damaged_manifest(store, monkeypatch):
    path, exp, leaves = store
    big = list(exp.states.values()) * 5  # over the 64-state threshold: the listing path
    done = planning.done_states(exp.store, big)
    assert set(done) == set(exp.states)
    target = path / "states" / f"{leaves[0].hash}.json"
    target.write_text(target.read_text().replace('"depth"', '"depth" ', 1))  # changed bytes, digest still checked
    m = json.loads(target.read_text())
    m["metrics"]["sparsity"] = 0.5
    target.write_text(json.dumps(m))
    os.utime(target, ns=(2, 2))
    with pytest.raises(StoreError, match="damaged manifest"):
        planning.done_states(Store(path), big)


def test_ls_limits_counts_and_filters_in_the_index(store):
    from .conftest import run_cli_here

    path, exp, leaves = store
    out = run_cli_here("ls", str(path), "--limit", "2")
    assert out.returncode == 0 and f"2 of {len(exp.states)} states shown" in out.stdout
    tagged = run_cli_here("ls", str(path), "--tag", "global_unstructured", "--recipe", "Train", "--limit", "0")
    expected = {h for h, s in exp.states.items() if "global_unstructured" in s.tags and type(s.recipe).__name__ == "Train"}
    assert tagged.returncode == 0 and all(h[:12] in tagged.stdout for h in expected) and "shown" not in tagged.stdout
    assert leaves[0].hash[:12] not in tagged.stdout
    tree = run_cli_here("tree", str(path))
    assert tree.returncode == 0 and len(tree.stdout.splitlines()) == 1 + len(exp.states) and "[dim]" not in tree.stdout


def test_summaries_come_from_the_index_and_equal_the_manifests(store, monkeypatch):
    """What study tables read (scalar metrics, per-class table, percent kept) is in the index,
    written with the state; it equals a summary made from an independent read of each manifest."""
    from prunelab.experiment.summary import state_summary
    from prunelab.study import remaining_percent

    path, exp, leaves = store
    reads = count_reads(monkeypatch)
    results = open_store(path)
    summaries = results.summaries(list(exp.states))
    assert reads == [] and set(summaries) == set(exp.states)
    for h in exp.states:
        m = json.loads((path / "states" / f"{h}.json").read_text())
        s = summaries[h]
        assert s == json.loads(json.dumps(state_summary(m)))
        assert s["remaining"] == pytest.approx(remaining_percent(m)) and s["status"] == m["status"]
        test = m["metrics"].get("test")
        if test:
            assert s["scalars"]["test.accuracy"] == test["accuracy"]
            assert s["recall"] == [c["recall"] for c in test["per_class"]] and len(s["recall"]) == 10
            assert s["class_names"] == test["class_names"]
            assert not any(k.startswith("curve") for k in s["scalars"])


def test_stale_missing_or_older_summaries_are_made_again_and_written_back(store, monkeypatch):
    from prunelab.experiment import summary

    path, exp, leaves = store
    target = leaves[0].hash
    with sqlite3.connect(path / "index.sqlite") as con:
        con.execute("UPDATE summaries SET stamp = 'old' WHERE hash = ?", (target,))  # made from another file
    reads = count_reads(monkeypatch)
    assert set(open_store(path).summaries([target, leaves[1].hash])) == {target, leaves[1].hash}
    assert reads == [path / "states" / f"{target}.json"]
    reads.clear()
    open_store(path).summaries([target])
    assert reads == []  # written back
    with sqlite3.connect(path / "index.sqlite") as con:
        con.execute("DROP TABLE summaries")  # an index from before summaries existed
    assert len(open_store(path).summaries(list(exp.states))) == len(exp.states) and len(reads) == len(exp.states)
    reads.clear()
    with sqlite3.connect(path / "index.sqlite") as con:  # a row that is not a whole summary: remade
        con.execute("UPDATE summaries SET summary = ? WHERE hash = ?",
                    (json.dumps({"version": summary.SUMMARY_VERSION}), target))
    assert open_store(path).summaries([target])[target]["scalars"] and len(reads) == 1
    reads.clear()
    monkeypatch.setattr(summary, "SUMMARY_VERSION", summary.SUMMARY_VERSION + 1)
    import prunelab.experiment.store.listing as listing_module

    monkeypatch.setattr(listing_module, "SUMMARY_VERSION", summary.SUMMARY_VERSION)
    open_store(path).summaries([target])
    assert len(reads) == 1  # made by an older state_summary: made again


def test_a_read_only_store_summarises_without_writing(store, monkeypatch):
    path, exp, _ = store
    with sqlite3.connect(path / "index.sqlite") as con:
        con.execute("DELETE FROM summaries")
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    import prunelab.experiment.query as query

    monkeypatch.setattr(query.os, "access", lambda *a, **k: False)
    assert len(open_store(path).summaries(list(exp.states))) == len(exp.states)
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == before


def test_to_frame_reads_the_index_and_says_what_the_manifests_say(store, monkeypatch):
    from prunelab.experiment.query import flatten

    path, exp, _ = store
    reads = count_reads(monkeypatch)
    frame = open_store(path).to_frame()
    assert reads == [] and len(frame) == len(exp.states)
    for row in frame.itertuples(index=False):
        m = json.loads((path / "states" / f"{row.hash}.json").read_text())
        assert (row.depth, row.recipe, row.status, row.iteration) == (
            m["depth"], m["recipe"]["type"], m["status"], m["iteration"])
        assert row.parent == m["parent"] or (m["parent"] is None and row.parent != row.parent)  # None: NaN
        kept = sum(e["kept"] for e in m["masks"].values()) if m.get("masks") else None
        assert (row.kept == kept) or (kept is None and row.kept != row.kept)
        metrics = {k: v for k, v in flatten(m.get("metrics") or {}).items() if not k.startswith(("curve", "layers"))}
        for key, value in metrics.items():
            assert frame.loc[frame.hash == row.hash, f"metric.{key}"].iloc[0] == value
