"""Study specs: a TOML file that declares a whole pruning study.

Validated with pydantic; every problem is reported with its key path and the
file, and nothing is written before the whole spec (and the tree it expands
to) is valid. See ``examples/`` and ``prunelab init``.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import labels
from .errors import PrunelabError, validated
from .tasks.training import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# The study record (documents/study-NAME.json): written by prunelab.study, read by the analysis
STUDY_DOCUMENT_PREFIX = "study-"
RECORD_FORMAT = "prunelab.study/1"

MAX_SEED = 2**63 - 1  # seeds feed torch.manual_seed, which takes a signed 64-bit integer


class StudySection(_Strict):
    name: str = "study"
    store: str = "runs/study"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must lie in 0..2^63-1, got {bad[0]}")
        return seeds


class TaskSection(_Strict):
    dataset: str
    model: str
    init: str | None = None
    model_options: dict = Field(default_factory=dict)
    # Resize every dataset of the study (task, consensus sources and targets, transfer targets)
    # to one input shape, e.g. [28, 28], and/or replicate / average to ``channels``, so tasks of
    # different shapes share one architecture (and one initialisation). A dataset named as a
    # variant ("mnist1d[resize=64]") keeps its own.
    resize: list[int] | None = Field(None, min_length=1, max_length=3)
    channels: int | None = Field(None, ge=1)

    @field_validator("resize")
    @classmethod
    def _sizes(cls, resize):
        if resize is not None and min(resize) < 1:
            raise ValueError(f"resize sizes must be positive, got {resize}")
        return resize

    def data(self, dataset: str | None = None) -> str:
        """The name under which ``dataset`` (default: the task's) is loaded in this study."""
        from .tasks.datasets import dataset_variant

        name = dataset or self.dataset
        return name if "[" in name else dataset_variant(name, self.resize, self.channels)


def _check_pattern(value: str | None) -> str | None:
    from .pruning.methods import check_pattern

    return check_pattern(value)


def _check_technique(name: str) -> str:
    """A named technique, a registered method or your class by import path (trusted: your spec names it)."""
    from .pruning.methods import technique_settings
    from .registry import trust_names

    try:
        technique_settings(name)
    except PrunelabError as exc:
        raise ValueError(str(exc)) from None
    trust_names(name)
    return name


class CalibrationSection(_Strict):
    """``calibration = { samples = 128 }``: the examples a method that looks at data (wanda,
    sparsegpt) reads, drawn with ``seed`` (default: each pruned state's own) from ``split`` of the
    branch's dataset or of ``dataset``."""

    samples: int = Field(128, gt=0, le=1_000_000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    split: Literal["train", "validation"] = "train"
    dataset: str | None = None


#: ``rates`` keys that name a kind of layer rather than a module-name pattern.
RATE_KINDS = {"conv": "<conv>", "linear": "<linear>", "output": "<output>"}


class BranchSection(_Strict):
    """One line of the study: iterative pruning with a reset strategy, or a control."""

    technique: str = "l1_unstructured"
    rate: float = Field(0.2, gt=0, lt=1)  # fraction of the remaining weights per round
    output_rate: float | None = Field(None, gt=0, lt=1)  # the output layer's rate (F&C: half)
    # Per-layer rates: by type ("conv", "linear"), "output", or a module-name glob ("features.0");
    # the most specific key wins (output > name > type > rate). Checked against the model.
    rates: dict[str, float] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)  # module-name globs never pruned
    rounds: int = Field(5, ge=1, le=100)
    # rewind (the lottery ticket), finetune, or none: measure the pruned model as it is, untrained (the
    # one-shot comparisons of Wanda and SparseGPT; a prune evaluates itself, the next round prunes it again)
    reset: Literal["rewind", "finetune", "none"] = "rewind"
    rewind_iteration: int = Field(0, ge=0)  # 0: the original initialisation
    finetune_lr: float | None = Field(None, gt=0)
    # reset = "finetune": train this many iterations after each prune (default: as long as [training])
    finetune_iterations: int | None = Field(None, gt=0, le=10**9)
    target: float | None = Field(None, gt=0, lt=1)  # one-shot: prune once to this sparsity
    control: Literal["reinit", "random_pruning"] | None = None
    of: str | None = None  # the branch a control follows round by round
    pattern: str | None = None  # "N:M" (e.g. "2:4"): one prune to N of every M input weights kept
    calibration: CalibrationSection | None = None  # the data wanda / sparsegpt read (default 128 examples)
    method_params: dict = Field(default_factory=dict)  # the method's own parameters (sparsegpt: blocksize, ...)
    scope: Literal["layer", "global"] | None = None  # instead of the technique's
    structure: Literal["unstructured", "structured"] | None = None  # instead of the technique's

    _technique = field_validator("technique")(classmethod(lambda cls, v: _check_technique(v)))

    _pattern = field_validator("pattern")(classmethod(lambda cls, v: _check_pattern(v)))

    @field_validator("rates")
    @classmethod
    def _rates(cls, rates):
        for key, value in rates.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"rates.{key} = {value!r} must be a fraction in (0, 1) of the remaining weights "
                                 "(leave a layer out of pruning with 'exclude')")
            if key.startswith("<"):
                raise ValueError(f"rates key {key!r}: write conv, linear, output or a module name pattern")
        return rates

    def overrides(self) -> dict[str, float]:
        """The pruning layer's override keys for ``output_rate`` and ``rates``."""
        out = {RATE_KINDS.get(k, k): float(v) for k, v in self.rates.items()}
        if self.output_rate is not None:
            out["<output>"] = self.output_rate
        return out

    @model_validator(mode="after")
    def _consistent(self):
        if self.output_rate is not None and "output" in self.rates:
            raise ValueError("give the output layer's rate once: 'output_rate' or rates.output, not both")
        if self.pattern is not None:
            given = self.model_fields_set & {"rate", "output_rate", "rates", "target"}
            if given:
                raise ValueError(f"pattern {self.pattern!r} fixes the sparsity (1 − N/M): leave out "
                                 f"{', '.join(sorted(given))}")
            if "rounds" in self.model_fields_set and self.rounds != 1:
                raise ValueError(f"pattern {self.pattern!r} is reached in one prune: rounds must be 1")
        if self.calibration is not None and self.control is None:
            from .pruning.method import method_class
            from .pruning.methods import technique_settings

            method = technique_settings(self.technique)["method"]
            if ":" not in method and "calibration" not in method_class(method).needs:
                raise ValueError(f"calibration: {self.technique!r} reads no calibration data (wanda and sparsegpt "
                                 "do); leave it out")
        if self.reset != "finetune" and (self.finetune_lr is not None or self.finetune_iterations is not None):
            raise ValueError("finetune_lr / finetune_iterations apply to reset = \"finetune\" only")
        if (self.control is None) != (self.of is None):
            raise ValueError("a control branch needs both 'control' and 'of' (the branch it follows)")
        if self.target is not None and self.control is not None:
            raise ValueError("'target' (one-shot) and 'control' cannot be combined")
        return self


class ConsensusSection(_Strict):
    """Consensus ("denoised", prêt-à-porter) tickets, arXiv 2007.04091 Algorithm 1.

    ``sources = "tasks"`` (the paper): per seed, one IMP run on each source
    task (the task's dataset and ``datasets``) from that seed's identical
    initialisation; their masks are intersected (tau = 1; a lower tau keeps
    weights kept by at least that fraction of the sources, a relaxation) and
    the consensus is trained on each ``train_on`` target (a task that is not a
    source is held out), beside random masks of the same per-layer sparsity.
    ``sources = "seeds"``: the masks of all seeds are voted together instead
    (different initialisations: their overlap is near chance, so the strict
    intersection is tiny; kept for studying exactly that).
    """

    sources: Literal["tasks", "seeds"] = "tasks"
    technique: str = "global_unstructured"
    rate: float = Field(0.2, gt=0, lt=1)
    output_rate: float | None = Field(None, gt=0, lt=1)
    rounds: int = Field(2, ge=1, le=50)
    datasets: list[str] = Field(default_factory=list)  # source tasks besides the task's dataset
    taus: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    train_on: list[str] = Field(default_factory=list)  # target datasets (default: the task's)
    controls: bool = True  # random masks with each consensus's per-layer sparsity, on each target

    _technique = field_validator("technique")(classmethod(lambda cls, v: _check_technique(v)))

    @field_validator("taus")
    @classmethod
    def _taus(cls, taus):
        for tau in taus:
            if not 0 < tau <= 1:
                raise ValueError(f"tau {tau} must be in (0, 1]")
        if len(set(taus)) != len(taus):
            raise ValueError(f"taus must be distinct, got {taus}")
        return taus


class TransferSection(_Strict):
    """Train a ticket found by ``branch`` (after ``round``) on another dataset and/or optimizer.

    With ``controls`` (default), the target also gets a dense training and
    random masks with the transferred ticket's per-layer sparsity.
    """

    branch: str
    round: int = Field(..., ge=1)
    dataset: str | None = None
    training: dict = Field(default_factory=dict)  # overrides of [training], e.g. optimizer = "momentum"
    controls: bool = True


class InstabilitySection(_Strict):
    """Instability analysis (Frankle et al. 2020, arXiv 1912.05671): from the dense run's state at
    each iteration ``at``, train two copies to the end with different data orders and measure the
    test-error barrier on the straight line between them (``points`` evenly spaced models)."""

    at: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data_seeds: list[int] = Field(default_factory=lambda: [1001, 1002], min_length=2, max_length=2)
    points: int = Field(11, ge=3, le=101)

    @field_validator("at")
    @classmethod
    def _iterations(cls, at):
        if len(set(at)) != len(at) or min(at) < 0:
            raise ValueError(f"at must be distinct iterations >= 0, got {at}")
        return sorted(at)

    @field_validator("data_seeds")
    @classmethod
    def _distinct(cls, seeds):
        if seeds[0] == seeds[1] or min(seeds) < 0 or max(seeds) > MAX_SEED:
            raise ValueError(f"data_seeds must be two distinct non-negative seeds, got {seeds}")
        return seeds


_CLAIM = re.compile(r"^\s*(.+?)\s+(>=|<=|>|<)\s+(.+?)\s*$")
# claims about a population of pruned models against the dense one (analysis.population)
_POPULATION_CLAIM = re.compile(r"^\s*(?:class\s+(\S+)\s+pays|(pies)\s+grow)\s+in\s+(.+?)\s*$")


def population_claim(claim: str) -> tuple[str, str | None, str] | None:
    """``("class", C, branch)`` for "class C pays in branch", ``("pies", None, branch)`` for "pies grow in
    branch", None for any other claim."""
    m = _POPULATION_CLAIM.match(claim)
    if m is None:
        return None
    cls, pies, branch = m.groups()
    return ("pies", None, branch) if pies else ("class", cls, branch)


class HypothesisSection(_Strict):
    """A claim declared before the run (arXiv 1904.10922), tested after it as one family.

    ``claim = "ticket > reinit"``: ticket is better than reinit — the paired difference
    (ticket − reinit, same seed; its sign flipped for a lower-is-better metric such as perplexity)
    is positive, averaged over the selected levels of ``ticket`` (its
    ``rounds``, or those whose weights remaining lie in ``remaining_at_least``
    ..``remaining_at_most`` percent; default every level). Against a dense
    reference the comparison is with its round 0. ``>=`` / ``<=`` claim
    non-inferiority: the difference is above ``-margin`` (below ``margin``).
    ``test``: one-sided paired t test (default) or exact sign-flip permutation.

    Two claims are about populations of models (arXiv 2009.09936, 1911.05248), each "as sparsity
    grows" along a branch's rounds: ``"class 3 pays in global"`` — the class's normalised recall
    (its recall minus the model's accuracy) falls against the dense model of the same seed, faster
    with each round (the per-seed slope over rounds is negative); ``"pies grow in global"`` — the
    number of pruning-identified exemplars rises with the rounds (its slope, a jackknife over seeds).
    """

    claim: str
    rounds: list[int] = Field(default_factory=list)
    remaining_at_most: float | None = Field(None, gt=0, le=100)
    remaining_at_least: float | None = Field(None, ge=0, lt=100)
    margin: float = Field(0.0, ge=0, allow_inf_nan=False)
    test: Literal["t", "permutation"] = "t"

    @model_validator(mode="after")
    def _parse(self):
        if self.population is not None:
            if self.margin:
                raise ValueError(f"claim {self.claim!r}: margin only applies to >= and <=")
            if self.population[0] == "pies" and self.test != "t":
                raise ValueError(f"claim {self.claim!r} is tested by a jackknife over seeds; test does not apply")
            return self
        if _CLAIM.match(self.claim) is None:
            raise ValueError(f"claim {self.claim!r} must read 'A > B', 'A < B', 'A >= B' or 'A <= B' (names of "
                             "branches or study rows, spaces around the operator), 'class C pays in BRANCH' or "
                             "'pies grow in BRANCH'")
        a, op, b = self.parts
        if a == b:
            raise ValueError(f"claim {self.claim!r} compares {a!r} with itself")
        if op in (">=", "<=") and self.margin <= 0:
            raise ValueError(f"claim {self.claim!r}: {op} is non-inferiority and needs margin > 0 (how much worse "
                             "still counts as equal, in metric units, e.g. margin = 0.01)")
        if op in (">", "<") and self.margin:
            raise ValueError(f"claim {self.claim!r}: margin only applies to >= and <=")
        if (self.remaining_at_most is not None and self.remaining_at_least is not None
                and self.remaining_at_least > self.remaining_at_most):
            raise ValueError("remaining_at_least is above remaining_at_most")
        if self.rounds and (self.remaining_at_most is not None or self.remaining_at_least is not None):
            raise ValueError("give either rounds or a remaining range, not both")
        return self

    @property
    def population(self) -> tuple[str, str | None, str] | None:
        """``("class", C, branch)`` or ``("pies", None, branch)`` for a population claim, else None."""
        return population_claim(self.claim)

    @property
    def parts(self) -> tuple[str, str, str]:
        """``(A, op, B)``; a population claim reads as its branch against the dense models."""
        if self.population is not None:
            return self.population[2], self.population[0], "dense"
        a, op, b = _CLAIM.match(self.claim).groups()
        return a, op, b


SWEEPABLE = ("task", "training", "branches", "consensus", "transfer", "instability")
MAX_CONFIGURATIONS = 512


def _flatten_sweep(raw, prefix: str = "") -> dict[str, list]:
    """``{"training": {"lr": [..]}}`` and ``{"training.lr": [..]}`` both give ``{"training.lr": [..]}``."""
    if not isinstance(raw, dict):
        raise ValueError(f"sweep{'.' + prefix if prefix else ''} must be a table of lists of values")
    flat = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten_sweep(value, path))
        else:
            flat[path] = value
    return flat


def _check_sweep(raw) -> dict[str, list]:
    flat = _flatten_sweep(raw)
    for path, values in flat.items():
        root = path.split(".", 1)[0]
        if root == "study":
            raise ValueError(f"sweep.{path}: [study] cannot be swept (seeds are the seed variation: list them in "
                             "[study].seeds)")
        if root not in SWEEPABLE or "." not in path:
            raise ValueError(f"sweep.{path}: a swept key is a dotted path into one of {', '.join(SWEEPABLE)}, "
                             "e.g. \"training.lr\"")
        if not isinstance(values, list) or len(values) < 2:
            raise ValueError(f"sweep.{path}: needs a list of at least 2 values, got {values!r}")
        if any(isinstance(v, (dict, list)) for v in values):
            raise ValueError(f"sweep.{path}: values must be numbers, strings or booleans, got {values!r}")
        if len({_value_key(v) for v in values}) != len(values):
            raise ValueError(f"sweep.{path}: values must be distinct, got {values!r}")
    count = math.prod(len(v) for v in flat.values())
    if count > MAX_CONFIGURATIONS:
        raise ValueError(f"sweep: {count} configurations (the product of the value lists) is more than "
                         f"{MAX_CONFIGURATIONS}")
    return flat


def _value_key(value) -> str:
    return f"{type(value).__name__}:{value!r}"


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _labels(paths: list[str]) -> list[str]:
    """The shortest name of each swept key: its last part, or the whole path where that is ambiguous."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return [short if last.count(short) == 1 else path for short, path in zip(last, paths)]


def _set_path(raw: dict, path: str, value) -> None:
    parts = path.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ValueError(f"sweep.{path}: the spec has no section {where!r} to vary")
        node = child
    node[parts[-1]] = value


class Spec(_Strict):
    study: StudySection = Field(default_factory=StudySection)
    task: TaskSection
    training: TrainConfig
    branches: dict[str, BranchSection] = Field(default_factory=dict)
    consensus: ConsensusSection | None = None
    transfer: dict[str, TransferSection] = Field(default_factory=dict)
    instability: InstabilitySection | None = None
    hypotheses: list[HypothesisSection] = Field(default_factory=list)
    # Systematic variation: "training.lr" = [1e-3, 3e-3] runs the whole study once per
    # combination of values (every seed each), reported apart from the seed variation.
    sweep: dict[str, list] = Field(default_factory=dict)

    _sweep = field_validator("sweep", mode="before")(classmethod(lambda cls, v: _check_sweep(v)))

    def configurations(self) -> list[tuple[str | None, "Spec"]]:
        """``[(label, spec)]``, one per combination of swept values; ``[(None, self)]`` without a sweep.

        The label names the values (``"lr=0.001 batch_size=32"``); each spec
        is fully validated, with errors that name the combination.
        """
        if not self.sweep:
            return [(None, self)]
        paths = list(self.sweep)
        names = _labels(paths)
        base = self.model_dump(exclude={"sweep"})
        out = []
        for values in itertools.product(*(self.sweep[p] for p in paths)):
            label = " ".join(f"{n}={_format(v)}" for n, v in zip(names, values))
            raw = copy.deepcopy(base)
            for path, value in zip(paths, values):
                _set_path(raw, path, value)
            try:
                out.append((label, validated(Spec, raw)))
            except PrunelabError as exc:
                raise PrunelabError(f"sweep [{label}]: {exc}") from None
        return out

    @model_validator(mode="after")
    def _cross_checks(self):
        if not self.branches and self.consensus is None and self.instability is None:
            raise ValueError("a study needs at least one [branches.NAME], a [consensus] or an [instability] section")
        total = self.training.iterations
        if self.instability is not None and total is not None and self.instability.at[-1] >= total:
            raise ValueError(f"instability.at: {self.instability.at[-1]} is not before the end of training "
                             f"({total} iterations)")
        for name, branch in self.branches.items():
            if branch.of is not None:
                if branch.of not in self.branches:
                    raise ValueError(f"branches.{name}.of: no branch named {branch.of!r}")
                if self.branches[branch.of].control is not None:
                    raise ValueError(f"branches.{name}.of: {branch.of!r} is itself a control")
                if branch.control == "reinit" and self.branches[branch.of].reset == "none":
                    raise ValueError(f"branches.{name}: a reinit control trains fresh weights, and {branch.of!r} "
                                     "measures its pruned models untrained (reset = \"none\"); use control = "
                                     "\"random_pruning\" (random masks on the same trained weights)")
            if total is not None and branch.rewind_iteration >= total:
                raise ValueError(
                    f"branches.{name}.rewind_iteration: {branch.rewind_iteration} is not before the end of "
                    f"training ({total} iterations)")
        c = self.consensus
        if c is not None and c.sources == "tasks" and len({self.task.dataset, *c.datasets}) < 2:
            raise ValueError("consensus.datasets: sources = \"tasks\" (the paper's consensus) needs at least one "
                             "source task besides [task].dataset; list it in consensus.datasets (with "
                             "[task] resize when shapes differ), or vote across seeds with sources = \"seeds\"")
        for name, tr in self.transfer.items():
            if tr.branch not in self.branches:
                raise ValueError(f"transfer.{name}.branch: no branch named {tr.branch!r}")
            source = self.branches[tr.branch]
            if tr.round > source.rounds:
                raise ValueError(f"transfer.{name}.round: branch {tr.branch!r} has only {source.rounds} rounds")
            try:
                TrainConfig.parse({**self.training.model_dump(), **tr.training}, where=f"transfer.{name}.training")
            except PrunelabError as exc:
                raise ValueError(str(exc)) from None
        roles = study_roles(self)
        for i, h in enumerate(self.hypotheses):
            a, _, b = h.parts
            for name in (a, b):
                if name not in roles:
                    dropped = duplicate_taus(self).get(name)
                    hint = (f"it gives the same mask as {dropped!r}, which is the one run" if dropped else
                            "known: " + ", ".join(roles))
                    raise ValueError(f"hypotheses[{i}].claim: no study row {name!r} ({hint})")
            if roles[a] == "dense":
                raise ValueError(f"hypotheses[{i}].claim: put the dense reference on the right ({b} ... {a})"
                                 if h.population is None else f"hypotheses[{i}].claim: {a!r} is a dense row; "
                                 "a population claim is about a pruned branch")
            if h.population is not None and max_round(self, a) < 2:
                raise ValueError(f"hypotheses[{i}].claim: {a!r} has one round; 'as sparsity grows' needs two or more")
            most = max_round(self, a)
            if any(r < 1 or r > most for r in h.rounds):
                raise ValueError(f"hypotheses[{i}].rounds: {a!r} has rounds 1..{most}, got {h.rounds}")
        if self.sweep:
            try:
                self.configurations()
            except PrunelabError as exc:
                raise ValueError(str(exc)) from None
        return self


def consensus_sources(spec: "Spec") -> int:
    """How many masks vote in each consensus."""
    c = spec.consensus
    tasks = len(dict.fromkeys([spec.task.dataset, *c.datasets]))
    return tasks if c.sources == "tasks" else tasks * len(spec.study.seeds)


def _votes_needed(tau: float, n: int) -> int:
    """The fewest of ``n`` source votes a weight needs to reach ``tau`` (the Consensus recipe's float32 rule)."""
    import numpy as np

    limit = np.float32(tau - 1e-9)
    return next(k for k in range(n + 1) if np.float32(k) / np.float32(n) >= limit)


def effective_taus(spec: "Spec") -> list[float]:
    """The consensus taus that give distinct masks: of taus needing the same number of votes, the first."""
    if spec.consensus is None:
        return []
    n, seen = consensus_sources(spec), {}
    for tau in spec.consensus.taus:
        seen.setdefault(_votes_needed(tau, n), tau)
    return list(seen.values())


def duplicate_tau_values(spec: "Spec") -> dict[float, float]:
    """Consensus taus that are run once under an earlier tau: {dropped tau: kept tau}."""
    if spec.consensus is None:
        return {}
    n, kept = consensus_sources(spec), {}
    return {tau: kept[_votes_needed(tau, n)] for tau in spec.consensus.taus
            if kept.setdefault(_votes_needed(tau, n), tau) != tau}


def duplicate_taus(spec: "Spec") -> dict[str, str]:
    """Row labels of consensus taus that are run once under an earlier tau: {dropped label: kept label}."""
    out = {}
    for tau, first in duplicate_tau_values(spec).items():
        for target in spec.consensus.train_on or [spec.task.dataset]:
            out[labels.consensus(tau, target).label] = labels.consensus(first, target).label
            out[labels.consensus_random(tau, target).label] = labels.consensus_random(first, target).label
    return out


def control_kind(control: str) -> str:
    """The kind of a control branch's rows: ``reinit``, or ``random`` for random pruning."""
    return "random" if control == "random_pruning" else control


def study_rows(spec: "Spec") -> dict[str, labels.Row]:
    """Every row the study will have, by label, in the order the summary shows them."""
    out = [labels.dense()]
    for name, b in spec.branches.items():
        out.append(labels.branch(name, control_kind(b.control), b.of) if b.control else labels.branch(name))
    c = spec.consensus
    if c is not None:
        sources = set([spec.task.dataset, *c.datasets])
        for target in c.train_on or [spec.task.dataset]:
            if target != spec.task.dataset:
                out.append(labels.consensus_dense(target))
            if target in sources:
                out.append(labels.own_ticket(target))
            for tau in effective_taus(spec):
                out.append(labels.consensus(tau, target))
                if c.controls:
                    out.append(labels.consensus_random(tau, target))
    for name, t in spec.transfer.items():
        out.append(labels.transfer(name))
        if t.controls:
            out += [labels.transfer(name, "dense"), labels.transfer(name, "random")]
    by_label: dict[str, labels.Row] = {}
    for row in out:
        other = by_label.setdefault(row.label, row)
        if other is not row:  # one label for two rows would merge them in every table
            where = next((f"{r.section}.{r.name}" for r in (row, other) if r.name is not None), "consensus.taus")
            raise PrunelabError(f"{where}: its row would be labelled {row.label!r}, as another row of the study "
                                "is; choose another name")
    return by_label


def study_roles(spec: "Spec") -> dict[str, str]:
    """Every row label the study will have, with its kind: dense, imp, reinit, random, consensus, transfer."""
    return {label: row.kind for label, row in study_rows(spec).items()}


def max_round(spec: "Spec", label: str) -> int:
    """The deepest round a row reaches (0 for dense references)."""
    row = study_rows(spec).get(label)
    if row is None or row.kind == "dense":
        return 0
    if row.section == "branches":
        b = spec.branches[row.name]
        source = spec.branches[b.of] if b.of else b
        return 1 if source.target is not None else source.rounds
    if row.section == "transfer":
        return spec.transfer[row.name].round
    return spec.consensus.rounds


def load_spec(path: str | Path) -> Spec:
    """Read and validate a study spec; errors name the file and the key."""
    raw = read_toml(path)
    section = next((key for key in ("gan", "flow") if key in raw), None)
    if section and "training" not in raw:
        raise PrunelabError(f"{path}: a shower-generator study spec (it has [{section}]); run it with "
                            f"`prunelab calo train {path}`")
    return parse_spec(raw, str(path))


def read_toml(path: str | Path) -> dict:
    """A spec file's TOML as a dict; every way of failing is one error naming the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PrunelabError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise PrunelabError(f"{path}: is a directory, not a spec file") from None
    except OSError as exc:
        raise PrunelabError(f"{path}: cannot read the spec ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PrunelabError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a spec is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise PrunelabError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise PrunelabError(f"{path}: nested too deeply to be a spec") from None
    return raw


def with_device(spec: Spec, device: str) -> Spec:
    """``spec`` training on ``device`` (``prunelab run --device``); transfers inherit it."""
    raw = spec.model_dump()
    raw["training"]["device"] = device
    for section in raw.get("transfer", {}).values():
        section.get("training", {}).pop("device", None)
    return parse_spec(raw, "--device")


def parse_spec(raw: dict, where: str = "spec") -> Spec:
    try:
        return validated(Spec, raw)
    except PrunelabError as exc:
        raise PrunelabError(f"{where}: {exc}") from None
