"""Report kinds: a store of another kind of study gets its own page instead of the study report.

A plug-in registers a :class:`ReportKind` (entry-point group ``prunelab.report_kinds``); ``prunelab
report`` asks each registered kind whether a store is one of its own before building the study report.
The shower GAN's fidelity report is one (the physics plug-in's ``gan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry


@dataclass(frozen=True)
class ReportKind:
    """``applies(results)``: is this store one of this kind's; ``build(results, out)`` writes its page
    to ``out`` and returns the path."""

    applies: Callable[[object], bool]
    build: Callable[[object, Path], Path]


REPORT_KINDS: Registry[ReportKind] = Registry("report kind", group="prunelab.report_kinds")


def report_kind_for(results) -> ReportKind | None:
    """The registered kind whose store ``results`` is (None: a study store, the standard report)."""
    from ..errors import PrunelabError

    for entry in REPORT_KINDS:
        try:
            kind = REPORT_KINDS.get(entry.name)
        except PrunelabError as exc:  # a plug-in that cannot load must not take the study report down
            import warnings

            warnings.warn(str(exc), stacklevel=2)
            continue
        if not isinstance(kind, ReportKind):
            raise PrunelabError(f"report kind {entry.name!r} is {type(kind).__name__}, not a "
                                "prunelab.report.kinds.ReportKind")
        if kind.applies(results):
            return kind
    return None
