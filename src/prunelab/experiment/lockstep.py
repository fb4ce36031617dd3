"""Vectorised trainings in lockstep: independent chains whose trainings share passes.

Planning merges chains holding vectorised trainings (``TrainConfig.vectorize = W``), W chains a
task, at one depth of the task graph (:func:`merge_lanes`); a worker runs the chains of such a task
side by side (:func:`run_lockstep`): each runs on its own until its next state is a vectorised
training, then the trainings that share a group key run as one pass (:func:`run_group`). A member
computed in a group has the bits it would have computed alone.
"""

from __future__ import annotations

import time
import traceback
from contextlib import ExitStack

from .. import progress
from .context import RunContext, StateTask, _load
from .recipes import Recipe
from .running import blocked_reason, record, reuse, run_state
from .store import Store
from .taskgraph import Task, task_levels


def groupable(recipe: Recipe) -> bool:
    config = getattr(recipe, "config", None)
    return bool(getattr(config, "vectorize", 0)) and hasattr(recipe, "run_group")


def merge_lanes(tasks: list[Task]) -> list[Task]:
    """Merge independent chains holding vectorised trainings, W chains a task, so their trainings
    can share passes. Chains merge only at one depth of the task graph (no path joins them)."""
    width = {}
    for i, t in enumerate(tasks):
        w = max((st.recipe.config.vectorize for st in t.states if groupable(st.recipe)), default=0)
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


def run_lockstep(store: Store, chains: list[list[StateTask]], blocked: dict,
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
                reason = blocked_reason(st, blocked)
                if reason:
                    settle(st, {"hash": st.hash, "status": "skipped", "reason": reason})
                elif groupable(st.recipe):
                    heads.append((c, st))
                    break
                else:
                    settle(st, run_state(store, st, labels.get(st.hash)))
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
                settle(st, run_state(store, st, labels.get(st.hash)))
                continue
            groups.setdefault(key, []).append((st, parent))
        for members in groups.values():
            width = members[0][0].recipe.config.vectorize
            for lo in range(0, len(members), width):
                for st, result in run_group(store, members[lo : lo + width], labels):
                    settle(st, result)


def run_group(store: Store, members: list[tuple[StateTask, "object"]],
              labels: dict[str, str] | None = None) -> list[tuple[StateTask, dict]]:
    with ExitStack() as locks:
        for st, _ in sorted(members, key=lambda m: m[0].hash):  # one order everywhere: no deadlock
            locks.enter_context(store.lock(st.hash))
        out, todo = [], []
        for st, parent in members:
            reused = reuse(store, st)
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
            out.append((st, record(store, st, started, t0, snap, trace, seconds=share)))
        return out


def group_label(labels: list[str | None]) -> str | None:
    """What a group of states trained together is: ``"ticket r3 s0 +3"``."""
    named = [label for label in labels if label]
    if not named:
        return None
    return named[0] + (f" +{len(labels) - 1}" if len(labels) > 1 else "")
