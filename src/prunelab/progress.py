"""What a person sees while prunelab works: progress named by what runs, in a terminal or in a log.

A bar is named by what is running, not by the model's class: the executor says which state of a
study it runs (:func:`running`: "ticket r3 s1", the branch, round and seed of the trained point the
state leads to) and :func:`progress_bar` names its bar after it: "ticket r3 s1 · train 400/1000".

How it is shown is chosen per process (:func:`mode`):

- ``live``: stdout is a terminal (and no CI variable is set): rich bars, one for the run (states
  done, ETA) and one per running training, also those that run in Dask workers (they report to
  the run's display through Dask events, see :func:`reporting_to`);
- ``log``: anything else (a file, a pipe, CI): plain lines, one when a state finishes but at most
  one every ``PRUNELAB_PROGRESS_SECONDS`` (30 s), with the states done of the total and an ETA,
  and one every ten times that while a long training runs and nothing finishes;
- ``quiet``: ``PRUNELAB_QUIET`` is set: nothing.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

INTERVAL_SECONDS = 30.0  # the least time between two log lines (PRUNELAB_PROGRESS_SECONDS overrides it)
HEARTBEAT = 10  # while nothing finishes, a log line every HEARTBEAT x the interval (a long training)
FORWARD_SECONDS = 0.5  # a worker's bar reports at most this often

# what the executor runs in this context ("ticket r3 s1"), set by whoever runs a state
_LABEL: ContextVar[str | None] = ContextVar("prunelab_progress_label", default=None)
# the run's display in this process: bars opened while it is shown join it
_DISPLAY: ContextVar["RunDisplay | None"] = ContextVar("prunelab_progress_display", default=None)
# where the bars of a worker process report (a function taking one message), or _MUTE
_SINK: ContextVar["Callable[[dict], None] | None"] = ContextVar("prunelab_progress_sink", default=None)


def _mute(message: dict) -> None:
    pass


_MUTE = _mute  # a worker whose run shows no progress: its bars say nothing


def mode() -> str:
    """``live`` (rich bars), ``log`` (plain lines) or ``quiet``; see the module's docstring."""
    if os.environ.get("PRUNELAB_QUIET"):
        return "quiet"
    if sys.stdout.isatty() and not os.environ.get("CI"):
        return "live"
    return "log"


def interval() -> float:
    """Seconds between two log lines (``PRUNELAB_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("PRUNELAB_PROGRESS_SECONDS", INTERVAL_SECONDS)))
    except ValueError:
        return INTERVAL_SECONDS


@contextmanager
def running(label: str | None) -> Iterator[None]:
    """Bars opened inside are named after ``label`` (what runs: "ticket r3 s1"); None: by their own
    description."""
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


@contextmanager
def reporting_to(sink: "Callable[[dict], None] | None") -> Iterator[None]:
    """Bars opened inside report to ``sink`` (a Dask worker's: to the run's display) instead of
    drawing; ``None``: they say nothing (a worker of a run that shows no progress)."""
    token = _SINK.set(_MUTE if sink is None else sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def bar_name(description: str) -> str:
    """A bar's name: what runs and what it does ("ticket r3 s1 · train"), or ``description`` where
    nothing said what runs."""
    label = _LABEL.get()
    if not label:
        return description
    verb = "train" if description.startswith("training") else description
    return f"{label} · {verb}"


def duration(seconds: float) -> str:
    """``"45s"``, ``"3m05s"``, ``"2h04m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Silent:
    def advance(self, steps: int = 1) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)


_KEYS = itertools.count()


class _Forwarded:
    """A bar in a Dask worker: reports its name and count to the run's display, at most every
    :data:`FORWARD_SECONDS`."""

    def __init__(self, sink, name: str, total: int) -> None:
        self._sink, self._name, self._total, self._done = sink, name, total, 0
        self._key = f"{os.getpid()}-{next(_KEYS)}"
        self._last = 0.0

    def _send(self, end: bool = False) -> None:
        self._last = time.monotonic()
        try:
            self._sink({"key": self._key, "name": self._name, "done": self._done, "total": self._total, "end": end})
        except Exception:  # noqa: BLE001 - progress is never worth failing a state for
            self._sink = _MUTE

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        if time.monotonic() - self._last >= FORWARD_SECONDS:
            self._send()

    def describe(self, text: str) -> None:
        self._name = text
        self._send()


class _LogBar:
    """A bar outside a run, in a log: a line at most every :func:`interval` seconds."""

    def __init__(self, name: str, total: int, write) -> None:
        self._name, self._total, self._done, self._write = name, total, 0, write
        self._began = self._last = time.monotonic()
        self._every = max(1.0, interval())

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        now = time.monotonic()
        if now - self._last >= self._every and self._done < self._total:
            self._last = now
            elapsed = now - self._began
            eta = duration(elapsed * (self._total - self._done) / max(self._done, 1))
            self._write(f"{time.strftime('%H:%M:%S')} {self._name} {self._done}/{self._total}, "
                        f"{duration(elapsed)} elapsed, ETA {eta}")

    def describe(self, text: str) -> None:
        self._name = text


def _print_line(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool | None = None) -> Iterator:
    """A bar of ``total`` steps: ``advance(n)``, ``describe(text)``. Named after what runs
    (:func:`bar_name`); shown in the run's display where one is open in this process, reported to
    it from a Dask worker, drawn with rich on a terminal, written as a line now and then in a log.
    ``enabled``: True draws with rich whatever the output is, False says nothing."""
    name = bar_name(description)
    if enabled is False:
        yield _Silent()
        return
    display = _DISPLAY.get()
    if display is not None:
        with display.bar(name, total) as bar:
            yield bar
        return
    sink = _SINK.get()
    if sink is not None:
        if sink is _MUTE:
            yield _Silent()
            return
        bar = _Forwarded(sink, name, total)
        bar._send()
        try:
            yield bar
        finally:
            bar._send(end=True)
        return
    how = "live" if enabled else mode()
    if how == "log":
        yield _LogBar(name, total, _print_line)
        return
    if how != "live":
        yield _Silent()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield _RichBar(progress, progress.add_task(name, total=total))


# ---------------------------------------------------------------- a run's display


class _DisplayBar:
    """A training bar of this process inside the run's display."""

    def __init__(self, display: "RunDisplay", key: str, name: str, total: int) -> None:
        self._display, self._key, self._name, self._total, self._done = display, key, name, total, 0

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        self._display._bar_update(self._key, self._name, self._done, self._total)

    def describe(self, text: str) -> None:
        self._name = text
        self._display._bar_update(self._key, self._name, self._done, self._total)


class RunDisplay:
    """What a run shows while it runs (see the module's docstring): the states done of ``items``,
    an ETA, and what is running.

    ``work``: each item's expected work (e.g. training steps) summed, and ``steps``: whether its unit
    is a training step, so that running trainings count towards the ETA as they go. The executor
    calls :meth:`finished` as results come in; bars opened in this process while it is shown join
    it (:func:`progress_bar`), and a Dask client passes the workers' bar reports to :meth:`remote`.
    Thread-safe: Dask calls :meth:`remote` from its own thread.
    """

    def __init__(self, items: int, work: float | None = None, *, steps: bool = False, how: str | None = None,
                 write: Callable[[str], None] = _print_line, every: float | None = None) -> None:
        self.items, self.how = items, how or mode()
        self.work = float(work) if work else float(items)
        self.steps = steps and bool(work)
        self.done = self.failed = 0
        self.work_done = 0.0
        self._write = write
        self._every = interval() if every is None else every
        self._lock = threading.RLock()
        self._bars: dict[str, tuple[str, int, int]] = {}  # key → (name, done, total)
        self._began = self._last = time.monotonic()
        self._working: float | None = None  # when the first training reported: the ETA's pace starts there
        self._progress = None
        self._tasks: dict[str, int] = {}  # key → the rich task of a bar (live)
        self._token = None

    @property
    def shows_bars(self) -> bool:
        """Whether the bars of trainings are worth reporting to this display (not when quiet)."""
        return self.how in ("live", "log")

    def __enter__(self) -> "RunDisplay":
        if self.how == "live":
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
                                      TextColumn("{task.fields[count]}", markup=False), TimeRemainingColumn(),
                                      transient=True)
            self._progress.start()
            self._run_task = self._progress.add_task(self._describe(), total=self.work, count=f"0/{self.items}")
        self._token = _DISPLAY.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _DISPLAY.reset(self._token)
        if self._progress is not None:
            self._progress.stop()

    def _describe(self) -> str:
        return "states" + (f" ({self.failed} failed)" if self.failed else "")

    # ------------------------------------------------------------ what the executor reports

    def finished(self, results: list[dict], work: float | None = None) -> None:
        """Items finished (each a result dict with a ``status``), worth ``work`` together (default: one
        each)."""
        with self._lock:
            self.done += len(results)
            self.failed += sum(r.get("status") == "failed" for r in results)
            self.work_done += len(results) if work is None else work
            if self._progress is not None:
                self._progress.update(self._run_task, completed=self.work_done + self._running_work(),
                                      description=self._describe(), count=f"{self.done}/{self.items}")
            elif self.how == "log":
                now = time.monotonic()
                if now - self._last >= self._every and self.done < self.items:
                    self._line(now)

    def remote(self, message: dict) -> None:
        """A bar report from a worker (see :class:`_Forwarded`)."""
        try:
            key, end = str(message["key"]), bool(message.get("end"))
            name, done, total = str(message["name"]), int(message["done"]), int(message["total"])
        except (KeyError, TypeError, ValueError):
            return
        if end:
            self._bar_end(key)
        else:
            self._bar_update(key, name, done, total)

    @contextmanager
    def bar(self, name: str, total: int) -> Iterator[_DisplayBar]:
        key = f"local-{next(_KEYS)}"
        bar = _DisplayBar(self, key, name, total)
        self._bar_update(key, name, 0, total)
        try:
            yield bar
        finally:
            self._bar_end(key)

    # ------------------------------------------------------------ bars

    def _bar_update(self, key: str, name: str, done: int, total: int) -> None:
        with self._lock:
            self._bars[key] = (name, done, total)
            if self._working is None and self.steps:  # a cluster's start-up is not the pace of the work
                self._working = time.monotonic()
            if self._progress is not None:
                task = self._tasks.get(key)
                if task is None:
                    self._tasks[key] = self._progress.add_task(name, total=total, completed=done,
                                                               count=f"{done}/{total}")
                else:
                    self._progress.update(task, description=name, completed=done, count=f"{done}/{total}")
                if self.steps:
                    self._progress.update(self._run_task, completed=self.work_done + self._running_work())
            elif self.how == "log":
                now = time.monotonic()
                if now - self._last >= max(1.0, HEARTBEAT * self._every):
                    self._line(now)

    def _bar_end(self, key: str) -> None:
        with self._lock:
            self._bars.pop(key, None)
            task = self._tasks.pop(key, None)
            if task is not None and self._progress is not None:
                self._progress.remove_task(task)

    def _running_work(self) -> float:
        return float(sum(done for _, done, _ in self._bars.values())) if self.steps else 0.0

    # ------------------------------------------------------------ log lines

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, from the work done so far and its pace; None before any."""
        now = time.monotonic() if now is None else now
        done = self.work_done + self._running_work()
        if done <= 0:
            return None
        return (now - (self._working or self._began)) * max(0.0, self.work - done) / done

    def line(self, now: float | None = None) -> str:
        """The log line for now: ``12:03:10 12/69 states, 1m10s elapsed, ETA 5m20s · running: ...``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            eta = self.eta(now)
            text = (f"{time.strftime('%H:%M:%S')} {self.done}/{self.items} states"
                    + (f" ({self.failed} failed)" if self.failed else "")
                    + f", {duration(now - self._began)} elapsed, ETA "
                    + ("unknown" if eta is None else duration(eta)))
            if self._bars:
                shown = [f"{name} {done}/{total}" for name, done, total in list(self._bars.values())[:3]]
                more = len(self._bars) - len(shown)
                text += " · running " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
            return text

    def _line(self, now: float) -> None:
        self._last = now
        try:
            self._write(self.line(now))
        except (OSError, ValueError):  # a closed or full log: the run goes on
            pass
