"""What a worker is handed: a task (a chain of states, or chains in lockstep, and the probes on
them), and the task graph's shape (levels, the most tasks that can run at once).

Planning (:mod:`.planning`) makes tasks; an executor (:mod:`.executors`) runs them; a worker
(:mod:`.worker`) computes one. A task is plain data, sent to Dask workers as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import StateTask
from .recipes import Recipe


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



def devices(tasks: list[Task]) -> set[str]:
    """The devices the plan's trainings ask for (``cpu``, ``cuda``, ``cuda:1``)."""
    return {str(getattr(getattr(st.recipe, "config", None), "device", "cpu")) for t in tasks for st in t.states}
