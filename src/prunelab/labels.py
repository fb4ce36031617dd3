"""What each row of a study is, as data, and the one place its label is written.

A study's tables have one row per (configuration, row, round). A row is the dense reference, a
``[branches.NAME]`` (a pruned branch or a control of one), a consensus ticket on a task (with its
random masks, the task's own ticket and its dense reference) or a transferred ticket (with its
target-side controls). :class:`Row` holds that as fields, and :attr:`Row.label` is the string people
read in the summary, ``compare``, the report and a hypothesis's ``claim``. A label is written from a
Row and never read back into one: what needs the structure takes the Row, or the study record's
``rows`` (its JSON form). Nothing here imports the rest of prunelab.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KINDS = ("dense", "imp", "reinit", "random", "consensus", "transfer")
SECTIONS = ("dense", "branches", "consensus", "transfer")


@dataclass(frozen=True)
class Row:
    """One row of a study: the spec section that makes it and the role it plays there."""

    section: str  # dense (the study's reference), branches, consensus or transfer
    kind: str  # dense, imp, reinit, random, consensus or transfer
    name: str | None = None  # branches: the branch; transfer: the [transfer.NAME]
    subject: str | None = None  # branches: the branch a control follows
    tau: float | None = None  # consensus: the fraction of votes that keeps a weight
    task: str | None = None  # consensus: the task the row is trained on

    @property
    def label(self) -> str:
        if self.section == "dense":
            return "dense"
        if self.section == "branches":
            return self.name
        if self.section == "transfer":
            return f"transfer:{self.name}" + ("" if self.kind == "transfer" else f" {self.kind}")
        if self.kind == "dense":
            return f"dense on {self.task}"
        if self.kind == "imp":
            return f"own ticket on {self.task}"
        if self.kind == "consensus":
            return f"{consensus_name(self.tau)} on {self.task}"
        return f"random masks like tau={self.tau:g} on {self.task}"

    @property
    def of(self) -> str | None:
        """The label of the row this one is a control of (None for a row that is no control)."""
        if self.section == "branches":
            return self.subject
        if self.section == "transfer" and self.kind != "transfer":
            return transfer(self.name).label
        if self.section == "consensus" and self.kind == "random":
            return consensus(self.tau, self.task).label
        return None

    def record(self) -> dict:
        """The row as JSON data (the study record's ``rows``), its label beside it."""
        return {"label": self.label, **{k: v for k, v in asdict(self).items() if v is not None}}


def consensus_name(tau: float) -> str:
    """A consensus tau as people read it: ``consensus tau=0.5``."""
    return f"consensus tau={tau:g}"


def dense() -> Row:
    return Row("dense", "dense")


def branch(name: str, kind: str = "imp", subject: str | None = None) -> Row:
    """A ``[branches.NAME]`` row: a pruned branch, or a control (``reinit``, ``random``) of ``subject``."""
    return Row("branches", kind, name=name, subject=subject)


def consensus_dense(task: str) -> Row:
    """The dense reference of a consensus target other than the study's own task."""
    return Row("consensus", "dense", task=task)


def own_ticket(task: str) -> Row:
    return Row("consensus", "imp", task=task)


def consensus(tau: float, task: str) -> Row:
    return Row("consensus", "consensus", tau=tau, task=task)


def consensus_random(tau: float, task: str) -> Row:
    return Row("consensus", "random", tau=tau, task=task)


def transfer(name: str, kind: str = "transfer") -> Row:
    """A ``[transfer.NAME]`` row: the transferred ticket, or its target-side ``dense`` / ``random`` control."""
    return Row("transfer", kind, name=name)
