"""Executors: what runs a plan's tasks. One small interface; ``serial``, ``local`` and ``address``
built in; your own by name.

An executor is any object with

* ``name``: what it is called (``"serial"``, ``"tcp://host:8786"``);
* ``run(tasks, context, progress) -> str``: run every task of the plan (:class:`~.taskgraph.Task`,
  in dependency order; ``task.deps`` are the indices of the tasks whose results it needs), pass each
  task's results to ``progress.finished(results)`` as they come, and return a note for the run's
  summary (``""``: none). ``context`` (:class:`ExecutorContext`) holds the experiment, the torch
  threads a task runs at and the user's options; ``context.execute(task, *dependency_results)``
  runs a task in this process, :func:`.worker.execute_task` anywhere else. A task runs the same
  function wherever it runs, so the executor never changes a state's bits;
* ``close()``: give back what it holds (a cluster). Called once after ``run``, also after an error.

``Experiment.run(executor=...)`` and ``prunelab run --executor`` take an executor object or a
name: one registered in :data:`EXECUTORS` (built in, or installed by a package under the
entry-point group ``prunelab.executors``), a Dask scheduler address (``tcp://host:8786``: the
``address`` executor), or ``package.module:Class`` — imported only from a module you trust
(:mod:`prunelab.registry`; the CLI trusts what you type). A name resolves to a class (or any
callable) called with no arguments. An unknown name fails before anything is planned.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from ..errors import PrunelabError
from ..registry import Registry
from .context import RunContext, StateTask  # noqa: F401 (re-exported)
from .planning import plan  # noqa: F401 (re-exported: scripts and prunelab.hep plan through this module)
from .taskgraph import Task, devices
from .worker import execute_task

if TYPE_CHECKING:
    from .run_display import RunProgress
    from .store import Store
    from .tree import Experiment

SCHEDULER_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")


@dataclass(frozen=True)
class ExecutorContext:
    """What an executor is told besides the tasks: the experiment (its store), the torch threads
    every task runs at, and the user's ``workers`` and ``fallback`` (executors that start workers
    or may decline to)."""

    experiment: "Experiment"
    threads: int
    workers: int | None = None
    fallback: bool = True

    @property
    def store(self) -> "Store":
        return self.experiment.store

    @property
    def store_root(self) -> str:
        """The store's absolute folder, symbolic links resolved: what a worker elsewhere opens."""
        return str(self.store.root.resolve())

    def execute(self, task: Task, *dependency_results: list[dict]) -> list[dict]:
        """Run ``task`` in this process (its results; never raises for a recipe's error)."""
        return execute_task(self.store, task, self.threads, *dependency_results)


@runtime_checkable
class Executor(Protocol):
    name: str

    def run(self, tasks: list[Task], context: ExecutorContext, progress: "RunProgress") -> str: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Every task in this process, one after the other, in plan order."""

    name = "serial"

    def run(self, tasks: list[Task], context: ExecutorContext, progress: "RunProgress") -> str:
        check_devices(tasks)
        by_task: list[list[dict]] = []
        # one publisher for the whole run: a task's last state is stored while the next task computes
        with context.store.deferred_publishing():
            for task in tasks:
                out = context.execute(task, *[by_task[d] for d in task.deps])
                by_task.append(out)
                progress.finished(out)
        return ""

    def close(self) -> None:
        pass


def check_devices(tasks: list[Task]) -> None:
    """Trainings on a device this machine lacks fail before anything runs (for executors whose tasks
    run here: a remote cluster's workers may have what this machine lacks, and each state says so)."""
    from ..tasks.training import TrainConfig, training_device

    for device in sorted(devices(tasks) - {"cpu"}):
        try:
            training_device(TrainConfig(iterations=1, device=device))
        except PrunelabError as exc:
            raise PrunelabError(f"{exc}; nothing was run") from None


# ---------------------------------------------------------------- the registry


# installed executors come from the entry-point group prunelab.executors, as every registry's do
EXECUTORS: Registry[Callable[[], Executor]] = Registry(
    "executor", group="prunelab.executors",
    alternatives="a Dask scheduler address like tcp://host:8786, or 'package.module:Class'")
EXECUTORS.register("serial", "every task in this process, one after the other")(SerialExecutor)


def _local():
    from .dask_executors import LocalExecutor

    return LocalExecutor


def _address():
    from .dask_executors import AddressExecutor

    return AddressExecutor


EXECUTORS.lazy("local", _local, "a Dask LocalCluster of worker processes on this machine")
EXECUTORS.lazy("address", _address, "the Dask cluster at DASK_SCHEDULER_ADDRESS (or give the address itself)")


def is_import_path(name: str) -> bool:
    """Does ``name`` name an executor by import path (``package.module:Class``, not an address)?"""
    return ":" in name and "://" not in name


def make_executor(executor: "str | Executor") -> Executor:
    """The executor ``executor`` names (see the module's docstring), or ``executor`` itself."""
    if not isinstance(executor, str):
        return _checked(executor, repr(executor))
    if "://" in executor:
        if executor.startswith(SCHEDULER_SCHEMES):
            from .dask_executors import AddressExecutor

            return AddressExecutor(executor)
        scheme, _, rest = executor.partition("://")
        close = difflib.get_close_matches(scheme + "://", SCHEDULER_SCHEMES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0] + rest!r}?" if close else ""
        raise PrunelabError(f"unknown executor {executor!r}{hint} (a scheduler address starts with "
                            f"{', '.join(SCHEDULER_SCHEMES)}; known executors: {', '.join(EXECUTORS.names())})")
    factory = EXECUTORS.get(executor)  # an import path: from a trusted module only
    try:
        made = factory()
    except PrunelabError:
        raise
    except Exception as exc:
        raise PrunelabError(f"executor {executor!r} could not be made: {type(exc).__name__}: {exc}") from None
    return _checked(made, executor)


def _checked(executor, what: str) -> Executor:
    missing = [m for m in ("run", "close") if not callable(getattr(executor, m, None))]
    if missing or not isinstance(getattr(executor, "name", None), str):
        lacks = ", ".join([f"{m}()" for m in missing] + ([] if isinstance(getattr(executor, "name", None), str)
                                                         else ["a name"]))
        raise PrunelabError(f"executor {what} is not an executor: it lacks {lacks} (see prunelab.experiment.executors)")
    return executor
