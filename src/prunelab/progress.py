"""Progress bars that appear on a terminal and stay silent in CI and logs."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


def interactive() -> bool:
    """True when a person is watching: stderr is a TTY and no CI variable is set."""
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("PRUNELAB_QUIET")


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


@contextmanager
def progress_bar(total: int, description: str, enabled: bool | None = None) -> Iterator[_Silent | _RichBar]:
    if not (interactive() if enabled is None else enabled):
        yield _Silent()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))
