"""A store handed over by a stranger (issue #30): each case builds a hostile copy of a small study's
store, runs the commands a user would, and checks that

- nothing outside the store changed: a sibling folder (canaries, another program's SQLite file, old
  temporary files, the targets of planted links) is compared byte for byte, mode and mtime;
- the answer is one line (an ``error:`` line or the problems verify lists), never a traceback;
- nothing inside was lost: what the study computed is still there, or in quarantine.

The commands run through prunelab's real entry point in this process (``run_cli_here``: the exit
status, stdout and stderr a process would give, without starting Python and torch each time), and
in a process of their own where the property needs one: a run beside gc, an environment that is the
whole process's, a regression that would allocate gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunelab.experiment.store import manifest_digest

from .conftest import run_cli_here
from .test_cli import run_cli
from .test_study import write_spec

SPEC = """
[study]
name = "hostile"
store = "STORE"
seeds = [0, 1]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 20
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 2
[branches.reinit]
control = "reinit"
of = "ticket"
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    spec = write_spec(folder, SPEC)
    out = run_cli_here("run", str(spec))
    assert out.returncode == 0, out.stderr
    _add_probe(spec)
    return folder


def _add_probe(spec: Path) -> None:
    """One probe result on the dense state of seed 0 (studies make none by themselves)."""
    from prunelab.experiment.recipes import Evaluate
    from prunelab.spec import load_spec
    from prunelab.study import build_study

    t = build_study(load_spec(spec))
    p = next(p for p in t.points if p.kind == "dense" and p.seed == 0)
    p.state.probe(Evaluate())
    assert t.experiment.run().ok


@pytest.fixture
def case(pristine, tmp_path):
    """(spec, store, outside): a fresh copy of the study, and a sibling folder that must not change."""
    shutil.copytree(pristine / "store", tmp_path / "store", symlinks=True)
    spec = tmp_path / "spec.toml"
    spec.write_text((pristine / "spec.toml").read_text().replace(str(pristine / "store"), str(tmp_path / "store")))
    outside = tmp_path / "outside"
    (outside / "blobs").mkdir(parents=True)
    (outside / "canary.txt").write_text("do not touch")
    (outside / "file.safetensors").write_bytes(b"\0" * 64)
    (outside / "blobs" / "old.tmp").write_text("someone else's temporary file")
    old = time.time() - 7200
    os.utime(outside / "blobs" / "old.tmp", (old, old))
    shutil.copy(outside / "file.safetensors", outside / "blobs" / ("ab" * 32 + ".safetensors"))
    with sqlite3.connect(outside / "app.sqlite") as con:
        con.execute("CREATE TABLE states (id INTEGER, name TEXT)")
        con.execute("INSERT INTO states VALUES (1, 'the application''s own row')")
    con.close()
    return spec, tmp_path / "store", outside


def snapshot(folder: Path) -> dict:
    """Every entry below ``folder`` (links not followed): content hash, mode, mtime."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path.relative_to(folder))] = (hashlib.sha256(data).hexdigest(), st.st_mode, st.st_mtime_ns)
    return out


def states(store: Path) -> set[str]:
    return {p.stem for p in (store / "states").glob("*.json")}


def quarantined(store: Path) -> set[str]:
    return {p.stem for p in (store / "quarantine").glob("*/states/*.json")}


def manifests(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / "states").glob("*.json")}


def dense(store: Path) -> dict:
    return next(m for m in manifests(store).values() if m["depth"] == 1 and m["recipe"]["type"] == "Train")


def rewrite(store: Path, m: dict, *, digest: bool = True) -> None:
    """What a deliberate editor does (``digest``: recomputed, a checksum is not a signature), or an
    edit that leaves the digest as it was."""
    if digest:
        m = {k: v for k, v in m.items() if k != "digest"}
        m["digest"] = manifest_digest(m)
    (store / "states" / f"{m['hash']}.json").write_text(json.dumps(m))


def one_line(out: subprocess.CompletedProcess, status: int = 2) -> str:
    assert out.returncode == status, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr[-3000:]
    if status == 2 and out.stderr.strip():
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        return lines[0]
    return out.stdout


def pack_of(m: dict, key: str = "1.weight") -> str:
    entry = m["weights"][key]
    return entry.get("pack") or entry["blob"]


def pack_path(store: Path, name: str) -> Path:
    return store / "blobs" / name[:2] / f"{name}.safetensors"


# ---------------------------------------------------------------- 1. paths outside the store


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_manifest_naming_a_file_outside_never_makes_repair_touch_it(case, where):
    spec, store, outside = case
    before = snapshot(outside)
    m = dense(store)
    target = "../../../../outside/file" if where == "relative" else str(outside / "file")
    for entry in m["weights"].values():
        entry["pack"] = target
    rewrite(store, m)
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "not a content hash" in found and m["hash"] in found
    fixed = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "1 states will be recomputed" in fixed and "index rebuilt" in fixed
    assert snapshot(outside) == before
    assert m["hash"] in quarantined(store) and m["hash"] not in states(store)
    again = run_cli_here("run", str(spec))
    assert again.returncode == 0 and "1 computed" in again.stdout
    assert one_line(run_cli_here("verify", str(store)), 0)


def test_a_parent_or_reference_that_is_not_a_hash_is_refused(case):
    """Identity recomputed for a planted parent: the name is its hash, yet the parent is a path."""
    from prunelab.experiment.store import identity_of

    _, store, outside = case
    before = snapshot(outside)
    m = dense(store)
    (store / "states" / f"{m['hash']}.json").unlink()
    m["parent"] = "../../outside/canary"
    m["hash"] = identity_of(m)
    rewrite(store, m)
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "parent is not a state hash" in found
    assert run_cli_here("ls", str(store)).returncode == 2
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert snapshot(outside) == before


# ---------------------------------------------------------------- 2. links and special files


def test_gc_never_deletes_through_a_linked_blob_folder(case):
    _, store, outside = case
    before = snapshot(outside)
    (store / "blobs" / "zz").symlink_to(outside / "blobs")
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "blobs/zz: is a symbolic link" in found
    gc = one_line(run_cli_here("gc", str(store)), 0)
    assert "removed 0" in gc
    assert snapshot(outside) == before
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert snapshot(outside) == before and not os.path.lexists(store / "blobs" / "zz")
    assert one_line(run_cli_here("verify", str(store)), 0)


def test_a_linked_index_is_neither_read_nor_written(case):
    spec, store, outside = case
    before = snapshot(outside)
    (store / "index.sqlite").unlink()
    for side in ("index.sqlite-wal", "index.sqlite-shm"):
        (store / side).unlink(missing_ok=True)
    (store / "index.sqlite").symlink_to(outside / "app.sqlite")
    listing = run_cli_here("ls", str(store))
    assert listing.returncode == 0 and "train→" in listing.stdout  # listed from the manifests
    run = one_line(run_cli_here("run", str(spec)))  # nothing is written through the link
    assert "index.sqlite: is a symbolic link" in run
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "index.sqlite: is a symbolic link" in found
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert snapshot(outside) == before
    with sqlite3.connect(outside / "app.sqlite") as con:
        assert con.execute("SELECT name FROM states").fetchall() == [("the application's own row",)]
    con.close()
    assert not (store / "index.sqlite").is_symlink() and one_line(run_cli_here("verify", str(store)), 0)
    assert run_cli_here("run", str(spec)).returncode == 0


def test_a_hard_linked_index_is_not_written(case):
    spec, store, outside = case
    before = snapshot(outside)
    (store / "index.sqlite").unlink()
    for side in ("index.sqlite-wal", "index.sqlite-shm"):
        (store / side).unlink(missing_ok=True)
    os.link(outside / "app.sqlite", store / "index.sqlite")
    assert "other hard links" in one_line(run_cli_here("run", str(spec)))
    assert run_cli_here("ls", str(store)).returncode == 0
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert snapshot(outside) == before


def test_a_linked_quarantine_receives_nothing(case):
    _, store, outside = case
    before = snapshot(outside)
    (store / "quarantine").symlink_to(outside)
    m = dense(store)
    m["metrics"]["test"]["accuracy"] = 0.999
    rewrite(store, m, digest=False)
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "quarantine: is a symbolic link" in found and "does not match its digest" in found
    fixed = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "1 states will be recomputed" in fixed
    assert snapshot(outside) == before
    assert (store / "quarantine").is_dir() and not (store / "quarantine").is_symlink()
    assert m["hash"] in quarantined(store)


@pytest.mark.parametrize("folder", ["states", "blobs", "documents", "locks", "probes"])
def test_a_linked_store_folder_is_refused_in_one_line(case, folder):
    spec, store, outside = case
    before = snapshot(outside)
    target = outside / f"real-{folder}"
    shutil.move(store / folder, target)
    (store / folder).symlink_to(target)
    before = snapshot(outside)
    run = one_line(run_cli_here("run", str(spec)))
    assert f"{folder}: is a symbolic link" in run
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert f"{folder}: is a symbolic link" in found
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert snapshot(outside) == before


def test_a_linked_lock_file_is_never_created_through(case):
    spec, store, outside = case
    m = dense(store)
    (store / "states" / f"{m['hash']}.json").unlink()  # the run must compute it, under its lock
    lock = store / "locks" / f"{m['hash']}.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(outside / "created-through-a-link")
    before = snapshot(outside)
    out = run_cli_here("run", str(spec))
    assert "Traceback" not in out.stderr
    assert not (outside / "created-through-a-link").exists() and snapshot(outside) == before


def test_a_fifo_never_blocks_a_reader(case):
    _, store, _ = case
    fifo = store / "states" / ("f" * 64 + ".json")
    os.mkfifo(fifo)
    listing = run_cli_here("ls", str(store))  # would block for ever on open() without O_NONBLOCK + fstat
    assert listing.returncode == 2 and "a FIFO" in listing.stdout and "Traceback" not in listing.stderr
    assert "is a FIFO" in one_line(run_cli_here("verify", str(store)), 1)


# ---------------------------------------------------------------- 4. gc beside a run


def test_gc_in_a_loop_beside_a_run_loses_nothing(case, tmp_path):
    """gc takes the store's lock exclusively and a run holds it shared, so gc waits for the run.
    The study is run from scratch, with more seeds, while gc loops."""
    spec, store, _ = case
    shutil.rmtree(store)
    spec.write_text(spec.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]"))
    run = subprocess.Popen([sys.executable, "-m", "prunelab.cli", "run", str(spec)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "1"})
    collections = 0
    while run.poll() is None:
        if (store / "states").is_dir():
            out = run_cli_here("gc", str(store))
            assert out.returncode in (0, 2) and "Traceback" not in out.stderr, out.stderr
            collections += 1
        else:
            time.sleep(0.01)  # the core is the run's while it starts
    stdout, stderr = run.communicate()
    assert run.returncode == 0 and " 0 failed" in stdout, stdout + stderr
    assert collections >= 1
    assert one_line(run_cli_here("verify", str(store)), 0)
    assert "0 to run" in run_cli_here("run", str(spec)).stdout  # everything it computed is there


# ---------------------------------------------------------------- 5. edits verify must see


def test_a_format_downgrade_is_not_a_way_around_the_digest(case):
    spec, store, _ = case
    m = dense(store)
    m["metrics"]["test"]["accuracy"] = 0.999
    m["format"] = 1
    del m["digest"]
    rewrite(store, m, digest=False)
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "digest missing" in found
    compare = run_cli_here("compare", str(store))
    assert "0.999" not in compare.stdout and compare.returncode == 2
    assert "damaged manifest" in one_line(run_cli_here("run", str(spec)))


def test_bytes_appended_to_a_pack_are_found(case):
    _, store, _ = case
    path = pack_path(store, pack_of(dense(store)))
    with open(path, "ab") as fh:
        fh.write(b"appended")
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "beyond what its header describes" in found and found.count(str(path)) == 1
    fixed = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "moved" in fixed and not path.exists()


def test_one_corrupt_pack_is_one_problem(case):
    _, store, _ = case
    m = dense(store)
    path = pack_path(store, pack_of(m))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert found.count("blob is corrupted") == 1 and "1 problems" in found


def test_edited_index_rows_are_found_and_a_received_index_is_never_served(case, tmp_path):
    spec, store, _ = case
    m = dense(store)
    with sqlite3.connect(store / "index.sqlite") as con:
        summary = json.loads(con.execute("SELECT summary FROM summaries WHERE hash = ?", (m["hash"],)).fetchone()[0])
        summary["scalars"]["test.accuracy"] = 0.999
        con.execute("UPDATE summaries SET summary = ? WHERE hash = ?", (json.dumps(summary), m["hash"]))
        con.execute("UPDATE listing SET tags = ? WHERE hash = ?", (json.dumps(["invented"]), m["hash"]))
    con.close()
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "differ from their manifests" in found
    # the same store as a stranger hands it over (a copy: another file): its index is not trusted
    received = tmp_path / "received"
    shutil.copytree(store, received)
    compare = run_cli_here("compare", str(received))
    assert compare.returncode == 0 and "0.999" not in compare.stdout
    tagged = run_cli_here("ls", str(received), "--tag", "invented")
    assert tagged.returncode == 0 and m["hash"][:12] not in tagged.stdout
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert one_line(run_cli_here("verify", str(store)), 0)
    assert m["hash"][:12] not in run_cli_here("ls", str(store), "--tag", "invented").stdout


def test_swapped_roles_in_the_study_document_are_found(case):
    _, store, _ = case
    path = next((store / "documents").glob("study-*.json"))
    doc = json.loads(path.read_text())
    points = doc["points"]
    a = next(p for p in points if p["kind"] == "imp" and p["round"] == 2)
    b = next(p for p in points if p["kind"] == "reinit" and p["round"] == 2 and p["seed"] == a["seed"])
    a["hash"], b["hash"] = b["hash"], a["hash"]
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    assert "content does not match its digest" in one_line(run_cli_here("verify", str(store)), 1)
    assert "damaged document" in one_line(run_cli_here("compare", str(store)))


def test_a_forged_probe_result_is_never_shown(case):
    _, store, _ = case
    path = next((store / "probes").glob("*/*.json"))
    record = json.loads(path.read_text())
    record["result"]["test"]["accuracy"] = 0.999
    path.write_text(json.dumps(record))
    assert "damaged probe result" in one_line(run_cli_here("verify", str(store)), 1)
    show = run_cli_here("show", str(store), path.parent.name)
    assert show.returncode == 2 and "0.999" not in show.stdout and "Traceback" not in show.stderr
    path.write_bytes(b"\x00garbage")
    show = run_cli_here("show", str(store), path.parent.name)
    assert show.returncode == 2 and "damaged probe result" in show.stdout and "Traceback" not in show.stderr


# ---------------------------------------------------------------- 6. the recompute audit


def test_a_state_that_cannot_be_recomputed_fails_the_audit(case):
    _, store, _ = case
    from prunelab.experiment.store import identity_of

    # a user recipe: not built in, so never recomputed
    m = dense(store)
    (store / "states" / f"{m['hash']}.json").unlink()
    m["recipe"]["type"] = "mylab.recipes.Train"
    m["hash"] = identity_of(m)
    rewrite(store, m)
    out = run_cli_here("verify", str(store), "--state", m["hash"])
    assert out.returncode == 1 and "could not recompute" in out.stdout and "not audited" in out.stdout


def test_a_state_that_recomputes_differently_is_quarantined_with_what_was_computed_from_it(case):
    _, store, _ = case
    from prunelab.experiment.store import Store, tensor_entries

    # a random re-initialisation (no state holds a copy of its fresh weights to give a forgery away):
    # another valid pack there, digests recomputed, is what only re-execution catches
    m = next(c for c in manifests(store).values() if c["recipe"]["type"] == "RandomReinit")
    store_obj = Store(store)
    snap = store_obj.load(m["hash"])
    weights = dict(snap.weights)
    weights["1.weight"] = weights["1.weight"] * 1.5
    forged = store_obj.write_state({k: v for k, v in m.items() if k not in ("weights", "masks", "optimizer")},
                                   snap.evolve(weights=weights))
    assert forged["weights"]["1.weight"]["blob"] != m["weights"]["1.weight"]["blob"]
    assert one_line(run_cli_here("verify", str(store)), 0)  # every checksum holds
    children = {h for h, c in manifests(store).items() if c.get("parent") == m["hash"]}
    assert children  # its training
    out = run_cli_here("verify", str(store), "--state", m["hash"], "--repair")
    assert out.returncode == 0 and "recomputed result differs" in out.stdout
    assert {m["hash"]} | children <= quarantined(store)
    assert not ({m["hash"]} | children) & states(store)
    assert tensor_entries(forged)


# ---------------------------------------------------------------- 7. repair is idempotent


def test_repair_twice_moves_nothing_more_and_never_overwrites(case):
    spec, store, _ = case
    m = dense(store)
    m["metrics"]["test"]["accuracy"] = 0.999
    rewrite(store, m, digest=False)
    first = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "1 states will be recomputed" in first
    kept = states(store)
    second = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "moved" not in second and states(store) == kept  # the children of a moved state stay
    # a second damage repaired in the same second goes to a folder of its own
    other = next(c for c in manifests(store).values() if c["depth"] == 2)
    other["metrics"]["sparsity"] = 0.123
    rewrite(store, other, digest=False)
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    folders = list((store / "quarantine").iterdir())
    assert len(folders) == 2 and quarantined(store) == {m["hash"], other["hash"]}
    assert run_cli_here("run", str(spec)).returncode == 0 and one_line(run_cli_here("verify", str(store)), 0)


# ---------------------------------------------------------------- 8. a damaged index


def _garbage_page(store: Path) -> None:
    with sqlite3.connect(store / "index.sqlite") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for side in ("index.sqlite-wal", "index.sqlite-shm"):
        (store / side).unlink(missing_ok=True)
    data = bytearray((store / "index.sqlite").read_bytes())
    assert len(data) >= 3 * 4096
    data[4096:8192] = os.urandom(4096)
    (store / "index.sqlite").write_bytes(bytes(data))


def test_a_garbage_page_in_the_index_is_found_and_never_fatal(case):
    spec, store, _ = case
    _garbage_page(store)
    assert "damaged index" in one_line(run_cli_here("verify", str(store)), 1)
    m = dense(store)
    (store / "states" / f"{m['hash']}.json").unlink()  # a run with work to do: it writes index rows
    run = run_cli_here("run", str(spec))
    assert run.returncode == 0 and "1 computed" in run.stdout, run.stdout + run.stderr
    assert one_line(run_cli_here("verify", str(store)), 0)


def test_an_index_of_another_schema_is_rebuilt(case):
    spec, store, _ = case
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    with sqlite3.connect(store / "index.sqlite") as con:
        con.execute("CREATE TABLE states (id INTEGER, name TEXT)")
    con.close()
    assert "another schema" in one_line(run_cli_here("verify", str(store)), 1)
    m = dense(store)
    (store / "states" / f"{m['hash']}.json").unlink()
    run = run_cli_here("run", str(spec))
    assert run.returncode == 0 and "1 computed" in run.stdout, run.stdout + run.stderr
    assert one_line(run_cli_here("verify", str(store)), 0)


def test_verify_repair_rebuilds_a_damaged_index(case):
    _, store, _ = case
    _garbage_page(store)
    fixed = one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert "index rebuilt" in fixed and one_line(run_cli_here("verify", str(store)), 0)
    assert list((store / "quarantine").glob("*/index.sqlite"))  # kept for a post-mortem


# ---------------------------------------------------------------- 9. bounded cost, one line


def test_a_manifest_nested_deeply_is_one_line_everywhere(case):
    _, store, _ = case
    m = dense(store)
    path = store / "states" / f"{m['hash']}.json"
    path.write_text('{"hash": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for args in (("ls", str(store)), ("tree", str(store))):
        out = run_cli_here(*args)
        assert out.returncode == 2 and "nested more than" in out.stdout and "Traceback" not in out.stderr
    assert "nested more than" in one_line(run_cli_here("verify", str(store)), 1)
    one_line(run_cli_here("verify", str(store), "--repair"), 0)


def test_a_digest_valid_manifest_with_an_impossible_dtype_is_refused(case):
    _, store, _ = case
    m = next(c for c in manifests(store).values() if c.get("optimizer") and c["optimizer"]["values"])
    key = next(iter(m["optimizer"]["values"]))
    m["optimizer"]["values"][key] = {"scalar": 1.0, "dtype": "save"}
    rewrite(store, m)
    assert "is malformed" in one_line(run_cli_here("verify", str(store)), 1)
    out = run_cli_here("show", str(store), m["hash"])
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_an_absurd_dataset_variant_is_one_line(case, tmp_path):
    spec, store, _ = case
    m = dense(store)
    m["dataset"] = "digits[resize=100000x100000]"
    rewrite(store, m)
    report = one_line(run_cli_here("report", str(store), "-o", str(tmp_path / "r.html"), "--groups",
                              str(_groups(tmp_path))))
    assert "resize" in report
    spec.write_text(spec.read_text().replace('dataset = "digits"', 'dataset = "digits[resize=100000x100000]"'))
    assert "resize" in one_line(run_cli_here("run", str(spec)))


def _groups(tmp_path: Path) -> Path:
    path = tmp_path / "groups.csv"
    path.write_text("group\n" + "\n".join("ab"[i % 2] for i in range(180)) + "\n")
    return path


def test_a_store_naming_a_downloadable_dataset_never_downloads(case, tmp_path):
    _, store, _ = case
    for m in manifests(store).values():
        if m["status"] == "done" and m.get("dataset") == "digits":
            m["dataset"] = "mnist"
            rewrite(store, m)
    env = {"PRUNELAB_DATA": str(tmp_path / "empty-cache"), "PRUNELAB_DATA_MIRROR": str(tmp_path / "no-mirror"),
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    # a subprocess: the environment (no cache, no mirror, no network) is the whole process's, as urllib reads it
    out = run_cli("report", str(store), "-o", str(tmp_path / "r.html"), "--groups", str(_groups(tmp_path)), env=env)
    line = one_line(out)
    assert "never downloads what a store names" in line and not (tmp_path / "empty-cache").exists()


def test_pack_headers_and_padding_are_bounded(case):
    _, store, _ = case
    m = dense(store)
    path = pack_path(store, pack_of(m))
    with open(path, "r+b") as fh:  # a sparse 3 GB file: nothing is read to refuse it
        fh.truncate(3 * 2**30)
    began = time.perf_counter()
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "beyond what its header describes" in found and time.perf_counter() - began < 30
    huge = (200 * 2**20).to_bytes(8, "little") + b"{" + b" " * 64
    path.write_bytes(huge)
    assert "header of 209,715,200 bytes" in one_line(run_cli_here("verify", str(store)), 1)


def test_a_mask_shape_that_would_need_gigabytes_is_refused(case):
    _, store, _ = case
    m = next(c for c in manifests(store).values() if c["status"] == "done" and c["masks"])
    key = next(iter(m["masks"]))
    m["masks"][key]["shape"] = [100_000, 100_000]
    m["masks"][key]["kept"] = 1
    rewrite(store, m)
    # a subprocess: were the shape believed, ~10 GB would be allocated, and only that process killed
    out = run_cli("verify", str(store), "--state", m["hash"])
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_bad_arguments_are_one_line(case):
    _, store, _ = case
    assert run_cli_here("verify", str(store), "--recompute", "-5").returncode == 2
    proc = one_line(run_cli_here("ls", "/proc"))
    assert "not a prunelab store" in proc
    spec, _, _ = case
    spec.write_text(spec.read_text().replace(str(store), "/proc/prunelab-store"))
    one_line(run_cli_here("run", str(spec)))


def test_a_document_linked_outside_is_not_read(case, tmp_path):
    _, store, outside = case
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"format": 1, "points": []}))
    before = snapshot(outside)
    (store / "documents" / "study-leak.json").symlink_to(secret)
    assert "symbolic link" in one_line(run_cli_here("compare", str(store)))
    assert "symbolic link" in one_line(run_cli_here("verify", str(store)), 1)
    assert snapshot(outside) == before


# ---------------------------------------------------------------- 10. group sharing


def test_the_index_follows_the_umask(tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("seeds = [0, 1]", "seeds = [0]"))
    umask = os.umask(0o002)
    try:
        out = run_cli_here("run", str(spec))
    finally:
        os.umask(umask)
    assert out.returncode == 0, out.stderr
    store = tmp_path / "store"
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (store / name).exists():
            assert (store / name).stat().st_mode & 0o777 == 0o664, name
    assert all(p.stat().st_mode & 0o020 for p in (store / "states").glob("*.json"))


# ---------------------------------------------------------------- found by trying (a second attacker's view)


def prune_state(store: Path) -> dict:
    """A state that no study point is (a Prune): moving it aside leaves the study's tables whole."""
    return next(m for m in manifests(store).values() if m["recipe"]["type"] == "Prune")


def test_a_stray_file_in_states_never_blocks_the_store(case):
    _, store, _ = case
    (store / "states" / "foo.json").write_text("{}")
    (store / "states" / ("A" * 64 + ".json")).write_text("{}")
    listing = run_cli_here("ls", str(store))
    assert listing.returncode == 2 and "train→" in listing.stdout and "Traceback" not in listing.stderr
    assert "foo.json" in one_line(run_cli_here("verify", str(store)), 1)
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert one_line(run_cli_here("verify", str(store)), 0)


@pytest.mark.parametrize("edit", [
    lambda m: m["metrics"].__setitem__("sparsity", 10**400),
    lambda m: m.__setitem__("depth", 10**30),
    lambda m: m.__setitem__("depth", "x"),
    lambda m: m.__setitem__("timings", "x"),
    lambda m: m.__setitem__("metrics", [1]),
    lambda m: m["metrics"].__setitem__("test", {"accuracy": "high"}),
    lambda m: m["metrics"].__setitem__("test", {"accuracy": 0.5, "class_names": [{"a": 1}]}),
    lambda m: m.__setitem__("tags", ["\ud800"]),
    lambda m: m.update(status="failed", error="x"),
    lambda m: m.update(status="failed", error={"message": "x"}, weights="x"),
], ids=["huge-sparsity", "huge-depth", "text-depth", "text-timings", "list-metrics", "text-accuracy",
        "object-class-names", "lone-surrogate", "text-error", "failed-with-tensors"])
def test_digest_valid_odd_fields_are_one_damaged_manifest(case, edit):
    _, store, _ = case
    m = prune_state(store)
    edit(m)
    rewrite(store, m)
    for command in ("ls", "compare"):
        out = run_cli_here(command, str(store))
        assert out.returncode == 2 and "Traceback" not in out.stderr, (command, out.stderr[-2000:])
    assert m["hash"] in one_line(run_cli_here("verify", str(store)), 1)
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert one_line(run_cli_here("verify", str(store)), 0)


def test_a_missing_study_point_is_reported_not_silently_dropped(case):
    spec, store, _ = case
    document = json.loads(next((store / "documents").glob("study-*.json")).read_text())
    leaf = next(p for p in document["points"] if p["kind"] == "reinit" and p["round"] == 2 and p["seed"] == 1)
    (store / "states" / f"{leaf['hash']}.json").unlink()
    fake = store / "quarantine" / "fake" / "states"  # a planted quarantine entry excuses nothing
    fake.mkdir(parents=True)
    (fake / f"{leaf['hash']}.json").write_text("{}")
    assert "points are not in the store" in one_line(run_cli_here("verify", str(store)), 1)
    compare = run_cli_here("compare", str(store))
    assert compare.returncode == 2 and "that is not in the store" in compare.stdout
    assert run_cli_here("run", str(spec)).returncode == 0 and one_line(run_cli_here("verify", str(store)), 0)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["points"][0].__setitem__("hash", "../../outside/canary"), "not a state hash"),
    (lambda d: d["points"][0].__setitem__("hash", "0" * 64), "not in the store"),
    (lambda d: d.__setitem__("comparisons", [["ticket"]]), "comparisons[0]"),
    (lambda d: d.__setitem__("hypotheses", ["x"]), "hypotheses[0]"),
    (lambda d: d["points"][0].__setitem__("branch", "\x1b]0;pwned\x07"), "control characters"),
], ids=["path", "nothing", "comparison", "hypothesis", "escape"])
def test_a_hostile_study_record_is_one_line(case, edit, message):
    _, store, outside = case
    before = snapshot(outside)
    path = next((store / "documents").glob("study-*.json"))
    doc = json.loads(path.read_text())
    edit(doc)
    doc.pop("digest")
    doc["digest"] = manifest_digest(doc)
    path.write_text(json.dumps(doc))
    compare = run_cli_here("compare", str(store))
    assert compare.returncode == 2 and "Traceback" not in compare.stderr and message in compare.stdout + compare.stderr
    assert "\x1b" not in compare.stdout + compare.stderr
    verify = run_cli_here("verify", str(store))
    assert verify.returncode == 1 or message in ("comparisons[0]", "hypotheses[0]", "control characters")
    assert snapshot(outside) == before


def test_odd_entries_where_folders_and_lock_files_belong_are_moved(case):
    spec, store, _ = case
    (store / "quarantine").mkdir()
    (store / "quarantine" / "x").write_text("not a repair")
    (store / "blobs" / "zz").write_text("a file where a folder of packs belongs")
    (store / "locks" / "__store__.lock").unlink(missing_ok=True)
    (store / "locks" / "__store__.lock").mkdir()
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "blobs/zz: is a file where prunelab keeps a folder" in found and "__store__.lock" in found
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert one_line(run_cli_here("verify", str(store)), 0) and one_line(run_cli_here("gc", str(store)), 0)
    assert run_cli_here("run", str(spec)).returncode == 0


def test_control_characters_and_markup_from_a_store_never_reach_the_terminal(case):
    _, store, _ = case
    m = prune_state(store)
    m.update(status="failed", error={"message": "\x1b]0;pwned\x07\x1b[2Jgone", "traceback": ""})
    for group in ("weights", "masks", "optimizer"):
        m[group] = None
    rewrite(store, m)
    tree = run_cli_here("tree", str(store))
    assert tree.returncode == 0 and "\x1b" not in tree.stdout and "gone" in tree.stdout
    probe = next((store / "probes").glob("*/*.json"))
    record = json.loads(probe.read_text())
    record["label"] = "[/bold] [link=https://evil.example]click[/link] \x1b[2J"
    record.pop("digest")
    record["digest"] = manifest_digest(record)
    probe.write_text(json.dumps(record))
    show = run_cli_here("show", str(store), probe.parent.name)
    assert show.returncode == 0 and "\x1b" not in show.stdout and "[link=" in show.stdout, show.stderr[-2000:]


def test_gc_after_a_repair_keeps_what_quarantine_needs(case):
    _, store, _ = case
    m = prune_state(store)
    m["metrics"]["sparsity"] = 0.123
    rewrite(store, m, digest=False)  # damaged: the digest no longer matches
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    quarantined_manifest = json.loads(next((store / "quarantine").glob("*/states/*.json")).read_text())
    packs = {e.get("pack") or e["blob"] for group in ("weights", "masks") for e in quarantined_manifest[group].values()}
    one_line(run_cli_here("gc", str(store)), 0)
    assert all(pack_path(store, name).is_file() for name in packs)  # a move into quarantine can be undone


def test_a_report_goes_on_past_a_damaged_pack(case, tmp_path):
    _, store, _ = case
    m = prune_state(store)
    entry = next(iter(m["masks"].values()))
    path = pack_path(store, entry.get("pack") or entry["blob"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    out = run_cli_here("report", str(store), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "blob is corrupted" in out.stdout
    page = (tmp_path / "r.html").read_text()
    assert "a stored file could not be read" in page and "Accuracy vs weights remaining" in page


def test_a_prune_that_does_not_hold_its_parents_weights_is_found_with_what_came_after(case):
    """A prune changes masks only; one holding other (valid, stored) weights was computed from a parent
    changed in place, or forged: found from the manifests alone, moved with its subtree."""
    _, store, _ = case
    all_manifests = manifests(store)
    m = prune_state(store)
    root = all_manifests[all_manifests[m["parent"]]["parent"]]  # the dense training's parent
    m["weights"] = root["weights"]  # the initialisation's tensors: present and sound, but not the parent's
    rewrite(store, m)
    found = one_line(run_cli_here("verify", str(store)), 1)
    assert "holds other weights or optimizer state" in found and m["hash"][:12] in found
    below = {h for h, c in all_manifests.items() if c.get("parent") == m["hash"]}
    one_line(run_cli_here("verify", str(store), "--repair"), 0)
    assert {m["hash"]} | below <= quarantined(store)
