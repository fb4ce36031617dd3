"""From a study spec to an experiment tree, and from a finished store to the summary.

Per seed: one root and one dense training (split at every rewind iteration,
so "rewind to k" points at a stored state) shared by all branches. An IMP
branch prunes ``rate`` of the remaining weights per round and resets by
rewinding or fine-tuning; a control branch follows another branch round by
round (the same masks with a fresh init, or random masks with the same
per-layer sparsity on the original init). Consensus and transfer sections
add their own states.

A ``[sweep]`` runs all of this once per combination of swept values; the
states of each combination carry the tag ``config:<label>`` (states that two
combinations share, like the dense training when only a pruning rate is
swept, carry both and run once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .analysis.stats import BOOTSTRAP_FROM, INTERVALS, check_interval, mean_ci, mean_cis  # noqa: F401 (re-exported)
from .errors import PrunelabError
from .experiment import (Consensus, Experiment, Finetune, Prune, RandomPruneLike, RandomReinit, Rewind, State, Train,
                         Transfer)
from .experiment.store import file_stamp
from .experiment.summary import remaining_percent  # noqa: F401 (re-exported)
from .pruning.methods import technique
from . import labels
from .spec import (RECORD_FORMAT, STUDY_DOCUMENT_PREFIX, BranchSection, Spec, consensus_sources, control_kind,
                   duplicate_tau_values, effective_taus)
from .headline import headline, metric_info
from .tasks.training import TrainConfig


@dataclass(frozen=True)
class Point:
    """A trained state that appears in the summary, with the role it plays in the study."""

    row: labels.Row  # which row of the study: the dense reference, a branch, a consensus, a transfer, ...
    seed: int
    round: int  # the pruning round its masks come from (0: dense)
    state: State
    config: str | None = None  # the sweep combination's label; None without a sweep
    dataset: str = ""  # the task it is trained and evaluated on

    @property
    def branch(self) -> str:
        """The row's label: a branch name, "dense", "consensus tau=1 on digits", "transfer:sgd random", ..."""
        return self.row.label

    @property
    def kind(self) -> str:
        return self.row.kind

    @property
    def of(self) -> str | None:
        """A control's subject: the label of the row it is the control of."""
        return self.row.of

    def record(self) -> dict:
        return {"hash": self.state.hash, "branch": self.branch, "seed": self.seed, "round": self.round,
                "config": self.config, "kind": self.kind, "of": self.of, "dataset": self.dataset}


CONFIG_TAG = "config:"


@dataclass(frozen=True)
class CopyPair:
    """Two copies of one state trained to the end with different data orders (instability)."""

    seed: int
    iteration: int  # where the copies start: iteration k of the dense run
    copies: tuple[State, State]
    config: str | None = None


@dataclass
class StudyTree:
    spec: Spec
    experiment: Experiment
    points: list[Point] = field(default_factory=list)
    pairs: list[CopyPair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the planner decided for the user to know


def _pruning(branch: BranchSection):
    """Per-round pruning; one-shot (``target``): the rates are the layers' final sparsities; an N:M
    ``pattern``: one prune to it."""
    extra = {"exclude": tuple(branch.exclude)} if branch.exclude else {}
    for key in ("scope", "structure"):
        if getattr(branch, key) is not None:
            extra[key] = getattr(branch, key)
    if branch.method_params:
        extra["method_params"] = dict(branch.method_params)
    if branch.calibration is not None or "calibration" in _needs(branch.technique):
        extra["calibration"] = (branch.calibration.model_dump() if branch.calibration is not None else {})
    if branch.pattern is not None:
        return technique(branch.technique, pattern=branch.pattern, **extra)
    if branch.target is not None:
        return technique(branch.technique, target=branch.target, overrides=branch.overrides(), **extra)
    return technique(branch.technique, amount=branch.rate, overrides=branch.overrides(), **extra)


def _needs(name: str) -> frozenset:
    from .pruning.method import method_class
    from .pruning.methods import technique_settings

    return method_class(technique_settings(name)["method"]).needs


def _check_against_model(name: str, config, root: State) -> None:
    """Rate keys and exclusions must match the model's prunable layers: fail while planning."""
    from .pruning.targets import resolve_overrides, select

    from .pruning.methods import check_pattern_fits

    model = root.recipe.spec().build(seed=0)
    try:
        config.make_method()  # your own method is imported and checked here, while planning
        targets = select(model, config.include, config.exclude)
        resolve_overrides(targets, config.overrides)
        check_pattern_fits(targets, config.pattern)
    except PrunelabError as exc:
        raise PrunelabError(f"branches.{name}: {exc}") from None


def build_study(spec: Spec, store: str | Path | None = None) -> StudyTree:
    exp = Experiment(store if store is not None else spec.study.store)
    tree = StudyTree(spec, exp)
    for label, config in spec.configurations():
        with exp.tag(*([CONFIG_TAG + label] if label is not None else [])):
            start, pairs = len(tree.points), len(tree.pairs)
            _build_configuration(config, tree)
            if label is not None:
                tree.points[start:] = [replace(p, config=label) for p in tree.points[start:]]
                tree.pairs[pairs:] = [replace(p, config=label) for p in tree.pairs[pairs:]]
    for dropped, kept in duplicate_tau_values(spec).items():
        dropped, kept = labels.consensus_name(dropped), labels.consensus_name(kept)
        tree.notes.append(f"consensus: {dropped} gives the same mask as {kept} with {consensus_sources(spec)} "
                          f"sources; it is run once, as {kept}")
    exp.documents[STUDY_DOCUMENT_PREFIX + _safe_name(spec.study.name)] = study_record(spec, tree)
    return tree


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".") or "study"


def study_record(spec: Spec, tree: "StudyTree") -> dict:
    """What the summary, ``compare`` and the report read back: each trained point's role (row label,
    kind, round, seed, configuration, control-of, task), each row's structure (``rows``: section,
    branch or transfer name, tau, task; :mod:`prunelab.labels`), the planned comparisons and the
    hypotheses."""
    return {"format": RECORD_FORMAT, "name": spec.study.name,
            "dataset": spec.task.dataset,
            "points": [p.record() for p in tree.points],
            "rows": [row.record() for row in dict.fromkeys(p.row for p in tree.points)],
            "comparisons": [list(p) for p in comparison_pairs(spec)],
            "hypotheses": [h.model_dump() for h in spec.hypotheses]}


def _build_configuration(spec: Spec, tree: StudyTree) -> None:
    exp = tree.experiment
    cfg = spec.training
    task = spec.task
    imp = {n: b for n, b in spec.branches.items() if b.control is None}
    controls = {n: b for n, b in spec.branches.items() if b.control is not None}
    rewind_points = {b.rewind_iteration for b in imp.values() if b.reset == "rewind" and b.rewind_iteration > 0}
    if spec.instability is not None:  # copies start from stored states of the dense run
        rewind_points |= {k for k in spec.instability.at if k > 0}
    rewind_points = sorted(rewind_points)

    _check_batch(cfg, task.data(task.dataset), "training.batch_size")
    for seed in spec.study.seeds:
        root = _root(exp, spec, task.dataset, seed)
        with exp.tag(f"seed={seed}"):
            starts, chain = {0: root}, root
            for k in rewind_points:
                chain = chain.then(Train(cfg, stop=k))
                starts[k] = chain
            dense = chain.then(Train(cfg))
            tree.points.append(Point(labels.dense(), seed, 0, dense, dataset=task.dataset))
            rounds_of: dict[str, list[tuple[State, State, State]]] = {}
            for name, b in imp.items():
                with exp.tag(name):
                    current, rounds = dense, []
                    n_rounds = 1 if b.target is not None or b.pattern is not None else b.rounds
                    pruning = _pruning(b)
                    if seed == spec.study.seeds[0]:
                        _check_against_model(name, pruning, root)
                    for r in range(1, n_rounds + 1):
                        if b.reset == "none":  # measured as pruned, untrained; the next round prunes it again
                            pruned = current.then(Prune(pruning, evaluate=True))
                            rounds.append((pruned, pruned, pruned))
                            tree.points.append(Point(labels.branch(name), seed, r, pruned, dataset=task.dataset))
                            current = pruned
                            continue
                        pruned = current.then(Prune(pruning))
                        if b.reset == "rewind":
                            start = pruned.then(Rewind(to=starts[b.rewind_iteration]))
                            trained = start.then(Train(cfg))
                        else:
                            ft = finetune_config(cfg, b)
                            start, trained = pruned, pruned.then(Finetune(ft))
                        rounds.append((pruned, start, trained))
                        tree.points.append(Point(labels.branch(name), seed, r, trained, dataset=task.dataset))
                        current = trained
                    rounds_of[name] = rounds
            for name, b in controls.items():
                with exp.tag(name):
                    for r, (pruned, _, _) in enumerate(rounds_of[b.of], start=1):
                        if b.control == "reinit":
                            state = pruned.then(RandomReinit()).then(Train(cfg))
                        elif imp[b.of].reset == "none":  # random masks on the same trained weights, untrained
                            state = dense.then(RandomPruneLike(like=pruned, pattern=imp[b.of].pattern, evaluate=True))
                        else:  # an N:M branch's control: random masks of the same pattern
                            state = root.then(RandomPruneLike(like=pruned, pattern=imp[b.of].pattern)).then(Train(cfg))
                        tree.points.append(Point(labels.branch(name, control_kind(b.control), b.of), seed, r, state,
                                                 dataset=task.dataset))
            for name, tr in spec.transfer.items():
                _build_transfer(spec, tree, name, tr, seed, root, rounds_of[tr.branch][tr.round - 1][1])
            if spec.instability is not None:
                for k in spec.instability.at:
                    with exp.tag(f"instability copy from {k}"):
                        copies = tuple(starts[k].then(Train(cfg, data_seed=d)) for d in spec.instability.data_seeds)
                    tree.pairs.append(CopyPair(seed, k, copies))
    if spec.consensus is not None:
        _build_consensus(spec, tree)


def finetune_config(cfg: TrainConfig, branch: BranchSection) -> TrainConfig:
    """[training] with the branch's ``finetune_lr`` and ``finetune_iterations`` (a warm-up longer than
    the fine-tuning is cut to a tenth of it)."""
    update = {}
    if branch.finetune_lr:
        update["lr"] = branch.finetune_lr
    if branch.finetune_iterations:
        update.update(iterations=branch.finetune_iterations, epochs=None,
                      warmup_iterations=min(cfg.warmup_iterations, branch.finetune_iterations // 10))
        if cfg.milestones:
            update["milestones"] = tuple(m for m in cfg.milestones if m < branch.finetune_iterations)
    return cfg.model_copy(update=update) if update else cfg


def _check_batch(cfg: TrainConfig, dataset: str, where: str) -> None:
    """A batch larger than the training set cannot be drawn: say so while planning, before anything runs."""
    from .experiment.context import dataset_cache

    n = len(dataset_cache(dataset).train.y)
    if cfg.batch_size > n:
        raise PrunelabError(f"{where}: {cfg.batch_size} is larger than the {n} training examples of {dataset}")


def _root(exp: Experiment, spec: Spec, dataset: str, seed: int) -> State:
    """The study's model freshly initialised with ``seed`` for ``dataset`` (resized as [task] asks)."""
    t = spec.task
    return exp.root(dataset=t.data(dataset), model=t.model, seed=seed, init=t.init, model_options=t.model_options)


def _build_transfer(spec: Spec, tree: StudyTree, name: str, tr, seed: int, root: State, ticket_start: State) -> None:
    """The ticket (masks + its initial weights) trained on the target, beside the target-side controls:
    dense training on the target, and random masks with the transferred ticket's per-layer sparsity."""
    exp, cfg = tree.experiment, spec.training
    target_root = root if tr.dataset in (None, spec.task.dataset) else _root(exp, spec, tr.dataset, seed)
    tcfg = TrainConfig.parse({**cfg.model_dump(), **tr.training}, where=f"transfer.{name}.training")
    _check_batch(tcfg, target_root.recipe.dataset, f"transfer.{name}.training.batch_size")
    row, target = labels.transfer(name), tr.dataset or spec.task.dataset
    with exp.tag(row.label):
        moved = target_root.then(Transfer(source=ticket_start))
        tree.points.append(Point(row, seed, tr.round, moved.then(Train(tcfg)), dataset=target))
    if not tr.controls:
        return
    dense, random_masks = labels.transfer(name, "dense"), labels.transfer(name, "random")
    with exp.tag(dense.label):
        tree.points.append(Point(dense, seed, 0, target_root.then(Train(tcfg)), dataset=target))
    with exp.tag(random_masks.label):
        random = target_root.then(RandomPruneLike(like=moved)).then(Train(tcfg))
        tree.points.append(Point(random_masks, seed, tr.round, random, dataset=target))


def _build_consensus(spec: Spec, tree: StudyTree) -> None:
    """Consensus tickets (arXiv 2007.04091, Algorithm 1).

    ``sources = "tasks"`` (the paper): per seed, one IMP run per source task,
    all from that seed's identical initialisation; the consensus of the seed's
    masks (tau = 1: their strict intersection) is trained on every target from
    the same initialisation, beside random masks of its per-layer sparsity.
    ``sources = "seeds"``: the masks of every seed (and task) are voted
    together, and the consensus is trained from each seed's initialisation.
    """
    c, exp, cfg, task = spec.consensus, tree.experiment, spec.training, spec.task
    datasets = list(dict.fromkeys([task.dataset] + list(c.datasets)))
    pruning = technique(c.technique, amount=c.rate, overrides={"<output>": c.output_rate} if c.output_rate else {})
    _check_shared_architecture(spec, exp, datasets + list(c.train_on))
    for dataset in dict.fromkeys(datasets + list(c.train_on)):
        _check_batch(cfg, spec.task.data(dataset), "training.batch_size")
    sources: dict[int, list[State]] = {}
    own: dict[tuple[str, int], State] = {}
    for seed in spec.study.seeds:
        for dataset in datasets:
            root = _root(exp, spec, dataset, seed)
            with exp.tag("consensus-source", f"seed={seed}"):
                s = root.then(Train(cfg))
                for _ in range(c.rounds):
                    pruned = s.then(Prune(pruning))
                    s = pruned.then(Rewind(to=root)).then(Train(cfg))
            sources.setdefault(seed, []).append(pruned)
            own[(dataset, seed)] = s
    for target in c.train_on or [task.dataset]:
        for seed in spec.study.seeds:
            root = _root(exp, spec, target, seed)
            voters = sources[seed] if c.sources == "tasks" else [p for ps in sources.values() for p in ps]
            if target != task.dataset:  # the target's dense reference (shared with its source run, if any)
                dense = labels.consensus_dense(target)
                with exp.tag(dense.label, f"seed={seed}"):
                    tree.points.append(Point(dense, seed, 0, root.then(Train(cfg)), dataset=target))
            if target in datasets:  # the bespoke ticket of the target task, for comparison
                mine = labels.own_ticket(target)
                with exp.tag(mine.label, f"seed={seed}"):
                    tree.points.append(Point(mine, seed, c.rounds, own[(target, seed)], dataset=target))
            for tau in effective_taus(spec):  # taus that need the same number of votes give one mask
                row = labels.consensus(tau, target)
                with exp.tag(row.label, f"seed={seed}"):
                    ticket = root.then(Consensus(sources=tuple(voters), tau=tau))
                    tree.points.append(Point(row, seed, c.rounds, ticket.then(Train(cfg)), dataset=target))
                if c.controls:
                    control = labels.consensus_random(tau, target)
                    with exp.tag(control.label, f"seed={seed}"):
                        random = root.then(RandomPruneLike(like=ticket)).then(Train(cfg))
                        tree.points.append(Point(control, seed, c.rounds, random, dataset=target))


def _check_shared_architecture(spec: Spec, exp: Experiment, datasets: list[str]) -> None:
    """The paper's consensus needs one architecture and one initialisation for every task: the
    models built for each task with the same seed must have identical parameters. Say which
    task differs, and how to make them agree."""
    seed = spec.study.seeds[0]
    built = {d: _root(exp, spec, d, seed).recipe.spec().build(seed=seed).state_dict() for d in dict.fromkeys(datasets)}
    (first, reference), *others = built.items()
    for name, weights in others:
        shapes = {k: tuple(v.shape) for k, v in weights.items()}
        expected = {k: tuple(v.shape) for k, v in reference.items()}
        if shapes != expected:
            diff = next(k for k in expected.keys() | shapes.keys() if shapes.get(k) != expected.get(k))
            raise PrunelabError(
                f"consensus: the tasks must share one architecture, but {diff} is {shapes.get(diff)} on "
                f"{spec.task.data(name)} and {expected.get(diff)} on {spec.task.data(first)}; give [task] resize = "
                "[H, W] (and channels), or name a resized variant such as \"mnist1d[resize=64]\"")
        if any(not torch.equal(weights[k], reference[k]) for k in reference):
            raise PrunelabError(f"consensus: model {spec.task.model!r} is initialised differently on "
                                f"{spec.task.data(name)} and {spec.task.data(first)} with the same seed")


# ---------------------------------------------------------------- the summary


@dataclass(frozen=True)
class SummaryRow:
    branch: str
    round: int
    remaining: float  # percent of prunable weights remaining (mean over seeds)
    n: int
    mean: float
    ci_low: float
    ci_high: float
    values: tuple[float, ...]
    config: str | None = None
    states: tuple[str, ...] = ()  # the hashes behind ``values``, in the same order
    auc: tuple[float, float, float] | None = None  # two-class tasks: ROC AUC mean and 95 % interval
    metric: str = "accuracy"  # what ``values`` are: accuracy, or for regression resolution / rmse (see headline)
    seeds: tuple[int, ...] = ()  # the seed of each of ``values``
    early_stopping: tuple[float, float, float] | None = None  # iteration of minimum validation loss: mean, 95 % CI


def summarize(tree: StudyTree, split: str = "test", interval: str = "auto") -> list[SummaryRow]:
    """One row per (configuration, row, round): the mean and interval over seeds of the split's
    headline metric, read from the per-state summaries in the store's index (no manifest is
    opened where they are current: the summary of a finished 100,000-state study is instant)."""
    store = tree.experiment.store
    groups: dict[tuple[str | None, str, int], list[dict]] = {}
    names = []
    stamps = {}
    for p in tree.points:
        try:
            stamps[p.state.hash] = file_stamp(store.manifest_path(p.state.hash).stat())
        except FileNotFoundError:
            continue
    summaries = store.summaries(stamps)
    prefix = f"{split}."
    for p in tree.points:
        s = summaries.get(p.state.hash)
        if s is None or s["status"] != "done":
            continue
        evaluation = {k[len(prefix):]: v for k, v in s["scalars"].items() if k.startswith(prefix)}
        if not evaluation:
            raise PrunelabError(f"state {p.state.hash[:10]} has no {split!r} evaluation")
        names.append(headline(evaluation)[0])
        groups.setdefault((p.config, p.branch, p.round), []).append({
            "value": headline(evaluation)[1], "remaining": s["remaining"], "hash": p.state.hash,
            "auc": evaluation.get("roc_auc"), "seed": p.seed,
            # the minimum of the validation loss curve (Frankle & Carbin's early-stopping iteration)
            "early": s["scalars"].get("early_stopping_iteration") if s["curve_points"] > 1 else None})
    rows = []
    for (config, branch, rnd), items in groups.items():
        values = [i["value"] for i in items]
        mean, lo, hi = mean_ci(values, method=interval, bounds=metric_info(names[0]).bounds)
        aucs = [i["auc"] for i in items if i["auc"] is not None]
        early = [float(i["early"]) for i in items if i["early"] is not None]
        rows.append(SummaryRow(branch, rnd, sum(i["remaining"] for i in items) / len(items), len(values), mean, lo,
                               hi, tuple(values), config, tuple(i["hash"] for i in items),
                               mean_ci(aucs, method=interval, bounds=(0.0, 1.0)) if len(aucs) == len(items) else None,
                               names[0],
                               tuple(i["seed"] for i in items),
                               mean_ci(early, method=interval, bounds=(0.0, math.inf))
                               if len(early) == len(items) else None))
    order = {name: i for i, name in enumerate(dict.fromkeys(p.branch for p in tree.points))}
    configs = {name: i for i, name in enumerate(dict.fromkeys(p.config for p in tree.points))}
    return sorted(rows, key=lambda r: (order[r.branch], r.round, configs[r.config]))


# ---------------------------------------------------------------- paired effects


@dataclass(frozen=True)
class PairedEffect:
    """``a`` minus ``b`` at one round (of ``a``; ``b`` at the same round, or at a fixed one such as the
    dense network's 0), paired by seed: the effect a lottery-ticket claim is about."""

    a: str
    b: str
    round: int
    remaining: float  # percent, mean of the two rows
    n: int  # seeds present in both
    mean: float  # mean paired difference a − b
    ci_low: float  # 95 % Student t interval of the mean difference (nan below 2 seeds)
    ci_high: float
    effect_size: float  # Cohen's d_z: mean difference / SD of the differences (nan when the SD is 0)
    config: str | None = None
    pair: int = 0  # position of the comparison in the list it came from (for ordering)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.n >= 2 and (self.ci_low > 0 or self.ci_high < 0))


Pair = tuple  # (a, b) compares equal rounds; (a, b, r) compares every round of a with round r of b


def comparison_pairs(spec: Spec) -> list[Pair]:
    """The comparisons a study is built for: each pruned branch vs the dense network and vs its
    controls, each consensus vs its random masks, each transferred ticket vs the dense target
    and vs its random masks."""
    pairs: list[Pair] = []
    dense = labels.dense().label
    for name, b in spec.branches.items():
        if b.control is None:
            pairs.append((name, dense, 0))
            pairs += [(name, c) for c, cb in spec.branches.items() if cb.of == name]
    c = spec.consensus
    if c is not None:
        sources = set([spec.task.dataset, *c.datasets])
        for target in c.train_on or [spec.task.dataset]:
            reference = dense if target == spec.task.dataset else labels.consensus_dense(target).label
            for tau in effective_taus(spec):
                label = labels.consensus(tau, target).label
                if c.controls:
                    pairs.append((label, labels.consensus_random(tau, target).label))
                pairs.append((label, reference, 0))
                if target in sources:
                    pairs.append((label, labels.own_ticket(target).label))
    for n, t in spec.transfer.items():
        if t.controls:
            label = labels.transfer(n).label
            pairs += [(label, labels.transfer(n, "dense").label, 0), (label, labels.transfer(n, "random").label)]
    return pairs


def paired_effects(rows: list[SummaryRow], pairs: list[Pair], confidence: float = 0.95) -> list[PairedEffect]:
    """Per pair and round (and sweep configuration), the mean seed-paired difference with its t interval."""
    from .analysis.effects import paired_effect

    by = {(r.config, r.branch, r.round): r for r in rows}
    out = []
    for index, (name_a, name_b, *fixed) in enumerate(pairs):
        for (config, branch, rnd), a in by.items():
            b = by.get((config, name_b, fixed[0] if fixed else rnd))
            if branch != name_a or b is None:
                continue
            theirs = dict(zip(b.seeds, b.values))
            diffs = [v - theirs[s] for s, v in zip(a.seeds, a.values) if s in theirs]
            n = len(diffs)
            if n == 0:
                continue
            mean, lo, hi, d = paired_effect(diffs, confidence)
            out.append(PairedEffect(name_a, name_b, rnd, a.remaining if fixed else (a.remaining + b.remaining) / 2,
                                    n, mean, float(lo), float(hi), float(d), config, index))
    return sorted(out, key=lambda e: (e.pair, e.round))


def hypothesis_results(spec: Spec, rows: list[SummaryRow]):
    """The spec's declared hypotheses tested on the summary's values (see analysis.effects)."""
    import pandas as pd

    from .analysis.effects import evaluate_hypotheses
    from .spec import study_roles

    kinds = study_roles(spec)
    frame = pd.DataFrame([{"config": r.config, "branch": r.branch, "kind": kinds.get(r.branch, "imp"),
                           "round": r.round, "seed": s, "remaining": r.remaining, "value": v}
                          for r in rows for s, v in zip(r.seeds, r.values)],
                         columns=["config", "branch", "kind", "round", "seed", "remaining", "value"])
    return evaluate_hypotheses(frame, [h.model_dump() for h in spec.hypotheses],
                               metric=rows[0].metric if rows else "accuracy")


# ---------------------------------------------------------------- instability


@dataclass(frozen=True)
class InstabilityRow:
    iteration: int  # the copies started from this iteration of the dense run
    n: int
    mean: float  # error barrier (instability), mean over seeds
    ci_low: float
    ci_high: float
    values: tuple[float, ...]
    endpoint_error: float  # mean test error of the copies themselves
    config: str | None = None


def instability(tree: StudyTree, split: str = "test", interval: str = "auto") -> list[InstabilityRow]:
    """Per start iteration (and configuration): the test-error barrier between the two copies, over seeds."""
    from .analysis.stability import error_barrier
    from .experiment.context import dataset_cache

    if tree.spec.instability is None:
        return []
    points = tree.spec.instability.points
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for pair in tree.pairs:
        if not all(c.done for c in pair.copies):
            continue
        a, b = (c.load() for c in pair.copies)
        data = dataset_cache(a.dataset)
        result = error_barrier(a, b, data.split(split), data.class_names, points)
        groups.setdefault((pair.config, pair.iteration), []).append(
            (result.barrier, (result.errors[0] + result.errors[-1]) / 2))
    rows = []
    for (config, k), items in groups.items():
        barriers = [b for b, _ in items]
        mean, lo, hi = mean_ci(barriers, method=interval, bounds=(0.0, 1.0))  # an error difference, >= 0
        rows.append(InstabilityRow(k, len(items), mean, lo, hi, tuple(barriers),
                                   float(np.mean([e for _, e in items])), config))
    return sorted(rows, key=lambda r: (r.config or "", r.iteration))
