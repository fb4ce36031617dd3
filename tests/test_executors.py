"""Executors by name: the built-ins, yours by import path (trusted modules only), installed ones
through the entry-point group prunelab.executors, and the one interface they share."""

from __future__ import annotations

import sys
import textwrap

import pytest

from prunelab import registry
from prunelab.errors import PrunelabError
from prunelab.experiment import executors
from prunelab.experiment.dask_executors import AddressExecutor, LocalExecutor
from prunelab.experiment.executors import EXECUTORS, SerialExecutor, make_executor

from .conftest import run_cli_here
from .experiment_helpers import small_tree

# A user's executor: runs the ready task that came LAST in the plan first (an order serial never
# uses), counts what it ran, and says so in the run's note.
USER_EXECUTOR = textwrap.dedent('''
    CLOSED = []

    class LastReadyFirst:
        name = "last-ready-first"

        def run(self, tasks, context, progress):
            results = {}
            while len(results) < len(tasks):
                ready = [i for i, t in enumerate(tasks) if i not in results and all(d in results for d in t.deps)]
                i = ready[-1]
                results[i] = context.execute(tasks[i], *[results[d] for d in tasks[i].deps])
                progress.finished(results[i])
            return f"{len(tasks)} tasks, the last ready first"

        def close(self):
            CLOSED.append(self.name)
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, in a folder on the path; nothing trusted yet."""
    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_TRUSTED", set())
    monkeypatch.delenv(registry.TRUST_ENV, raising=False)
    yield write
    for name in [m for m in sys.modules if m.startswith("user_exec")]:
        sys.modules.pop(name, None)  # a module of this tmp_path: no later test finds it


def test_a_user_executor_by_import_path_stores_what_serial_stores(tmp_path, user_module):
    module = user_module("user_exec_lrf", USER_EXECUTOR)
    registry.trust(module)  # as prunelab --trust user_exec_lrf, or prunelab.trust(...) in a script
    exp, *_ = small_tree(tmp_path / "user")
    summary = exp.run(f"{module}:LastReadyFirst")
    assert summary.ok and len(summary.computed) == len(exp.states)
    assert summary.note == f"{summary.tasks} tasks, the last ready first"
    assert sys.modules[module].CLOSED == ["last-ready-first"]  # closed once, after its run
    serial, *_ = small_tree(tmp_path / "serial")
    assert set(serial.states) == set(exp.states)
    assert serial.run().ok
    for h in exp.states:  # the same bits, whichever order the tasks ran in
        assert exp.store.manifest(h)["weights"] == serial.store.manifest(h)["weights"], h
    # nothing left to do: the executor is made and closed, and never asked to run
    again, *_ = small_tree(tmp_path / "user")
    assert not again.run(f"{module}:LastReadyFirst").computed
    assert sys.modules[module].CLOSED == ["last-ready-first"] * 2


def test_an_untrusted_import_path_is_refused_before_it_is_imported(tmp_path, user_module):
    marker = tmp_path / "imported"
    module = user_module("user_exec_evil", f"open({str(marker)!r}, 'w').close()\n" + USER_EXECUTOR)
    exp, *_ = small_tree(tmp_path / "s")
    with pytest.raises(PrunelabError, match=f"refusing to import module '{module}' for executor"):
        exp.run(f"{module}:LastReadyFirst")
    assert module not in sys.modules and not marker.exists()  # its code never ran
    assert not (tmp_path / "s").exists()  # refused before planning: no store was made


def test_the_command_line_trusts_the_executor_you_type_and_refuses_an_unknown_one_first(tmp_path, user_module):
    from .test_study import write_spec

    module = user_module("user_exec_cli", USER_EXECUTOR)
    spec = write_spec(tmp_path, "[study]\nname = 's'\nstore = 'STORE'\nseeds = [0]\n[task]\ndataset = 'digits'\n"
                                "model = 'lenet_300_100'\n[training]\niterations = 10\n[branches.b]\nrounds = 1\n")
    out = run_cli_here("run", str(spec), "--executor", f"{module}:LastReadyFirst")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "tasks, the last ready first" in out.stdout and " 0 failed" in out.stdout
    # an unknown name fails before the spec is read (this one does not exist)
    bad = run_cli_here("run", str(tmp_path / "missing.toml"), "--executor", "serail")
    assert bad.returncode == 2 and "unknown executor 'serail'; did you mean 'serial'?" in bad.stderr


def test_names_addresses_and_their_errors(monkeypatch):
    assert isinstance(make_executor("serial"), SerialExecutor)
    assert isinstance(make_executor("local"), LocalExecutor)
    address = make_executor("tcp://127.0.0.1:9")
    assert isinstance(address, AddressExecutor) and address.name == "tcp://127.0.0.1:9"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tls://scheduler:8786")
    assert make_executor("address").name == "tls://scheduler:8786"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    with pytest.raises(PrunelabError, match="executor 'address' needs the scheduler's address"):
        make_executor("address")
    with pytest.raises(PrunelabError, match=r"unknown executor 'locl'; did you mean 'local'\? \(known: address, "
                                            r"local, serial; or give a Dask scheduler address"):
        make_executor("locl")
    with pytest.raises(PrunelabError, match="unknown executor 'tpc://host:8786'; did you mean 'tcp://host:8786'"):
        make_executor("tpc://host:8786")
    mine = SerialExecutor()
    assert make_executor(mine) is mine  # an executor object is used as it is

    class NoClose:
        name = "x"

        def run(self, tasks, context, progress):
            return ""

    with pytest.raises(PrunelabError, match="is not an executor: it lacks close()"):
        make_executor(NoClose())


def test_an_installed_executor_is_found_through_its_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "labexec-0.1.dist-info").mkdir(parents=True)
    (site / "labexec-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: labexec\nVersion: 0.1\n")
    (site / "labexec-0.1.dist-info" / "entry_points.txt").write_text(
        "[prunelab.executors]\nlast-ready = user_exec_installed:LastReadyFirst\nserial = user_exec_installed:Other\n")
    (site / "user_exec_installed.py").write_text(USER_EXECUTOR)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "user_exec_installed", raising=False)
    monkeypatch.setattr(registry, "_TRUSTED", set())  # installed: no trust needed
    # entry points are discovered once a process: a registry as a new process has it
    monkeypatch.setattr(registry, "_INSTALLED", [])
    fresh = registry.Registry("executor", group="prunelab.executors")
    fresh._entries.update(EXECUTORS._entries)
    monkeypatch.setattr(executors, "EXECUTORS", fresh)
    assert "last-ready" in fresh.names()
    made = make_executor("last-ready")
    assert type(made).__name__ == "LastReadyFirst" and made.name == "last-ready-first"
    assert isinstance(make_executor("serial"), SerialExecutor)  # a built-in name is never taken over
    sys.modules.pop("user_exec_installed", None)


def test_the_plan_orders_states_depth_first_from_the_shallowest(tmp_path):
    """A state needing a deeper one (a random control like a later round) pulls that state's line
    in before the states after it: the order that numbers the tasks and groups lockstep chains."""
    from prunelab import TrainConfig
    from prunelab.experiment import Experiment, Prune, RandomPruneLike, Rewind, Train
    from prunelab.experiment.planning import dependency_order
    from prunelab.pruning import technique

    exp = Experiment(tmp_path / "s")
    config = TrainConfig(iterations=2, batch_size=32)
    root = exp.root(dataset="digits", model="lenet_300_100")
    dense = root.then(Train(config))
    p1 = dense.then(Prune(technique("l1_unstructured", amount=0.3)))
    random = dense.then(RandomPruneLike(like=p1))  # made now, its reference deepened below
    w1 = p1.then(Rewind(to=root))
    t1 = w1.then(Train(config))
    p2 = t1.then(Prune(technique("l1_unstructured", amount=0.3)))
    deep = dense.then(RandomPruneLike(like=p2))  # depth 2, needs p2 at depth 5
    other = dense.then(Prune(technique("global_unstructured", amount=0.3)))
    order = dependency_order(list(exp.states.values()))
    assert order == [root, dense, p1, random, w1, t1, p2, deep, other]
    # shallowest-ready-first (Kahn's) would put `other` before w1: another numbering of the tasks
    assert dependency_order([deep, other], skip={root.hash, dense.hash}) == [p1, w1, t1, p2, deep, other]
