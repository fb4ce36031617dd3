"""Fault injection (issue #14): tampering, corruption, truncation, loss, a garbage index, read-only stores,
a full disk, and a store that names a module to import. Each from the CLI as a user meets it (through its
real entry point, in this process: ``run_cli_here``)."""

import errno
import json
import shutil

import pytest

from prunelab import PrunelabError
from prunelab.experiment import Experiment, StoreError, Train, open_store
from prunelab.experiment.store import manifest_digest
from prunelab.spec import load_spec
from prunelab.study import build_study

from .conftest import run_cli_here
from .experiment_helpers import CONFIG
from .test_study import write_spec

SPEC = """
[study]
name = "faults"
store = "STORE"
seeds = [0]
[task]
dataset = "digits"
model = "lenet_300_100"
[training]
iterations = 20
batch_size = 32
[branches.ticket]
rate = 0.5
rounds = 2
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    spec = write_spec(folder, SPEC)
    assert build_study(load_spec(spec)).experiment.run().ok
    return folder


@pytest.fixture
def study(pristine, tmp_path):
    """A fresh copy of a finished study: (spec path, store path)."""
    shutil.copytree(pristine / "store", tmp_path / "store")
    spec = tmp_path / "spec.toml"
    spec.write_text((pristine / "spec.toml").read_text().replace(str(pristine / "store"), str(tmp_path / "store")))
    return spec, tmp_path / "store"


def _dense(store):
    results = open_store(store)
    return next(m for m in results.states(recipe="Train") if m["depth"] == 1)


def _rewrite(store, manifest, keep_digest_valid=False):
    if keep_digest_valid:  # what a deliberate editor does: the digest is a checksum, not a signature
        manifest["digest"] = manifest_digest(manifest)
    (store / "states" / f"{manifest['hash']}.json").write_text(json.dumps(manifest))


def test_an_edited_metric_is_detected_refused_and_repaired(study):
    spec, store = study
    dense = _dense(store)
    dense["metrics"]["test"]["accuracy"] = 0.999
    _rewrite(store, dense)
    out = run_cli_here("verify", str(store))
    assert out.returncode == 1 and "content does not match its digest" in out.stdout and dense["hash"] in out.stdout
    run = run_cli_here("run", str(spec))
    assert run.returncode == 2 and "damaged manifest" in run.stderr and "0.999" not in run.stdout
    listing = run_cli_here("ls", str(store))  # the rest of the store stays readable
    assert listing.returncode == 2 and "damaged, left out" in listing.stdout and "Traceback" not in listing.stderr
    fixed = run_cli_here("verify", str(store), "--repair")
    assert fixed.returncode == 0 and "1 states will be recomputed" in fixed.stdout
    assert (next((store / "quarantine").iterdir()) / "states" / f"{dense['hash']}.json").is_file()
    again = run_cli_here("run", str(spec))
    assert again.returncode == 0 and "1 computed" in again.stdout  # exactly what was lost, nothing else
    assert open_store(store).get(dense["hash"])["metrics"]["test"]["accuracy"] != 0.999
    assert run_cli_here("verify", str(store)).returncode == 0


def test_an_edited_identity_is_detected_even_with_a_valid_digest(study):
    _, store = study
    dense = _dense(store)
    dense["recipe"]["params"]["config"]["lr"] = 1.0
    _rewrite(store, dense, keep_digest_valid=True)
    out = run_cli_here("verify", str(store))
    assert out.returncode == 1 and "do not give its hash" in out.stdout


@pytest.mark.parametrize("damage", ["truncate", "delete_blob", "corrupt_blob"])
def test_damage_is_found_moved_aside_and_recomputed(study, damage):
    spec, store = study
    dense = _dense(store)
    path = store / "states" / f"{dense['hash']}.json"
    entry = dense["weights"]["1.weight"]
    name = entry.get("pack") or entry["blob"]  # the state's pack (one-tensor files before format 3)
    blob = store / "blobs" / name[:2] / f"{name}.safetensors"
    if damage == "truncate":
        path.write_text(path.read_text()[:100])
    elif damage == "delete_blob":
        blob.unlink()
    else:
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
    out = run_cli_here("verify", str(store))
    assert out.returncode == 1 and dense["hash"][:12] in out.stdout
    listing = run_cli_here("ls", str(store))  # one bad file never makes the store unreadable (exit 2: it was met)
    assert listing.returncode == (2 if damage == "truncate" else 0) and "Traceback" not in listing.stderr
    fixed = run_cli_here("verify", str(store), "--repair")
    assert fixed.returncode == 0
    import re

    lost = int(re.search(r"(\d+) states will be recomputed", fixed.stdout).group(1))
    assert lost == 1 or damage.endswith("blob")  # a blob can be shared by states with equal tensors
    again = run_cli_here("run", str(spec))
    assert again.returncode == 0 and f"{lost} computed" in again.stdout, again.stdout + again.stderr
    assert run_cli_here("verify", str(store)).returncode == 0


def test_a_garbage_index_is_never_fatal(study):
    spec, store = study
    (store / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for side in ("index.sqlite-wal", "index.sqlite-shm"):  # (a WAL holding every page would restore it)
        (store / side).unlink(missing_ok=True)
    found = run_cli_here("verify", str(store))  # a cache, but a damaged one is reported
    assert found.returncode == 1 and "damaged index" in found.stdout and "Traceback" not in found.stderr
    listing = run_cli_here("ls", str(store))  # moved aside and rebuilt from the manifests
    assert listing.returncode == 0 and "Traceback" not in listing.stderr and "train→" in listing.stdout
    for args in (("run", str(spec)), ("verify", str(store))):
        out = run_cli_here(*args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)


def test_a_read_only_store_can_be_read_reported_verified_and_rerun(study, tmp_path, monkeypatch):
    """As a read-only mount (or another user's store) looks to this process: not writable."""
    import os

    spec, store = study
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (mode & os.W_OK and str(p).startswith(
        str(store))) else real_access(p, mode, **kw))
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    results = open_store(store)
    assert results.store.read_only and len(results) > 0
    from prunelab.analysis.tables import study_points
    from prunelab.report import build_report

    assert len(study_points(results)) == 3
    build_report(results, tmp_path / "r.html")
    assert results.store.verify() == []
    tree = build_study(load_spec(spec))
    summary = tree.experiment.run()  # a no-op rerun
    assert summary.ok and not summary.computed
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before  # nothing was written
    with pytest.raises(StoreError, match="read-only"):
        Experiment(store).root(dataset="digits", model="lenet_300_100", seed=5).then(Train(CONFIG)).experiment.run()


def test_a_store_never_imports_a_module_it_names(study, tmp_path, monkeypatch, request):
    """A manifest edited to name a module (digest recomputed): loading the model refuses to import it."""
    import sys

    _, store = study
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                         "def make(**kw):\n    raise SystemExit('never')\n")
    dense = _dense(store)
    dense["spec"]["model"] = "evilmod:make"
    _rewrite(store, dense, keep_digest_valid=True)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, as with PYTHONPATH
    request.addfinalizer(lambda: sys.modules.pop("evilmod", None))  # forgotten after the test
    out = run_cli_here("report", str(store), "-o", str(tmp_path / "r.html"), "--efficiency", "flops_removed")
    assert out.returncode == 2 and "refusing to import module 'evilmod'" in out.stderr and "--trust evilmod" in out.stderr
    assert not marker.exists()
    with pytest.raises(PrunelabError, match="refusing to import"):
        open_store(store).load_model(dense["hash"])
    assert not marker.exists()
    trusted = run_cli_here("--trust", "evilmod", "report", str(store), "-o", str(tmp_path / "r.html"), "--efficiency",
                           "flops_removed")
    assert marker.exists() and trusted.returncode != 0  # imported only when the user said so


def test_a_full_disk_stops_the_run_with_one_line_and_the_rerun_resumes(study, monkeypatch):
    import prunelab.experiment.publishing as publishing

    spec, store = study
    shutil.rmtree(store)
    real = publishing.write_all
    calls = {"n": 0}

    def full_after_some(fd, parts):
        calls["n"] += 1
        if calls["n"] > 3:  # one file a state (its pack): the disk fills while the fourth is written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, parts)

    monkeypatch.setattr(publishing, "write_all", full_after_some)  # where a run writes its packs
    tree = build_study(load_spec(spec))
    with pytest.raises(StoreError, match="disk full"):
        tree.experiment.run()
    assert not list(store.glob("**/*.tmp"))  # no half-written file left behind
    monkeypatch.setattr(publishing, "write_all", real)
    summary = build_study(load_spec(spec)).experiment.run()
    assert summary.ok and summary.reused and summary.computed
    assert open_store(store).store.verify() == []


@pytest.mark.parametrize("change, message", [
    (("batch_size = 32", "batch_size = 32\nlr = inf"), "training.lr: Input should be a finite number"),
    (("batch_size = 32", "batch_size = 32\nlr = 1e300"), "training.lr: Input should be less than or equal to 10"),
    (("seeds = [0]", "seeds = [9223372036854775808]"), "seeds must lie in 0..2^63-1"),
    (("seeds = [0]", "seeds = [-1]"), "seeds must lie in 0..2^63-1"),
    (("seeds = [0]", "seeds = " + "[" * 600 + "]" * 600), "nested too deeply"),
    (("batch_size = 32", "batch_size = 5000"), "5000 is larger than the 1294 training examples of digits"),
])
def test_impossible_values_are_one_line_errors_and_write_nothing(tmp_path, change, message):
    path = write_spec(tmp_path, SPEC.replace(*change))
    out = run_cli_here("run", str(path))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "store").exists()


def test_unreadable_spec_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00\x01 binary")
    for path, message in ((binary, "not a text file"), (tmp_path, "is a directory, not a spec file")):
        out = run_cli_here("run", str(path))
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_recompute_audits_a_store_bit_for_bit_and_catches_a_consistent_forgery(study):
    """A forged result that passes every checksum (valid blob, digest recomputed) is caught by re-execution."""
    _, store = study
    out = run_cli_here("verify", str(store), "--recompute", "3")
    assert out.returncode == 0 and out.stdout.count("bit-identical") == 3
    results = open_store(store)
    dense = _dense(store)
    # the last training of the branch: nothing was computed from it, so no copy of its tensors
    # elsewhere can give the forgery away (a forged dense state is found by verify: its prune's
    # weights are the true ones)
    leaf = max(results.states(recipe="Train"), key=lambda m: m["depth"])
    leaf["weights"]["1.weight"] = dense["weights"]["1.weight"]  # someone else's (valid) tensor
    _rewrite(store, leaf, keep_digest_valid=True)
    assert run_cli_here("verify", str(store)).returncode == 0  # every checksum still holds
    out = run_cli_here("verify", str(store), "--state", leaf["hash"][:12])
    assert out.returncode == 1 and "weights.1.weight: differs" in out.stdout
