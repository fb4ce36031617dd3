"""What a run shows while it runs: each task's results as they come, the ETA weighed by training
steps, and the bars of running trainings named by what they compute (``"ticket r3 s1"``).

An executor reports through :class:`RunProgress`: ``finished(results)`` once per task,
``remote(message)`` for a bar report from a worker (when ``shows_bars``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import progress
from .taskgraph import Task

if TYPE_CHECKING:
    from .tree import Experiment


class RunProgress:
    """The results of a run so far, and its display: what an executor reports to."""

    def __init__(self, experiment: "Experiment", tasks: list[Task], how: str | None) -> None:
        self.display = _display(experiment, tasks, sum(len(t.states) + len(t.probes) for t in tasks), how)
        self.results: list[dict] = []

    @property
    def shows_bars(self) -> bool:
        """Whether the bars of trainings are worth sending here (the display is not quiet)."""
        return self.display.shows_bars

    def finished(self, results: list[dict]) -> None:
        """A task's results (each a dict with the ``hash`` and ``status`` of a state or probe)."""
        results = list(results)
        self.results.extend(results)
        self.display.finished(results, self.display.work_of(results))

    def remote(self, message: dict) -> None:
        """A bar report from a worker (``progress.reporting_to``'s messages)."""
        self.display.remote(message)

    def __enter__(self) -> "RunProgress":
        self.display.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.display.__exit__(*exc)


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
            label = point_label(point)
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


def point_label(point: dict) -> str:
    branch, rnd, seed = point.get("branch"), point.get("round"), point.get("seed")
    text = f"{branch}" + (f" r{rnd}" if rnd else "") + (f" s{seed}" if seed is not None else "")
    return text + (f" ({point['config']})" if point.get("config") else "")


