"""The Dask executors: ``local`` (a LocalCluster on this machine) and ``address`` (the cluster whose
scheduler is at an address). Each task is one Dask future, given its dependencies' futures; a
worker runs :func:`.worker.execute_task` on the store's folder, which every worker must see on a
shared file system at the same path (docs/cluster.md). Only each state's status comes back.

``local`` runs in this process instead when a cluster cannot gain (``fallback``, the default): no
two tasks of the plan can run at once, or the work predicted from the plan is too small to pay for
the cluster's start-up (:mod:`.scheduling`); the run's summary says which.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import PrunelabError
from .executors import ExecutorContext, SerialExecutor, check_devices
from .store import Store, StoreError
from .taskgraph import Task, devices, max_parallel
from .worker import execute_task

if TYPE_CHECKING:
    from .run_display import RunProgress
    from .tree import Experiment

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"


class DaskExecutor:
    """Tasks as futures on a Dask client; ``connect`` says which client."""

    name = "dask"

    def __init__(self) -> None:
        self.client = None

    def connect(self, tasks: list[Task], context: ExecutorContext):  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, tasks: list[Task], context: ExecutorContext, progress: "RunProgress") -> str:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise PrunelabError("the 'local' and cluster executors need dask.distributed (pip install "
                                "'dask[distributed]')") from exc
        self.client = self.connect(tasks, context)
        results = submit(self.client, context.store_root, tasks, context.threads, progress)
        missing = missing_after_run(context.store, results)
        if missing:
            raise StoreError(f"{context.store.root}: the workers reported {len(missing)} states stored that are "
                             f"not here (e.g. {missing[0][:10]}): they wrote to another store at this path. Every "
                             "worker must see the store on a shared file system at the same path (docs/cluster.md)")
        return ""

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()


class LocalExecutor(DaskExecutor):
    """A Dask LocalCluster of ``workers`` processes (default: one per GPU for a CUDA study, else one
    per ``threads`` cores), one thread each."""

    name = "local"

    def __init__(self) -> None:
        super().__init__()
        self.cluster = None

    def run(self, tasks: list[Task], context: ExecutorContext, progress: "RunProgress") -> str:
        check_devices(tasks)
        note = in_process_reason(context.experiment, tasks, context.workers, context.threads) if context.fallback else ""
        if note:
            SerialExecutor().run(tasks, context, progress)
            return note
        return super().run(tasks, context, progress)

    def connect(self, tasks: list[Task], context: ExecutorContext):
        import dask
        from distributed import Client, LocalCluster

        n = context.workers or default_workers(tasks, context.threads)
        # Dask's statistical profiler samples the task thread every 10 ms and
        # takes the GIL each time; training loops are Python-heavy, and with it
        # on, two workers on two cores run markedly slower than two plain processes.
        with dask.config.set({"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                              "distributed.admin.system-monitor.interval": "2s",
                              "distributed.worker.memory.monitor-interval": "1s"}):
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.ERROR,
                                        worker_dashboard_address=None, **_dashboard())
        return Client(self.cluster)

    def close(self) -> None:
        super().close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()


class AddressExecutor(DaskExecutor):
    """The Dask cluster whose scheduler is at ``address`` (``tcp://host:8786``; default: the
    ``DASK_SCHEDULER_ADDRESS`` environment variable). Every task goes to the cluster."""

    def __init__(self, address: str | None = None) -> None:
        super().__init__()
        address = address or os.environ.get(ADDRESS_ENV, "").strip()
        if not address:
            raise PrunelabError(f"executor 'address' needs the scheduler's address: give the address itself "
                                f"(--executor tcp://host:8786) or set {ADDRESS_ENV}")
        self.name = self.address = address

    def connect(self, tasks: list[Task], context: ExecutorContext):
        from distributed import Client

        try:
            return Client(self.address, timeout=10)
        except OSError as exc:
            raise PrunelabError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from exc


def submit(client, store_root: str, tasks: list[Task], threads: int, progress: "RunProgress") -> list[dict]:
    """Run ``tasks`` on ``client``'s workers; their results, each task's passed to ``progress`` as it ends."""
    from distributed import as_completed

    token = secrets.token_hex(16)  # a worker that cannot see this file sees another store (worker.check_shared_store)
    token_file = Path(store_root) / "locks" / f"run-{token}"
    token_file.touch()
    topic = ""
    if progress.shows_bars:  # the workers' training bars, named by what they run, in this display
        topic = f"prunelab-progress-{os.getpid()}-{time.monotonic_ns()}"
        client.subscribe_topic(topic, lambda event: progress.remote(event[1]))
    try:
        futures = []
        for i, task in enumerate(tasks):
            task.progress_topic = topic
            task.run_token = token
            deps = [futures[d] for d in task.deps]
            futures.append(client.submit(execute_task, store_root, task, threads, *deps,
                                         key=f"prunelab-{task.key}-{i}", pure=False, retries=0))
        results: list[dict] = []
        for future in as_completed(futures):
            try:
                out = future.result()
            except Exception as exc:  # KilledWorker: a worker died (memory) on this task, retried to the limit
                if type(exc).__name__ != "KilledWorker":
                    raise
                raise PrunelabError(f"a Dask worker died running {exc.args[0] if exc.args else 'a task'} (out of memory? "
                                    "see the worker's log); the states already finished are stored: run the same "
                                    "command again to go on") from None
            results.extend(out)
            progress.finished(out)
        return results
    finally:
        token_file.unlink(missing_ok=True)
        if topic:
            try:
                client.unsubscribe_topic(topic)
            except (ValueError, OSError):
                pass


def in_process_reason(experiment: "Experiment", tasks: list[Task], workers: int | None, threads: int) -> str:
    """Why a ``local`` run should not start a cluster ("" when it should): its tasks can only run one
    after the other, or too little work to gain back the cluster's start-up (see :mod:`.scheduling`)."""
    from .scheduling import estimate

    if max_parallel(tasks) < 2:
        # one chain of dependent tasks: workers could only take turns, and the cluster's start-up is lost
        return "ran in this process: no two tasks of the plan can run at the same time"
    predicted = estimate(experiment, tasks, workers or default_workers(tasks, threads), threads)
    if predicted is not None and not predicted.cluster_pays:
        return f"ran in this process: {predicted.describe()}"
    return ""


def default_workers(tasks: list[Task], threads: int) -> int:
    """One worker per GPU when the study trains on CUDA, else one per ``threads`` cores."""
    on_gpu = any(d.startswith("cuda") for d in devices(tasks))
    if on_gpu and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // threads)


def _dashboard() -> dict:
    """The LocalCluster's dashboard: off unless ``PRUNELAB_DASHBOARD`` gives its address (``:8787``).
    Even without a dashboard Dask's scheduler serves HTTP (its health checks), by default on port
    8787, and warns that the port is in use where another cluster runs; it listens on a free port
    of this machine instead."""
    address = os.environ.get("PRUNELAB_DASHBOARD")
    if address:
        return {"dashboard_address": address}
    return {"dashboard_address": None, "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}


def missing_after_run(store: Store, results: list[dict]) -> list[str]:
    """States the workers reported stored that this process cannot find (a store not shared with them)."""
    return [r["hash"] for r in results if r["status"] in ("done", "reused") and not r.get("probe")
            and not store.manifest_path(r["hash"]).exists()]
