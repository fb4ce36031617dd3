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

from .errors import PrunelabError
from .experiment import (Consensus, Experiment, Finetune, Prune, RandomPruneLike, RandomReinit, Rewind, State, Train,
                         Transfer)
from .pruning.methods import technique
from .spec import BranchSection, Spec
from .tasks.evaluation import headline
from .tasks.training import TrainConfig


@dataclass(frozen=True)
class Point:
    """A trained state that appears in the summary."""

    branch: str
    seed: int
    round: int
    state: State
    config: str | None = None  # the sweep combination's label; None without a sweep


CONFIG_TAG = "config:"


@dataclass
class StudyTree:
    spec: Spec
    experiment: Experiment
    points: list[Point] = field(default_factory=list)


def _pruning(branch: BranchSection, rate: float, output_rate: float | None, target: float | None = None):
    """Per-round pruning; with ``target`` (one-shot) ``output_rate`` is the output layer's sparsity."""
    overrides = {"<output>": output_rate} if output_rate is not None else {}
    if target is not None:
        return technique(branch.technique, target=target, overrides=overrides)
    return technique(branch.technique, amount=rate, overrides=overrides)


def build_study(spec: Spec, store: str | Path | None = None) -> StudyTree:
    exp = Experiment(store if store is not None else spec.study.store)
    tree = StudyTree(spec, exp)
    for label, config in spec.configurations():
        with exp.tag(*([CONFIG_TAG + label] if label is not None else [])):
            start = len(tree.points)
            _build_configuration(config, tree)
            if label is not None:
                tree.points[start:] = [replace(p, config=label) for p in tree.points[start:]]
    return tree


def _build_configuration(spec: Spec, tree: StudyTree) -> None:
    exp = tree.experiment
    cfg = spec.training
    task = spec.task
    imp = {n: b for n, b in spec.branches.items() if b.control is None}
    controls = {n: b for n, b in spec.branches.items() if b.control is not None}
    rewind_points = sorted({b.rewind_iteration for b in imp.values() if b.reset == "rewind" and b.rewind_iteration > 0})

    for seed in spec.study.seeds:
        root = exp.root(dataset=task.dataset, model=task.model, seed=seed, init=task.init, model_options=task.model_options)
        with exp.tag(f"seed={seed}"):
            starts, chain = {0: root}, root
            for k in rewind_points:
                chain = chain.then(Train(cfg, stop=k))
                starts[k] = chain
            dense = chain.then(Train(cfg))
            tree.points.append(Point("dense", seed, 0, dense))
            rounds_of: dict[str, list[tuple[State, State, State]]] = {}
            for name, b in imp.items():
                with exp.tag(name):
                    current, rounds = dense, []
                    n_rounds = 1 if b.target is not None else b.rounds
                    for r in range(1, n_rounds + 1):
                        pruned = current.then(Prune(_pruning(b, b.rate, b.output_rate, b.target)))
                        if b.reset == "rewind":
                            start = pruned.then(Rewind(to=starts[b.rewind_iteration]))
                            trained = start.then(Train(cfg))
                        else:
                            ft = cfg.model_copy(update={"lr": b.finetune_lr}) if b.finetune_lr else cfg
                            start, trained = pruned, pruned.then(Finetune(ft))
                        rounds.append((pruned, start, trained))
                        tree.points.append(Point(name, seed, r, trained))
                        current = trained
                    rounds_of[name] = rounds
            for name, b in controls.items():
                with exp.tag(name):
                    for r, (pruned, _, _) in enumerate(rounds_of[b.of], start=1):
                        if b.control == "reinit":
                            state = pruned.then(RandomReinit()).then(Train(cfg))
                        else:
                            state = root.then(RandomPruneLike(like=pruned)).then(Train(cfg))
                        tree.points.append(Point(name, seed, r, state))
            for name, tr in spec.transfer.items():
                with exp.tag(f"transfer:{name}"):
                    _, ticket_start, _ = rounds_of[tr.branch][tr.round - 1]
                    target_root = root if tr.dataset in (None, task.dataset) else exp.root(
                        dataset=tr.dataset, model=task.model, seed=seed, init=task.init, model_options=task.model_options)
                    tcfg = TrainConfig.parse({**cfg.model_dump(), **tr.training}, where=f"transfer.{name}.training")
                    state = target_root.then(Transfer(source=ticket_start)).then(Train(tcfg))
                    tree.points.append(Point(f"transfer:{name}", seed, tr.round, state))
    if spec.consensus is not None:
        _build_consensus(spec, tree)


def _build_consensus(spec: Spec, tree: StudyTree) -> None:
    c, exp, cfg, task = spec.consensus, tree.experiment, spec.training, spec.task
    sources = []
    for dataset in [task.dataset] + [d for d in c.datasets if d != task.dataset]:
        for seed in spec.study.seeds:
            root = exp.root(dataset=dataset, model=task.model, seed=seed, init=task.init, model_options=task.model_options)
            with exp.tag("consensus-source", f"seed={seed}"):
                s = root.then(Train(cfg))
                for _ in range(c.rounds):
                    pruned = s.then(Prune(technique(c.technique, amount=c.rate)))
                    s = pruned.then(Rewind(to=root)).then(Train(cfg))
                sources.append(pruned)
    for target in c.train_on or [task.dataset]:
        for seed in spec.study.seeds:
            root = exp.root(dataset=target, model=task.model, seed=seed, init=task.init, model_options=task.model_options)
            for tau in c.taus:
                with exp.tag(f"consensus tau={tau:g}", f"seed={seed}"):
                    ticket = root.then(Consensus(sources=tuple(sources), tau=tau))
                    tree.points.append(Point(f"consensus tau={tau:g} on {target}", seed, 0, ticket.then(Train(cfg))))
                    random = root.then(RandomPruneLike(like=ticket)).then(Train(cfg))
                    tree.points.append(Point(f"random masks like tau={tau:g} on {target}", seed, 0, random))


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


# Seeds from which "auto" intervals are bootstrapped. Measured coverage of nominal 95 % intervals
# (benchmarks/interval_coverage.py): BCa 0.73 / 0.83 / 0.89 / 0.91 at 3 / 5 / 10 / 20 values of a
# normal accuracy, Student t 0.94–0.96 throughout; only from ~30 does the bootstrap catch up.
BOOTSTRAP_FROM = 30


INTERVALS = ("auto", "t", "bootstrap")


def check_interval(method: str) -> str:
    if method not in INTERVALS:
        raise PrunelabError(f"interval method {method!r} must be one of {', '.join(INTERVALS)}")
    return method


def mean_ci(values: list[float], confidence: float = 0.95, method: str = "auto") -> tuple[float, float, float]:
    """Mean and confidence interval over seeds.

    ``method``: ``"bootstrap"`` (BCa, scipy.stats.bootstrap), ``"t"`` (Student
    t), or ``"auto"``: bootstrap from 30 values, t below. With few seeds a
    bootstrap can only resample a handful of distinct values and its interval is
    too narrow (benchmarks/interval_coverage.py measures it); the t interval is
    the honest one there.
    """
    from scipy import stats

    check_interval(method)
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    if method == "bootstrap" or (method == "auto" and n >= BOOTSTRAP_FROM):
        from .analysis.stats import bootstrap_ci

        return bootstrap_ci(values, confidence)
    sd = float(np.std(values, ddof=1))  # scipy's tstd warns on equal values, which 3 seeds often give
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def remaining_percent(manifest: dict) -> float:
    """Percent of prunable weights kept: masked tensors by their masks, and every
    other Linear/Conv weight (ndim >= 2) in full — e.g. a layer a transfer re-initialised."""
    masks = manifest.get("masks") or {}
    kept = total = 0
    for name, entry in (manifest.get("weights") or {}).items():
        if name in masks:
            kept += masks[name]["kept"]
            total += math.prod(masks[name]["shape"])
        elif name.endswith("weight") and len(entry["shape"]) >= 2:
            kept += math.prod(entry["shape"])
            total += math.prod(entry["shape"])
    return 100.0 * kept / total if total else 100.0


def summarize(tree: StudyTree, split: str = "test", interval: str = "auto") -> list[SummaryRow]:
    store = tree.experiment.store
    groups: dict[tuple[str | None, str, int], list[tuple]] = {}
    names = []
    for p in tree.points:
        m = store.manifest(p.state.hash)
        if m is None or m.get("status") != "done":
            continue
        metrics = m.get("metrics") or {}
        if split not in metrics:
            raise PrunelabError(f"state {p.state.hash[:10]} has no {split!r} evaluation")
        remaining = remaining_percent(m)
        names.append(headline(metrics[split])[0])
        groups.setdefault((p.config, p.branch, p.round), []).append(
            (headline(metrics[split])[1], remaining, p.state.hash, metrics[split].get("roc_auc")))
    rows = []
    for (config, branch, rnd), items in groups.items():
        accs = [a for a, _, _, _ in items]
        mean, lo, hi = mean_ci(accs, method=interval)
        aucs = [a for _, _, _, a in items if a is not None]
        rows.append(SummaryRow(branch, rnd, sum(r for _, r, _, _ in items) / len(items), len(accs), mean, lo, hi,
                               tuple(accs), config, tuple(h for _, _, h, _ in items),
                               mean_ci(aucs, method=interval) if len(aucs) == len(items) else None, names[0]))
    order = {name: i for i, name in enumerate(dict.fromkeys(p.branch for p in tree.points))}
    configs = {name: i for i, name in enumerate(dict.fromkeys(p.config for p in tree.points))}
    return sorted(rows, key=lambda r: (order[r.branch], r.round, configs[r.config]))
