"""Planning a run: the states (and probes) not yet in the store, in dependency order, as tasks.

Linear chains — a state whose parent is pending and has no other pending child — are fused into
one task, so a worker never reloads what it just produced; chains holding vectorised trainings are
then merged W at a time into lockstep tasks (:mod:`.lockstep`). Tasks come in dependency order,
each naming the tasks it needs by index. Planning runs nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .context import StateTask
from .lockstep import merge_lanes
from .recipes import Init
from .running import probe_present
from .store import Store, StoreError
from .taskgraph import ProbeTask, Task

if TYPE_CHECKING:
    from .tree import Experiment, State


def plan(experiment: "Experiment", fuse: bool = True) -> tuple[list[Task], int, list[str]]:
    """(tasks in dependency order, number of items, hashes already done)."""
    store = experiment.store
    states = list(experiment.states.values())
    done = done_states(store, states)
    for s in states:  # labels added after the fact still reach the store
        if s.hash in done and s.tags and not has_tags(done[s.hash], s.tags):
            store.add_tags(s.hash, s.tags)
    pending = dependency_order([s for s in states if s.hash not in done], skip=done)  # a no-op rerun sorts nothing
    pending_set = {s.hash for s in pending}
    pending_children: dict[str, int] = {}
    for s in pending:
        if s.parent is not None:
            pending_children[s.parent.hash] = pending_children.get(s.parent.hash, 0) + 1
    probes = [p for p in experiment.probes.values() if not probe_present(store, p.state.hash, p.hash)]
    probes_on = {}
    for p in probes:
        probes_on.setdefault(p.state.hash, []).append(p)

    tasks: list[Task] = []
    task_of: dict[str, int] = {}
    for s in pending:
        st = StateTask(s.hash, s.identity, s.recipe.detached(), tuple(sorted(s.tags)), s.depth, root_seed(s))
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
            tasks[index].probes.append(_probe_task(p, s.hash))
    for state_hash, plist in probes_on.items():  # probes on states already done
        tasks.append(Task(probes=[_probe_task(p, state_hash) for p in plist]))
    tasks = merge_lanes(tasks)
    from ..registry import trusted_modules

    trusted = trusted_modules()
    for task in tasks:
        task.trusted = trusted
    return tasks, len(states) + len(experiment.probes), sorted(done)


def _probe_task(probe, state_hash: str) -> ProbeTask:
    recipe = probe.recipe
    return ProbeTask(probe.hash, state_hash, recipe.detached(),
                     {"state": state_hash, "probe": recipe.type_name, "version": recipe.version, "params": recipe.params()})


def dependency_order(states: list["State"], skip: set[str] | dict = frozenset()) -> list["State"]:
    """``states`` and their dependencies in dependency order, leaving out the hashes in ``skip``:
    depth first from each state, shallowest first, each state's dependencies before it in the order
    it names them.

    Not ``graphlib.TopologicalSorter``'s order (Kahn's, ready state by ready state): the order
    numbers the tasks, and the tasks' order decides which chains share a lockstep task
    (:func:`.lockstep.merge_lanes`), which their manifests record. With Kahn's order (shallowest
    ready state first) the example studies with ``vectorize = 2`` or ``3`` grouped differently.
    """
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


def root_seed(state: "State") -> int:
    root = state.lineage()[0]
    return root.recipe.seed if isinstance(root.recipe, Init) else 0


def done_states(store: Store, order: list["State"]) -> dict[str, str | None]:
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


def has_tags(stored: str | None, tags: set[str]) -> bool:
    """Do the stored tags (JSON) already include ``tags``? (Compared as text first: no parsing for
    the usual rerun, where they are the same.)"""
    if stored is None:
        return False
    return stored == json.dumps(sorted(tags)) or set(tags) <= set(json.loads(stored))
