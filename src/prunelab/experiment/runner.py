"""Running an experiment: plan what is missing, run it on an executor, summarise.

One code path for every executor (:mod:`.executors`): the run resolves its executor before
planning (an unknown name fails before anything is written), plans (:mod:`.planning`), records
the experiment's documents, and hands the tasks to the executor with the run's display
(:mod:`.run_display`). A recipe that raises is recorded as a failed state; the states below it are
skipped, every other branch completes, and a rerun retries what failed or never ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PrunelabError
from .executors import Executor, ExecutorContext, make_executor
from .planning import plan
from .run_display import RunProgress
from .running import probe_present
from .store import StoreError
from .worker import frozen_heap

if TYPE_CHECKING:
    from .tree import Experiment

DEFAULT_THREADS = 1


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



def run_experiment(experiment: "Experiment", *, executor: "str | Executor" = "serial", workers: int | None = None,
                   threads: int | None = None, progress: bool | None = None, fuse: bool = True,
                   fallback: bool = True) -> RunSummary:
    threads = DEFAULT_THREADS if threads is None else threads
    if threads < 1:
        raise PrunelabError(f"threads must be at least 1, got {threads}")
    if workers is not None and workers < 1:
        raise PrunelabError(f"workers must be at least 1, got {workers}")
    runner = make_executor(executor)
    began = time.perf_counter()
    try:
        # planning reads which states are done and a run references them: gc waits until the run ends
        with experiment.store.writing(), frozen_heap():  # planning a large study allocates enough to start full collections
            context = ExecutorContext(experiment, threads, workers, fallback)
            return _run_planned(experiment, began, runner, context, progress, fuse)
    finally:
        runner.close()


def _run_planned(experiment: "Experiment", began: float, runner: Executor, context: ExecutorContext,
                 progress: bool | None, fuse: bool) -> RunSummary:
    tasks, total, already = plan(experiment, fuse)
    if tasks and experiment.store.read_only:
        missing = sum(len(t.states) + len(t.probes) for t in tasks)
        raise StoreError(f"{experiment.store.root}: the store is read-only here and {missing} states or probes are "
                         "missing; run where it is writable (finished states are never recomputed)")
    for name, document in experiment.documents.items():
        if not experiment.store.read_only:  # a no-op run on a read-only store records nothing
            experiment.store.write_document(name, document)
    done_probes = [p.hash for p in experiment.probes.values()
                   if probe_present(experiment.store, p.state.hash, p.hash)]
    pending = [st.hash for t in tasks for st in t.states]
    how = "quiet" if progress is False or not tasks else ("live" if progress else None)
    note = ""
    with RunProgress(experiment, tasks, how) as tracker, experiment.store.locks_prepared(pending):
        if tasks:  # nothing to run: no cluster to start
            note = runner.run(tasks, context, tracker) or ""
    results = tracker.results
    return RunSummary(
        total=total,
        computed=[r["hash"] for r in results if r["status"] == "done"],
        reused=already + done_probes + [r["hash"] for r in results if r["status"] == "reused"],
        failed={r["hash"]: r["error"] for r in results if r["status"] == "failed"},
        skipped={r["hash"]: r["reason"] for r in results if r["status"] == "skipped"},
        seconds=time.perf_counter() - began,
        tasks=len(tasks),
        note=note,
    )
