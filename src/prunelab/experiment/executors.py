"""Planning and running an experiment: one code path for serial and Dask.

The plan is the set of states (and probes) not yet in the store, in
dependency order. Linear chains — a state whose parent is pending and has no
other pending child — are fused into one task, so a worker never reloads what
it just produced. A task runs in the calling process (``serial``), on a Dask
``LocalCluster`` (``local``), or on any Dask cluster (``tcp://host:port``);
the function that runs a task is the same in all three.

Inside a task each state is computed under its file lock: a second process
that needs the same state waits, then finds it done and reuses it. A recipe
that raises is recorded as a failed state (message and traceback); the states
below it are skipped, every other branch completes, and a rerun retries what
failed or never ran.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Iterator

import torch

from ..errors import PrunelabError
from .. import progress
from .hashing import state_seed
from .context import (_DATASETS, _SNAPSHOTS, SNAPSHOT_CACHE_BYTES, RunContext, StateTask,  # noqa: F401 (re-exported)
                      _cache_put, _load, dataset_cache)
from .recipes import Init, Recipe
from ..files import disk_full
from .publishing import PublishError
from .store import Store, StoreError, state_refs

if TYPE_CHECKING:
    from .tree import Experiment, State

@lru_cache(maxsize=1)
def environment() -> dict:
    """Provenance recorded in every manifest."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    env = {"python": platform.python_version(), "torch": torch.__version__, "prunelab": ver("prunelab"),
           "platform": platform.platform()}
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    folder = os.path.dirname(os.path.abspath(main)) if main else os.getcwd()
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain"], capture_output=True, text=True, timeout=5)
            env["git_commit"] = commit.stdout.strip()
            env["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# ---------------------------------------------------------------- what a worker runs


@dataclass(frozen=True)
class ProbeTask:
    hash: str
    state: str
    recipe: Recipe
    identity: dict


@dataclass
class Task:
    states: list[StateTask] = field(default_factory=list)
    probes: list[ProbeTask] = field(default_factory=list)
    deps: list[int] = field(default_factory=list)  # indices of tasks this one needs
    trusted: tuple[str, ...] = ()  # modules the planning process trusts for import paths (registry.trust)
    # Several independent chains run in lockstep (their vectorised trainings share passes):
    # the lengths of the chains that ``states`` concatenates. Empty: ``states`` is one chain.
    lanes: tuple[int, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # state hash → what it is, for progress ("ticket r3 s1")
    progress_topic: str = ""  # a Dask worker reports its bars under this event topic ("": it says nothing)
    run_token: str = ""  # a Dask run's token file in the store's locks/: a worker that cannot see it has another store

    def chains(self) -> list[list[StateTask]]:
        if not self.lanes:
            return [self.states]
        out, at = [], 0
        for n in self.lanes:
            out.append(self.states[at : at + n])
            at += n
        return out

    @property
    def key(self) -> str:
        first = self.states[0].hash if self.states else self.probes[0].hash
        return first[:16]


_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Keep glibc's malloc from returning every activation buffer to the kernel.

    In a Dask worker's task thread glibc served each allocation above 128 KB
    with a fresh mmap (about 1,600 mmap/munmap pairs a second while training a
    small conv net), and the kernel zero-filled every page again: a study of
    calo_densenet spent more system than user time (120 s vs 114 s) and ran 2x
    slower than with these thresholds. Freed memory up to 128 MB stays in the
    process instead. Once per process; a no-op where glibc is not the C library.
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


def _pin_gpu() -> None:
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


def execute_task(store_root: str | Store, task: Task, threads: int, *dependency_results: list[dict]) -> list[dict]:
    """Run one task (a chain of states and the probes on them). Never raises for recipe errors.
    ``store_root``: the store's folder (a worker opens it), or the open store (the serial executor's).

    Runs at exactly ``threads`` torch threads (restored afterwards): CPU
    kernels may sum in a different order at another thread count, so a fixed
    count is what makes serial and Dask runs bitwise identical.
    """
    tune_allocator()
    _pin_gpu()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with frozen_heap():
            return _execute_task(store_root, task, *dependency_results)
    finally:
        torch.set_num_threads(previous)


_FROZEN = [0]  # how deep frozen_heap is nested in this process


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive when a run starts out of Python's full garbage collections while it
    lasts (``gc.freeze``; ``gc.unfreeze`` when it ends).

    A process that imported torch holds ~330,000 objects, and each full collection walked them
    all: 1.0 ms a state of a 305-state study of short trainings, 0.1 ms with them frozen. What
    the run creates is collected as before; what was alive before it is still freed, by
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


def _execute_task(store_root: str | Store, task: Task, *dependency_results: list[dict]) -> list[dict]:
    from ..registry import trust

    trust(*task.trusted)  # a worker process trusts what the process that planned the run trusts
    blocked = {r["hash"]: r for results in dependency_results for r in results if r["status"] in ("failed", "skipped")}
    in_process = isinstance(store_root, Store)  # the serial executor: bars join the run's display here
    if not in_process:
        _check_shared_store(store_root, task.run_token)
    store = store_root if in_process else Store(store_root, create=False)
    # the store's lock, shared: gc and repair wait until no task writes (see Store.writing)
    with store.writing(), store.deferred_publishing(), \
            nullcontext() if in_process else progress.reporting_to(_worker_sink(task.progress_topic)):
        return _execute_states(store, task, blocked)  # results are returned once the states are in place


def _worker_sink(topic: str):
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


def _execute_states(store: Store, task: Task, blocked: dict) -> list[dict]:
    results: list[dict] = []
    if task.lanes:
        results = _run_lockstep(store, task.chains(), blocked, task.labels)
    for st in () if task.lanes else task.states:
        # a state of this chain that failed or was skipped blocks everything below it, like a failed dependency
        reason = _blocked_reason(st, blocked)
        if reason:
            results.append({"hash": st.hash, "status": "skipped", "reason": reason})
            blocked[st.hash] = results[-1]
            continue
        results.append(_run_state(store, st, task.labels.get(st.hash)))
        if results[-1]["status"] == "failed":
            blocked[st.hash] = results[-1]
    done_here = {r["hash"] for r in results if r["status"] in ("done", "reused")}
    for pt in task.probes:
        if pt.state in blocked or (pt.state in {s.hash for s in task.states} and pt.state not in done_here):
            results.append({"hash": pt.hash, "status": "skipped", "probe": True, "reason": f"state {pt.state[:10]} unavailable"})
            continue
        results.append(_run_probe(store, pt))
    return results


def _blocked_reason(st: StateTask, blocked: dict) -> str | None:
    parent = st.identity["parent"]
    for dep in ([parent] if parent else []) + state_refs(st.identity["params"]):
        if dep in blocked:
            what = "failed" if blocked[dep]["status"] == "failed" else "was skipped"
            return f"depends on {dep[:10]}, which {what}"
    return None


def _manifest_base(st: StateTask) -> dict:
    return {"hash": st.hash, "parent": st.identity["parent"], "depth": st.depth,
            "recipe": {"type": st.identity["recipe"], "version": st.identity["version"], "params": st.identity["params"],
                       "label": st.recipe.describe()},
            "tags": sorted(st.tags), "seed": state_seed(st.hash), "torch_threads": torch.get_num_threads(),
            "environment": environment()}


def _reuse(store: Store, st: StateTask) -> dict | None:
    """The result for a state already done (its tags completed), or None. Call under its lock."""
    manifest = store.manifest(st.hash)
    if manifest is not None and manifest.get("status") == "done":
        if set(st.tags) - set(manifest.get("tags", [])):
            store.add_tags(st.hash, set(st.tags), locked=True)
        return {"hash": st.hash, "status": "reused"}
    return None


def _run_state(store: Store, st: StateTask, label: str | None = None) -> dict:
    """Compute one state (``label``: what it is, the name of its progress bars)."""
    with store.lock(st.hash):
        reused = _reuse(store, st)
        if reused is not None:
            return reused
        started, t0 = time.time(), time.perf_counter()
        try:
            parent = None if st.identity["parent"] is None else _load(store, st.identity["parent"])
            with progress.running(label):
                snap = st.recipe.run(RunContext(store, st), parent)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded, not raised: the other branches go on
            return _record(store, st, started, t0, exc, traceback.format_exc())
        return _record(store, st, started, t0, snap)


def _record(store: Store, st: StateTask, started: float, t0: float, outcome, trace: str = "",
            seconds: float | None = None) -> dict:
    """Write a computed state, or the failure ``outcome`` (an exception) it ended in."""
    base = _manifest_base(st)
    elapsed = time.perf_counter() - t0 if seconds is None else seconds
    base["timings"] = {"started": started, "seconds": elapsed, "finished": time.time()}
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        store.write_state(base, outcome)
        _cache_put(store, st.hash, outcome)
        return {"hash": st.hash, "status": "done", "seconds": elapsed}
    except (KeyboardInterrupt, PublishError):
        raise
    except Exception as exc:
        if disk_full(exc):  # nothing more can be written: stop the run, keep what is finished
            raise StoreError(f"{store.root}: disk full while writing state {st.hash[:10]} ({exc}); free space "
                             "and rerun — finished states are kept and not recomputed") from None
        message = f"{type(exc).__name__}: {exc}"
        store.write_failure(base, message, trace or traceback.format_exc())
        return {"hash": st.hash, "status": "failed", "error": message}


def group_label(labels: list[str | None]) -> str | None:
    """What a group of states trained together is: ``"ticket r3 s0 +3"``."""
    named = [label for label in labels if label]
    if not named:
        return None
    return named[0] + (f" +{len(labels) - 1}" if len(labels) > 1 else "")


def state_labels(experiment: "Experiment", hashes) -> dict[str, str]:
    """What each of ``hashes`` is, for its progress bars: the branch, round and seed of the trained
    point of a study it leads to (``"ticket r3 s1"``; ``"dense s0"``; a swept configuration's label
    after it), read from the study records among the experiment's documents, so that a prune, a
    rewind and the training after them carry the name of the point they compute. A state no point
    leads to is named by its tags (``"instability copy from 100 s0"``), else not at all."""
    wanted = set(hashes)
    states = experiment.states
    labels: dict[str, str] = {}
    for document in experiment.documents.values():
        points = document.get("points") if isinstance(document, dict) else None
        for point in points if isinstance(points, list) else ():
            node = states.get(point.get("hash")) if isinstance(point, dict) else None
            if node is None:
                continue
            label = _point_label(point)
            while node is not None and node.hash not in labels:  # up to a state another point named
                labels[node.hash] = label
                node = node.parent
    out = {h: labels[h] for h in wanted if h in labels}
    for h in wanted - out.keys():
        state = states.get(h)
        tags = sorted(t for t in state.tags if not t.startswith("config:")) if state is not None else []
        seeds = [t for t in tags if t.startswith("seed=")]
        named = [t for t in tags if t not in seeds] + [f"s{t[5:]}" for t in seeds]
        if named:
            out[h] = " ".join(named)
    return out


def _point_label(point: dict) -> str:
    branch, rnd, seed = point.get("branch"), point.get("round"), point.get("seed")
    text = f"{branch}" + (f" r{rnd}" if rnd else "") + (f" s{seed}" if seed is not None else "")
    return text + (f" ({point['config']})" if point.get("config") else "")


# ---------------------------------------------------------------- vectorised trainings in lockstep


def _groupable(recipe: Recipe) -> bool:
    config = getattr(recipe, "config", None)
    return bool(getattr(config, "vectorize", 0)) and hasattr(recipe, "run_group")


def _run_lockstep(store: Store, chains: list[list[StateTask]], blocked: dict,
                  labels: dict[str, str] | None = None) -> list[dict]:
    """Run independent chains side by side: each runs on its own until its next state is a
    vectorised training; then the trainings that share a group key run as one pass."""
    results: list[dict] = []
    at = [0] * len(chains)
    labels = labels or {}

    def settle(st: StateTask, result: dict) -> None:
        results.append(result)
        if result["status"] in ("failed", "skipped"):
            blocked[st.hash] = result

    while True:
        heads: list[tuple[int, StateTask]] = []
        for c, chain in enumerate(chains):
            while at[c] < len(chain):
                st = chain[at[c]]
                reason = _blocked_reason(st, blocked)
                if reason:
                    settle(st, {"hash": st.hash, "status": "skipped", "reason": reason})
                elif _groupable(st.recipe):
                    heads.append((c, st))
                    break
                else:
                    settle(st, _run_state(store, st, labels.get(st.hash)))
                at[c] += 1
        if not heads:
            return results
        groups: dict = {}
        for c, st in heads:
            at[c] += 1
            try:
                parent = _load(store, st.identity["parent"])
                key = st.recipe.group_key(parent)
            except KeyboardInterrupt:
                raise
            except Exception:  # loading failed: the state runs (and fails) on its own, with its message
                settle(st, _run_state(store, st, labels.get(st.hash)))
                continue
            groups.setdefault(key, []).append((st, parent))
        for members in groups.values():
            width = members[0][0].recipe.config.vectorize
            for lo in range(0, len(members), width):
                for st, result in _run_group(store, members[lo : lo + width], labels):
                    settle(st, result)


def _run_group(store: Store, members: list[tuple[StateTask, "object"]],
               labels: dict[str, str] | None = None) -> list[tuple[StateTask, dict]]:
    from contextlib import ExitStack

    with ExitStack() as locks:
        for st, _ in sorted(members, key=lambda m: m[0].hash):  # one order everywhere: no deadlock
            locks.enter_context(store.lock(st.hash))
        out, todo = [], []
        for st, parent in members:
            reused = _reuse(store, st)
            if reused is not None:
                out.append((st, reused))
            else:
                todo.append((st, parent))
        if not todo:
            return out
        started, t0 = time.time(), time.perf_counter()
        recipe = todo[0][0].recipe
        try:
            with progress.running(group_label([(labels or {}).get(st.hash) for st, _ in todo])):
                snaps = recipe.run_group([RunContext(store, st) for st, _ in todo], [p for _, p in todo])
            trace = ""
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the whole pass failed: every member records why
            snaps, trace = [exc] * len(todo), traceback.format_exc()
        share = (time.perf_counter() - t0) / len(todo)
        for (st, _), snap in zip(todo, snaps):
            out.append((st, _record(store, st, started, t0, snap, trace, seconds=share)))
        return out


def _probe_present(store: Store, state_hash: str, probe_hash: str) -> bool:
    """Whether a probe's result is stored and sound (a damaged one is measured again and replaced)."""
    try:
        return store.probe(state_hash, probe_hash) is not None
    except StoreError:
        return False


def _run_probe(store: Store, pt: ProbeTask) -> dict:
    if _probe_present(store, pt.state, pt.hash):
        return {"hash": pt.hash, "status": "reused", "probe": True}
    t0 = time.perf_counter()
    try:
        result = pt.recipe.run(RunContext(store, StateTask(pt.state, {}, pt.recipe, (), 0, 0)), _load(store, pt.state))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return {"hash": pt.hash, "status": "failed", "probe": True, "error": f"{type(exc).__name__}: {exc}"}
    store.write_probe(pt.state, pt.hash, {"probe": pt.identity, "label": pt.recipe.describe(), "result": result,
                                          "seconds": time.perf_counter() - t0})
    return {"hash": pt.hash, "status": "done", "probe": True}


# ---------------------------------------------------------------- planning


@dataclass
class RunSummary:
    total: int
    computed: list[str]
    reused: list[str]
    failed: dict[str, str]
    skipped: dict[str, str]
    seconds: float
    tasks: int
    note: str = ""  # e.g. why a local cluster was not started

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    def __str__(self) -> str:
        text = (f"{self.total} states/probes: {len(self.computed)} computed, {len(self.reused)} already stored, "
                f"{len(self.failed)} failed, {len(self.skipped)} skipped ({self.seconds:.1f} s, {self.tasks} tasks)")
        if self.note:
            text += f"\n  {self.note}"
        for h, err in self.failed.items():
            text += f"\n  failed  {h[:12]}: {err}"
        for h, why in self.skipped.items():
            text += f"\n  skipped {h[:12]}: {why}"
        return text


def _topological(states: list["State"], skip: set[str] | dict = frozenset()) -> list["State"]:
    """``states`` and their dependencies in dependency order, leaving out the hashes in ``skip``."""
    order, seen = [], set(skip)

    def visit(s):
        stack = [(s, False)]
        while stack:
            node, expanded = stack.pop()
            if node.hash in seen:
                continue
            if expanded:
                seen.add(node.hash)
                order.append(node)
                continue
            stack.append((node, True))
            for dep in reversed(node.dependencies()):
                if dep.hash not in seen:
                    stack.append((dep, False))

    for s in sorted(states, key=lambda s: s.depth):
        visit(s)
    return order


def _root_seed(state: "State") -> int:
    root = state.lineage()[0]
    return root.recipe.seed if isinstance(root.recipe, Init) else 0


def _done_states(store: Store, order: list["State"]) -> dict[str, str | None]:
    """The states of ``order`` that are done → their stored tags as JSON (None: not looked up). A large
    plan reads the store's listing (one directory scan and the index; manifests opened only where
    changed since indexed) instead of every manifest."""
    if len(order) <= 64:
        return {s.hash: None for s in order if store.is_done(s.hash)}
    damaged: dict = {}
    tags = store.done_tags(damaged)
    if tags is None:  # the index cannot answer: the full listing
        tags = {h: json.dumps(r["tags"]) for h, r in store.listing(damaged).items() if r["status"] == "done"}
    wanted = {s.hash for s in order}
    for path, why in damaged.items():  # as is_done: a damaged manifest of this plan stops it
        if path.stem in wanted:
            raise StoreError(f"{path}: damaged manifest: {why}; `prunelab verify --repair` moves it aside "
                             "and the next run recomputes the state")
    return {h: tags[h] for h in wanted if h in tags}


def _has_tags(stored: str | None, tags: set[str]) -> bool:
    """Do the stored tags (JSON) already include ``tags``? (Compared as text first: no parsing for
    the usual rerun, where they are the same.)"""
    if stored is None:
        return False
    return stored == json.dumps(sorted(tags)) or set(tags) <= set(json.loads(stored))


def plan(experiment: "Experiment", fuse: bool = True) -> tuple[list[Task], int, list[str]]:
    """(tasks in dependency order, number of items, hashes already done)."""
    store = experiment.store
    states = list(experiment.states.values())
    done = _done_states(store, states)
    for s in states:  # labels added after the fact still reach the store
        if s.hash in done and s.tags and not _has_tags(done[s.hash], s.tags):
            store.add_tags(s.hash, s.tags)
    pending = _topological([s for s in states if s.hash not in done], skip=done)  # a no-op rerun sorts nothing
    pending_set = {s.hash for s in pending}
    pending_children: dict[str, int] = {}
    for s in pending:
        if s.parent is not None:
            pending_children[s.parent.hash] = pending_children.get(s.parent.hash, 0) + 1
    probes = [p for p in experiment.probes.values() if not _probe_present(store, p.state.hash, p.hash)]
    probes_on = {}
    for p in probes:
        probes_on.setdefault(p.state.hash, []).append(p)

    tasks: list[Task] = []
    task_of: dict[str, int] = {}
    for s in pending:
        st = StateTask(s.hash, s.identity, s.recipe.detached(), tuple(sorted(s.tags)), s.depth, _root_seed(s))
        parent_pending = s.parent is not None and s.parent.hash in pending_set
        ref_hashes = [r.hash for r in s.recipe.refs().values()]
        can_fuse = (
            fuse and parent_pending and pending_children.get(s.parent.hash, 0) == 1
            and all(r not in pending_set or task_of.get(r) == task_of[s.parent.hash] for r in ref_hashes)
        )
        if can_fuse:
            index = task_of[s.parent.hash]
            tasks[index].states.append(st)
        else:
            index = len(tasks)
            deps = [s.parent.hash] if parent_pending else []
            deps += [r for r in ref_hashes if r in pending_set]
            tasks.append(Task(states=[st], deps=sorted({task_of[d] for d in deps})))
        task_of[s.hash] = index
        for p in probes_on.pop(s.hash, []):
            tasks[index].probes.append(ProbeTask(p.hash, s.hash, p.recipe.detached(), {"state": s.hash, "probe": p.recipe.type_name, "version": p.recipe.version, "params": p.recipe.params()}))
    for state_hash, plist in probes_on.items():  # probes on states already done
        tasks.append(Task(probes=[ProbeTask(p.hash, state_hash, p.recipe.detached(), {"state": state_hash, "probe": p.recipe.type_name, "version": p.recipe.version, "params": p.recipe.params()}) for p in plist]))
    tasks = _lockstep(tasks)
    from ..registry import trusted_modules

    trusted = trusted_modules()
    for task in tasks:
        task.trusted = trusted
    return tasks, len(states) + len(experiment.probes), sorted(done)


def _lockstep(tasks: list[Task]) -> list[Task]:
    """Merge independent chains holding vectorised trainings, W chains a task, so their trainings
    can share passes. Chains merge only at one depth of the task graph (no path joins them)."""
    width = {}
    for i, t in enumerate(tasks):
        w = max((st.recipe.config.vectorize for st in t.states if _groupable(st.recipe)), default=0)
        if w:
            width[i] = w
    if not width:
        return tasks
    level = task_levels(tasks)
    buckets: dict[tuple[int, int], list[int]] = {}
    for i in width:
        buckets.setdefault((level[i], width[i]), []).append(i)
    merged_into: dict[int, int] = {}  # task index → index of the first task of its merge
    members: dict[int, list[int]] = {}
    for (_, w), indices in buckets.items():
        for lo in range(0, len(indices), w):
            chunk = indices[lo : lo + w]
            members[chunk[0]] = chunk
            for i in chunk:
                merged_into[i] = chunk[0]
    order = sorted((i for i in range(len(tasks)) if merged_into.get(i, i) == i), key=lambda i: (level[i], i))
    new_index = {old: new for new, old in enumerate(order)}
    out = []
    for old in order:
        group = members.get(old, [old])
        deps = sorted({new_index[merged_into.get(d, d)] for i in group for d in tasks[i].deps})
        if len(group) == 1:
            task = tasks[old]
            out.append(Task(task.states, task.probes, deps, task.trusted))
            continue
        chains = [tasks[i].states for i in group]
        out.append(Task([st for chain in chains for st in chain], [p for i in group for p in tasks[i].probes], deps,
                        tasks[old].trusted, tuple(len(chain) for chain in chains)))
    return out


DEFAULT_THREADS = 1
SCHEDULER_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")


def run_experiment(experiment: "Experiment", *, executor: str = "serial", workers: int | None = None,
                   threads: int | None = None, progress: bool | None = None, fuse: bool = True,
                   fallback: bool = True) -> RunSummary:
    threads = DEFAULT_THREADS if threads is None else threads
    if threads < 1:
        raise PrunelabError(f"threads must be at least 1, got {threads}")
    if workers is not None and workers < 1:
        raise PrunelabError(f"workers must be at least 1, got {workers}")
    if executor not in ("serial", "local") and not executor.startswith(SCHEDULER_SCHEMES):
        raise PrunelabError(f"unknown executor {executor!r} (serial, local, or a scheduler address like "
                            "tcp://host:8786)")
    began = time.perf_counter()
    # planning reads which states are done and a run references them: gc waits until the run ends
    with experiment.store.writing(), frozen_heap():  # planning a large study allocates enough to start full collections
        return _run_planned(experiment, began, executor, workers, threads, progress, fuse, fallback)


def _in_process_reason(experiment: "Experiment", tasks: list[Task], workers: int | None, threads: int) -> str:
    """Why a ``local`` run should not start a cluster ("" when it should): its tasks can only run one
    after the other, or too little work to gain back the cluster's start-up (see :mod:`.scheduling`)."""
    from .scheduling import estimate

    if max_parallel(tasks) < 2:
        # one chain of dependent tasks: workers could only take turns, and a cluster costs ~3 s to start
        return "ran in this process: no two tasks of the plan can run at the same time"
    predicted = estimate(experiment, tasks, workers or _default_workers(tasks, threads), threads)
    if predicted is not None and not predicted.cluster_pays:
        return f"ran in this process: {predicted.describe()}"
    return ""


def _run_planned(experiment: "Experiment", began: float, executor: str, workers: int | None, threads: int,
                 progress: bool | None, fuse: bool, fallback: bool = True) -> RunSummary:
    tasks, total, already = plan(experiment, fuse)
    if executor in ("serial", "local"):
        _check_devices(tasks)
    if tasks and experiment.store.read_only:
        missing = sum(len(t.states) + len(t.probes) for t in tasks)
        raise StoreError(f"{experiment.store.root}: the store is read-only here and {missing} states or probes are "
                         "missing; run where it is writable (finished states are never recomputed)")
    for name, document in experiment.documents.items():
        if not experiment.store.read_only:  # a no-op run on a read-only store records nothing
            experiment.store.write_document(name, document)
    done_probes = [p.hash for p in experiment.probes.values()
                   if _probe_present(experiment.store, p.state.hash, p.hash)]
    n_items = sum(len(t.states) + len(t.probes) for t in tasks)
    results = _Results()
    pending = [st.hash for t in tasks for st in t.states]
    how = "quiet" if progress is False or not tasks else ("live" if progress else None)
    display = _display(experiment, tasks, n_items, how)
    with display, experiment.store.locks_prepared(pending):
        note = ""
        if executor == "local" and tasks and fallback:
            note = _in_process_reason(experiment, tasks, workers, threads)
            executor = "serial" if note else executor
        if executor == "serial" or not tasks:  # nothing to run: no cluster to start
            by_task: list[list[dict]] = []
            # one publisher for the whole run: a task's last state is stored while the next task computes
            with experiment.store.deferred_publishing():
                for task in tasks:
                    out = execute_task(experiment.store, task, threads, *[by_task[d] for d in task.deps])
                    by_task.append(out)
                    results.extend(out)
                    display.finished(out, display.work_of(out))
        else:
            store_root = str(experiment.store.root.resolve())  # what a worker opens
            results = _run_dask(store_root, tasks, executor, workers, threads, display)
            missing = _missing_after_run(experiment.store, results)
            if missing:
                raise StoreError(f"{experiment.store.root}: the workers reported {len(missing)} states stored that are "
                                 f"not here (e.g. {missing[0][:10]}): they wrote to another store at this path. Every "
                                 "worker must see the store on a shared file system at the same path (docs/cluster.md)")
    summary = RunSummary(
        total=total,
        computed=[r["hash"] for r in results if r["status"] == "done"],
        reused=already + done_probes + [r["hash"] for r in results if r["status"] == "reused"],
        failed={r["hash"]: r["error"] for r in results if r["status"] == "failed"},
        skipped={r["hash"]: r["reason"] for r in results if r["status"] == "skipped"},
        seconds=time.perf_counter() - began,
        tasks=len(tasks),
        note=note,
    )
    return summary


class _Results(list):
    """The results so far, with how many failed (counted as they come: a count over all of them
    after every task grew with the study)."""

    failed = 0

    def extend(self, out) -> None:
        out = list(out)
        self.failed += sum(r["status"] == "failed" for r in out)
        super().extend(out)


class _Display(progress.RunDisplay):
    """The run's display, knowing each item's work (training steps) for its ETA."""

    def __init__(self, n_items: int, weights: dict[str, float], how: str | None) -> None:
        from .scheduling import STATE_WORK

        self.weights, self.default = weights, STATE_WORK if weights else 1.0
        total = sum(weights.values()) + self.default * (n_items - len(weights)) if weights else None
        super().__init__(n_items, total, steps=bool(weights), how=how)

    def work_of(self, results: list[dict]) -> float:
        return sum(self.weights.get(r["hash"], self.default) for r in results)


def _display(experiment: "Experiment", tasks: list[Task], n_items: int, how: str | None) -> _Display:
    """The run's progress display; names every pending state for its bars (:func:`state_labels`)."""
    how = progress.mode() if how is None else how
    if how == "quiet":
        return _Display(n_items, {}, how)
    from .scheduling import progress_work

    hashes = [st.hash for t in tasks for st in t.states]
    labels = state_labels(experiment, hashes)
    for task in tasks:
        task.labels = {st.hash: labels[st.hash] for st in task.states if st.hash in labels}
    return _Display(n_items, progress_work(experiment, hashes), how)


def task_levels(tasks: list[Task]) -> list[int]:
    """Each task's depth in the task graph (0: needs no other task); tasks come in dependency order."""
    level: list[int] = []
    for t in tasks:
        level.append(1 + max((level[d] for d in t.deps), default=-1))
    return level


def max_parallel(tasks: list[Task]) -> int:
    """How many tasks could run at once at best: the most tasks at one depth of the task graph."""
    counts: dict[int, int] = {}
    for value in task_levels(tasks):
        counts[value] = counts.get(value, 0) + 1
    return max(counts.values(), default=0)


def _devices(tasks: list[Task]) -> set[str]:
    return {str(getattr(getattr(st.recipe, "config", None), "device", "cpu")) for t in tasks for st in t.states}


def _check_devices(tasks: list[Task]) -> None:
    """Trainings on a device this machine lacks fail before anything runs (a remote cluster's
    workers may have what the planning machine lacks: there each state says so itself)."""
    from ..tasks.training import TrainConfig, training_device

    for device in sorted(_devices(tasks) - {"cpu"}):
        try:
            training_device(TrainConfig(iterations=1, device=device))
        except PrunelabError as exc:
            raise PrunelabError(f"{exc}; nothing was run") from None


def _default_workers(tasks: list[Task], threads: int) -> int:
    """One worker per GPU when the study trains on CUDA, else one per ``threads`` cores."""
    on_gpu = any(d.startswith("cuda") for d in _devices(tasks))
    if on_gpu and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // threads)


def _dashboard() -> dict:
    """The LocalCluster's dashboard: off unless ``PRUNELAB_DASHBOARD`` gives its address (``:8787``).
    Even without a dashboard Dask's scheduler serves HTTP (its health checks), by default on port
    8787, and warned that the port was in use where another cluster ran; it listens on a free port
    of this machine instead."""
    address = os.environ.get("PRUNELAB_DASHBOARD")
    if address:
        return {"dashboard_address": address}
    return {"dashboard_address": None, "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}


def _check_shared_store(store_root: str, token: str) -> None:
    """A worker writes where the client reads only if both see one file system: without one, a worker
    would fill a store of its own at the same path and the run would report states it cannot show."""
    if token and not (Path(store_root) / "locks" / f"run-{token}").is_file():
        raise StoreError(f"{store_root}: this worker ({socket.gethostname()}) sees a different store at this path "
                         "than the process that started the run; every worker must see the store on a shared file "
                         "system at the same path (docs/cluster.md)")


def _missing_after_run(store: Store, results: list[dict]) -> list[str]:
    """States the workers reported stored that this process cannot find (a store not shared with them)."""
    return [r["hash"] for r in results if r["status"] in ("done", "reused") and not r.get("probe")
            and not store.manifest_path(r["hash"]).exists()]


def _run_dask(store_root, tasks, executor, workers, threads, display: progress.RunDisplay) -> list[dict]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise PrunelabError("the 'local' and cluster executors need dask.distributed (pip install 'dask[distributed]')") from exc
    cluster = None
    if executor == "local":
        import dask

        n = workers or _default_workers(tasks, threads)
        # Dask's statistical profiler samples the task thread every 10 ms and
        # takes the GIL each time; training loops are Python-heavy, and with it
        # on, two workers on two cores ran ~35 % slower than two plain processes.
        with dask.config.set({"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                              "distributed.admin.system-monitor.interval": "2s",
                              "distributed.worker.memory.monitor-interval": "1s"}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, silence_logs=logging.ERROR,
                                   worker_dashboard_address=None, **_dashboard())
        client = Client(cluster)
    elif executor.startswith(SCHEDULER_SCHEMES):
        try:
            client = Client(executor, timeout=10)
        except OSError as exc:
            raise PrunelabError(f"cannot reach the Dask scheduler at {executor}: {exc}") from exc
    else:
        raise PrunelabError(f"unknown executor {executor!r} (serial, local, or a scheduler address like tcp://host:8786)")
    token = secrets.token_hex(16)
    token_file = Path(store_root) / "locks" / f"run-{token}"
    token_file.touch()
    topic = ""
    if display.shows_bars:  # the workers' training bars, named by what they run, in this display
        topic = f"prunelab-progress-{os.getpid()}-{time.monotonic_ns()}"
        client.subscribe_topic(topic, lambda event: display.remote(event[1]))
    try:
        futures = []
        for i, task in enumerate(tasks):
            task.progress_topic = topic
            task.run_token = token
            deps = [futures[d] for d in task.deps]
            futures.append(client.submit(execute_task, store_root, task, threads, *deps,
                                         key=f"prunelab-{task.key}-{i}", pure=False, retries=0))
        results = _Results()
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
            display.finished(out, display.work_of(out) if isinstance(display, _Display) else None)
        return results
    finally:
        token_file.unlink(missing_ok=True)
        if topic:
            try:
                client.unsubscribe_topic(topic)
            except (ValueError, OSError):
                pass
        client.close()
        if cluster is not None:
            cluster.close()
