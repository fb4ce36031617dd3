"""A study on a Dask cluster started by hand, the way docs/cluster.md tells a user to: one
``dask scheduler`` and two ``dask worker`` processes (separate process groups, as on separate
machines), then ``prunelab run SPEC --executor tcp://HOST:PORT``.

The store is on this machine's disk, which every worker sees at the same path — what a shared
file system gives a real cluster: the workers write the states there themselves and send back
only a status per state.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DASK = Path(sys.executable).with_name("dask")  # the `dask` command of this environment
STARTUP_SECONDS = 60  # at most, for the scheduler to listen and the workers to register

SPEC = """
[study]
name = "cluster"
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

SUMMARY = re.compile(r"(\d+) states/probes: (\d+) computed, (\d+) already stored, (\d+) failed, (\d+) skipped "
                     r"\([\d.]+ s, (\d+) tasks\)")

pytestmark = pytest.mark.skipif(not DASK.is_file(), reason=f"no `dask` command next to {sys.executable}")


def _stop(processes: list[subprocess.Popen]) -> None:
    """End each process with its whole group (a worker's nanny and the worker it spawned): SIGTERM,
    up to 10 s to close, then SIGKILL for whatever is left."""
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also the group's members that outlived its leader
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def _log(folder: Path, name: str) -> str:
    path = folder / f"{name}.log"
    return f"--- {path} (end) ---\n" + (path.read_text(errors="replace")[-3000:] if path.exists() else "(none)")


def _scheduler_address(scheduler_file: Path, scheduler: subprocess.Popen, folder: Path) -> str:
    """The address in the scheduler file, once the scheduler accepts connections there."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(f"dask scheduler exited with status {scheduler.returncode}\n{_log(folder, 'scheduler')}")
        try:
            address = json.loads(scheduler_file.read_text())["address"]
            host, port = address.removeprefix("tcp://").rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1):
                return address
        except (OSError, ValueError, KeyError):  # not written yet, half written, not listening yet
            time.sleep(0.1)
    pytest.fail(f"dask scheduler not listening after {STARTUP_SECONDS} s\n{_log(folder, 'scheduler')}")


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory, isolated_data_dir):
    """A scheduler and two single-threaded workers on 127.0.0.1, on free ports the scheduler and the
    workers pick themselves; torn down (process groups) whatever happens, including a failed start."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    processes: list[subprocess.Popen] = []
    request.addfinalizer(lambda: _stop(processes[::-1]))  # registered before anything starts
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}  # as docs/cluster.md says

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(folder / f"{name}.log", "wb") as log:
            processes.append(subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                              cwd=folder, start_new_session=True))
        return processes[-1]

    scheduler_file = folder / "scheduler.json"
    # --idle-timeout / --death-timeout: should this process be killed before its finalizer runs, the
    # scheduler exits once idle and the workers once it is gone — nothing outlives the test for long
    scheduler = start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                      "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file),
                      "--idle-timeout", "120")
    address = _scheduler_address(scheduler_file, scheduler, folder)
    workers = [start(f"worker{i}", "worker", address, "--nworkers", "1", "--nthreads", "1", "--memory-limit", "2GB",
                     "--name", f"worker{i}", "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60",
                     "--local-directory", str(folder / f"worker{i}")) for i in range(2)]
    client = Client(address, timeout=10)
    request.addfinalizer(client.close)
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(client.scheduler_info()["workers"]) < 2:
        for i, w in enumerate(workers):
            if w.poll() is not None:
                pytest.fail(f"dask worker {i} exited with status {w.returncode}\n{_log(folder, f'worker{i}')}")
        if time.monotonic() > deadline:
            pytest.fail(f"2 workers not registered after {STARTUP_SECONDS} s\n"
                        + "\n".join(_log(folder, n) for n in ("scheduler", "worker0", "worker1")))
        time.sleep(0.2)
    return address, client


def _summary(output: str) -> dict[str, int]:
    found = SUMMARY.search(output)
    assert found, output
    return dict(zip(("total", "computed", "stored", "failed", "skipped", "tasks"), map(int, found.groups())))


def _start(spec: Path, store: Path, *options: str) -> subprocess.Popen:
    """``prunelab run SPEC --store STORE`` in a subprocess, writing its summary table to STORE.csv."""
    env = {**os.environ, "CI": "1", "COLUMNS": "400"}  # no progress bar; the summary on one line
    return subprocess.Popen([sys.executable, "-m", "prunelab.cli", "run", str(spec), "--store", str(store),
                             "--csv", str(store.with_suffix(".csv")), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def _finish(process: subprocess.Popen) -> tuple[dict[str, int], str]:
    """The counts of the run's summary line, and what it printed."""
    try:
        out, err = process.communicate(timeout=300)
    finally:
        _end(process)
    assert process.returncode == 0, f"{process.args}\n{out}\n{err}"
    return _summary(out), out


def _run(spec: Path, store: Path, *options: str) -> tuple[dict[str, int], str]:
    return _finish(_start(spec, store, *options))


def _contents(root: Path) -> dict[str, dict]:
    """What every state holds — tensors by content digest, iteration, metrics without wall-clock
    times — and every probe's result (which pack a tensor sits in depends on what the writing process
    had stored before: not content)."""
    from prunelab.experiment.audit import _strip
    from prunelab.experiment.store import Store

    store = Store(root, create=False)
    out = {}
    for path in sorted((root / "states").glob("*.json")):
        m = store.manifest(path.stem)
        optimizer = m.get("optimizer") or {}
        out[path.stem] = {
            "status": m["status"], "iteration": m["iteration"], "torch_threads": m["torch_threads"],
            "weights": {k: e["blob"] for k, e in m["weights"].items()},
            "masks": {k: e["blob"] for k, e in m["masks"].items()},
            "optimizer": {k: e["blob"] for k, e in (optimizer.get("tensors") or {}).items()},
            "optimizer values": optimizer.get("values"),
            "metrics": json.dumps(_strip(m.get("metrics") or {}), sort_keys=True, allow_nan=True)}
    for path in sorted((root / "probes").glob("*/*.json")):
        out[str(path.relative_to(root))] = json.dumps(_strip(json.loads(path.read_text())["result"]), sort_keys=True)
    return out


def test_a_study_on_a_scheduler_and_two_workers_started_by_hand(cluster, tmp_path, request):
    from distributed import get_task_stream

    address, client = cluster
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    store = tmp_path / "on-cluster"

    # the same spec in one process, beside the cluster's runs (the machine has cores to spare while
    # the workers start and the reruns plan), to compare with at the end
    serial = tmp_path / "serial"
    alone = _start(spec, serial, "--executor", "serial")
    request.addfinalizer(lambda: _end(alone))  # should anything below fail

    with get_task_stream(client) as stream:  # what the scheduler ran, and where
        first, printed = _run(spec, store, "--executor", address)
    assert f"to run on {address}" in printed
    assert first["failed"] == first["skipped"] == first["stored"] == 0
    assert first["computed"] == first["total"] > 10, first
    # the workers computed the states (the client only planned them), both of them
    ran = [t for t in stream.data if t["key"].startswith("prunelab-")]
    assert len({t["key"] for t in ran}) == first["tasks"] > 1
    assert len({t["worker"] for t in ran}) == 2, ran
    states = _contents(store)
    assert len(states) == first["total"]  # every state and probe is in the store
    assert all(s["status"] == "done" for key, s in states.items() if "/" not in key)

    # rerun: every state is found in the store, nothing goes to the cluster
    again, printed = _run(spec, store, "--executor", address)
    assert again == {**first, "computed": 0, "stored": first["total"], "tasks": 0}, printed
    assert _contents(store) == states  # and nothing in the store changed

    # the serial run computed the same states, bit for bit, and printed the same summary table
    serially, _ = _finish(alone)
    assert serially["computed"] == first["computed"]
    assert _contents(serial) == states
    assert serial.with_suffix(".csv").read_bytes() == store.with_suffix(".csv").read_bytes()


def test_a_worker_that_sees_another_store_refuses_and_the_client_notices(tmp_path):
    """Without a shared file system a worker would fill its own store at the same path and the run would
    report states the client cannot show: the worker refuses, and the client checks what it was told."""
    from prunelab.experiment import Store
    from prunelab.experiment.dask_executors import missing_after_run
    from prunelab.experiment.worker import check_shared_store
    from prunelab.experiment.store import StoreError

    store = Store(tmp_path / "store")
    token = "ab" * 16
    with pytest.raises(StoreError, match="shared file system"):
        check_shared_store(str(store.root), token)
    (store.root / "locks" / f"run-{token}").touch()
    check_shared_store(str(store.root), token)  # the client's token is there: the same store
    reported = [{"hash": "c" * 64, "status": "done"}, {"hash": "d" * 64, "status": "done", "probe": True},
                {"hash": "e" * 64, "status": "failed"}]
    assert missing_after_run(store, reported) == ["c" * 64]


def test_an_unknown_executor_is_refused_before_planning(tmp_path):
    from prunelab.errors import PrunelabError
    from prunelab.experiment import Experiment

    exp = Experiment(tmp_path / "store")
    with pytest.raises(PrunelabError, match="unknown executor 'tpc://host:8786'"):
        exp.run(executor="tpc://host:8786")
