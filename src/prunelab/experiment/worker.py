"""Running one task wherever it is sent: in the calling process or in a Dask worker.

The function is the same for every executor, so a state's bits do not depend on where it ran:
:func:`execute_task` runs a task at a fixed number of torch threads, its states in chain order (a
state below a failed or skipped one is skipped), lockstep chains side by side (:mod:`.lockstep`),
then the probes on them. It never raises for a recipe's error; each state's result is a dict with
its ``status`` (``done``, ``reused``, ``failed``, ``skipped``).
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch

from .. import progress
from .lockstep import run_lockstep
from .running import blocked_reason, run_probe, run_state
from .store import Store, StoreError
from .taskgraph import Task


def execute_task(store_root: str | Store, task: Task, threads: int, *dependency_results: list[dict]) -> list[dict]:
    """Run one task (a chain of states and the probes on them). Never raises for recipe errors.
    ``store_root``: the store's folder (a worker opens it), or the open store (the serial executor's).

    Runs at exactly ``threads`` torch threads (restored afterwards): CPU
    kernels may sum in a different order at another thread count, so a fixed
    count is what makes serial and Dask runs bitwise identical.
    """
    tune_allocator()
    pin_gpu()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with frozen_heap():
            return _execute_task(store_root, task, *dependency_results)
    finally:
        torch.set_num_threads(previous)


def _execute_task(store_root: str | Store, task: Task, *dependency_results: list[dict]) -> list[dict]:
    from ..registry import trust

    trust(*task.trusted)  # a worker process trusts what the process that planned the run trusts
    blocked = {r["hash"]: r for results in dependency_results for r in results if r["status"] in ("failed", "skipped")}
    in_process = isinstance(store_root, Store)  # the serial executor: bars join the run's display here
    if not in_process:
        check_shared_store(store_root, task.run_token)
    store = store_root if in_process else Store(store_root, create=False)
    # the store's lock, shared: gc and repair wait until no task writes (see Store.writing)
    with store.writing(), store.deferred_publishing(), \
            nullcontext() if in_process else progress.reporting_to(worker_sink(task.progress_topic)):
        return execute_states(store, task, blocked)  # results are returned once the states are in place


def execute_states(store: Store, task: Task, blocked: dict) -> list[dict]:
    results: list[dict] = []
    if task.lanes:
        results = run_lockstep(store, task.chains(), blocked, task.labels)
    for st in () if task.lanes else task.states:
        # a state of this chain that failed or was skipped blocks everything below it, like a failed dependency
        reason = blocked_reason(st, blocked)
        if reason:
            results.append({"hash": st.hash, "status": "skipped", "reason": reason})
            blocked[st.hash] = results[-1]
            continue
        results.append(run_state(store, st, task.labels.get(st.hash)))
        if results[-1]["status"] == "failed":
            blocked[st.hash] = results[-1]
    done_here = {r["hash"] for r in results if r["status"] in ("done", "reused")}
    for pt in task.probes:
        if pt.state in blocked or (pt.state in {s.hash for s in task.states} and pt.state not in done_here):
            results.append({"hash": pt.hash, "status": "skipped", "probe": True, "reason": f"state {pt.state[:10]} unavailable"})
            continue
        results.append(run_probe(store, pt))
    return results


def worker_sink(topic: str):
    """Where a Dask worker's bars report: Dask events under ``topic``, which the run's client passes
    to its display; None (the bars say nothing) without a topic or outside a worker."""
    if not topic:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return lambda message: worker.log_event(topic, message)


def check_shared_store(store_root: str, token: str) -> None:
    """A worker writes where the client reads only if both see one file system: without one, a worker
    would fill a store of its own at the same path and the run would report states it cannot show."""
    if token and not (Path(store_root) / "locks" / f"run-{token}").is_file():
        raise StoreError(f"{store_root}: this worker ({socket.gethostname()}) sees a different store at this path "
                         "than the process that started the run; every worker must see the store on a shared file "
                         "system at the same path (docs/cluster.md)")


_FROZEN = [0]  # how deep frozen_heap is nested in this process


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive when a run starts out of Python's full garbage collections while it
    lasts (``gc.freeze``; ``gc.unfreeze`` when it ends).

    A process that imported torch holds hundreds of thousands of objects, and each full collection
    walks them all, a cost every state of a study of short trainings pays (docs/architecture.md).
    What the run creates is collected as usual; what was alive before it is still freed, by
    reference counting or by the first full collection after the run.
    """
    import gc

    _FROZEN[0] += 1
    if _FROZEN[0] == 1:
        gc.freeze()
    try:
        yield
    finally:
        _FROZEN[0] -= 1
        if _FROZEN[0] == 0:
            gc.unfreeze()


_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Keep glibc's malloc from returning every activation buffer to the kernel.

    In a Dask worker's task thread glibc serves each allocation above 128 KB
    with a fresh mmap (a constant stream of mmap/munmap pairs while training a
    small conv net), and the kernel zero-fills every page again: a study of
    calo_densenet spent more system than user time and ran far slower than
    with these thresholds (docs/benchmarks/allocator.md). Freed memory up to
    128 MB stays in the process instead. Once per process; a no-op where glibc is not the C library.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: allocations below 64 MB come from the heap
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: keep up to 128 MB of freed heap
    except (OSError, AttributeError):
        pass


def pin_gpu() -> None:
    """One GPU per Dask worker: a LocalCluster's worker ``i`` uses device ``i mod count``.

    Only where CUDA is already initialised or asked for is torch.cuda touched; a CPU run never
    creates a CUDA context.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ and "," not in os.environ["CUDA_VISIBLE_DEVICES"]:
        return  # the launcher pinned this process already (dask-cuda, a job scheduler)
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return  # not in a Dask worker
    if isinstance(name, int) and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(name % torch.cuda.device_count())
