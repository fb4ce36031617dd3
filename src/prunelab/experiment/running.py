"""Computing one state or one probe in a store, the same for every executor.

A state is computed under its file lock: a second process that needs the same state waits, then
finds it done and reuses it. A recipe that raises is recorded as a failed state (message and
traceback), not raised: the other branches go on. Every manifest records the environment it was
computed in.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import traceback
from functools import lru_cache

import torch

from .. import progress
from ..files import disk_full
from .context import RunContext, StateTask, _cache_put, _load
from .hashing import state_seed
from .publishing import PublishError
from .store import Store, StoreError, state_refs
from .taskgraph import ProbeTask


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


def blocked_reason(st: StateTask, blocked: dict) -> str | None:
    parent = st.identity["parent"]
    for dep in ([parent] if parent else []) + state_refs(st.identity["params"]):
        if dep in blocked:
            what = "failed" if blocked[dep]["status"] == "failed" else "was skipped"
            return f"depends on {dep[:10]}, which {what}"
    return None


def manifest_base(st: StateTask) -> dict:
    return {"hash": st.hash, "parent": st.identity["parent"], "depth": st.depth,
            "recipe": {"type": st.identity["recipe"], "version": st.identity["version"], "params": st.identity["params"],
                       "label": st.recipe.describe()},
            "tags": sorted(st.tags), "seed": state_seed(st.hash), "torch_threads": torch.get_num_threads(),
            "environment": environment()}


def reuse(store: Store, st: StateTask) -> dict | None:
    """The result for a state already done (its tags completed), or None. Call under its lock."""
    manifest = store.manifest(st.hash)
    if manifest is not None and manifest.get("status") == "done":
        if set(st.tags) - set(manifest.get("tags", [])):
            store.add_tags(st.hash, set(st.tags), locked=True)
        return {"hash": st.hash, "status": "reused"}
    return None


def run_state(store: Store, st: StateTask, label: str | None = None) -> dict:
    """Compute one state (``label``: what it is, the name of its progress bars)."""
    with store.lock(st.hash):
        reused = reuse(store, st)
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
            return record(store, st, started, t0, exc, traceback.format_exc())
        return record(store, st, started, t0, snap)


def record(store: Store, st: StateTask, started: float, t0: float, outcome, trace: str = "",
           seconds: float | None = None) -> dict:
    """Write a computed state, or the failure ``outcome`` (an exception) it ended in."""
    base = manifest_base(st)
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


def probe_present(store: Store, state_hash: str, probe_hash: str) -> bool:
    """Whether a probe's result is stored and sound (a damaged one is measured again and replaced)."""
    try:
        return store.probe(state_hash, probe_hash) is not None
    except StoreError:
        return False


def run_probe(store: Store, pt: ProbeTask) -> dict:
    if probe_present(store, pt.state, pt.hash):
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

