"""Who pays for sparsity, measured on populations of models (arXiv 1911.05248, 2205.13574, 2009.09936).

A study trains many seeds per sparsity: a *population* of dense models and, per branch and
round, a population of pruned ones. Hooker et al. compare the two populations class by class
(a class is affected when its normalised recall differs between them) and example by example
(pruning-identified exemplars, PIEs: the test examples whose modal prediction differs between
the populations). Tran et al. relate the accuracy a class loses to the dense model's gradient
norm and distance to the decision boundary on it.

Everything here works on a prediction matrix (models × examples) — computed from the stored
weights in a stream (:func:`population_predictions`), so any store can be analysed and no
store format depends on it (docs/architecture.md says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import PrunelabError


def population_predictions(results, hashes: Sequence[str], split: str = "test") -> tuple[np.ndarray, np.ndarray, str]:
    """``(labels, predictions, dataset)``: the predicted class of every model in ``hashes`` (rows) on each
    example of ``split`` (columns), recomputed from the stored weights one model at a time."""
    from .fairness import state_predictions

    if not hashes:
        raise PrunelabError("a population needs at least one model")
    labels, rows, dataset = None, [], None
    for h in hashes:
        y, predicted, name = state_predictions(results, h, split)
        if dataset is None:
            labels, dataset = y, name
        elif name != dataset:
            raise PrunelabError(f"state {h[:10]} was trained on {name!r}, the population on {dataset!r}: "
                                "a population is compared on one dataset")
        rows.append(predicted.astype(np.int16))
    return labels, np.stack(rows), dataset


def _check(labels: np.ndarray, *populations: np.ndarray) -> int:
    labels = np.asarray(labels)
    for p in populations:
        if p.ndim != 2 or p.shape[1] != len(labels):
            raise PrunelabError(f"a prediction matrix is models × examples; got {p.shape} for {len(labels)} labels")
        if len(p) < 2:
            raise PrunelabError(f"a population needs at least 2 models to have a spread; got {len(p)}")
    return int(max(labels.max(), *(p.max() for p in populations))) + 1


def class_recalls(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(recall, accuracy)``: each model's recall per class (models × classes; NaN for an absent class) and
    its overall accuracy."""
    labels = np.asarray(labels)
    correct = predictions == labels[None, :]
    support = np.bincount(labels, minlength=n_classes)
    hits = np.stack([np.bincount(labels, weights=row, minlength=n_classes) for row in correct.astype(float)])
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
    return recall, correct.mean(axis=1)


def class_population_test(labels, dense: np.ndarray, pruned: np.ndarray, *, class_names: Sequence[str] | None = None,
                          alpha: float = 0.05, correction: str = "holm", confidence: float = 0.95):
    """Per class, whether pruning changes it more than it changes the model overall (arXiv 1911.05248 §3).

    Each model's *normalised recall* of class c is its recall of c minus its overall accuracy, so a
    class that only follows the overall drop is not flagged. Per class, Welch's two-sample t-test
    compares the pruned population with the dense one (independent populations, as in the paper);
    ``difference`` is pruned − dense with its Welch interval, ``hedges_g`` the standardised effect,
    ``p_adjusted`` corrected over the classes (``holm`` controls the family-wise error,
    ``bh`` the false discovery rate), ``flagged`` where ``p_adjusted < alpha``. A negative
    difference means the class pays more than its share.
    """
    import pandas as pd
    from scipy import stats

    if correction not in ("holm", "bh"):
        raise PrunelabError(f"correction must be 'holm' or 'bh', not {correction!r}")
    labels = np.asarray(labels)
    n_classes = _check(labels, dense, pruned)
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) < n_classes:
        raise PrunelabError(f"{len(names)} class names for {n_classes} classes")
    (rd, ad), (rp, ap) = class_recalls(labels, dense, n_classes), class_recalls(labels, pruned, n_classes)
    nd, np_ = rd - ad[:, None], rp - ap[:, None]
    support = np.bincount(labels, minlength=n_classes)
    rows = []
    for c in range(n_classes):
        if support[c] == 0:
            continue
        a, b = np_[:, c], nd[:, c]
        diff = float(a.mean() - b.mean())
        if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread in either population: a t-test is undefined
            p, low, high, t = (1.0 if diff == 0 else 0.0), diff, diff, np.nan
        else:
            test = stats.ttest_ind(a, b, equal_var=False)
            ci = test.confidence_interval(confidence)
            p, low, high, t = float(test.pvalue), float(ci.low), float(ci.high), float(test.statistic)
        pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        g = diff / pooled * (1 - 3 / (4 * (len(a) + len(b)) - 9)) if pooled > 0 else np.nan
        rows.append({"class": names[c], "support": int(support[c]), "dense_recall": float(np.nanmean(rd[:, c])),
                     "pruned_recall": float(np.nanmean(rp[:, c])), "dense_normalised": float(b.mean()),
                     "pruned_normalised": float(a.mean()), "difference": diff, "ci_low": low, "ci_high": high,
                     "hedges_g": float(g), "t": t, "p": p})
    table = pd.DataFrame(rows)
    if correction == "holm":
        from .stats import holm

        table["p_adjusted"] = holm(table["p"].tolist())
    else:
        table["p_adjusted"] = stats.false_discovery_control(table["p"].to_numpy(), method="bh")
    table["flagged"] = table["p_adjusted"] < alpha
    table.attrs.update(dense_models=len(dense), pruned_models=len(pruned), alpha=alpha, correction=correction,
                       dense_accuracy=float(ad.mean()), pruned_accuracy=float(ap.mean()))
    return table


def _one_hot_counts(predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """models × (examples · classes) indicator, float32: a population's vote counts are a weighted sum of rows."""
    m, n = predictions.shape
    out = np.zeros((m, n * n_classes), dtype=np.float32)
    out[np.arange(m)[:, None], np.arange(n)[None, :] * n_classes + predictions] = 1.0
    return out


def _mode(votes: np.ndarray, n_classes: int) -> np.ndarray:
    """Each example's most voted class from a flat (examples · classes) vote table; ties: the lower class."""
    return votes.reshape(-1, n_classes).argmax(axis=1)


def modal_predictions(predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Each example's most frequent prediction over the models (ties go to the lower class index)."""
    return _mode(_one_hot_counts(predictions, n_classes).sum(axis=0), n_classes)


@dataclass
class PIEs:
    """Pruning-identified exemplars of one pruned population against the dense one (arXiv 1911.05248 §4)."""

    indices: np.ndarray          # the PIEs' positions in the split
    dense_mode: np.ndarray       # modal prediction of the dense population, per PIE
    pruned_mode: np.ndarray      # and of the pruned population
    labels: np.ndarray           # true labels of the PIEs
    count_ci: tuple[float, float]  # interval of the count: jackknife over models (t on its standard error)
    accuracy: dict = field(default_factory=dict)  # population → {"pies": (mean, lo, hi), "rest": (...)}

    @property
    def count(self) -> int:
        return len(self.indices)


def _jackknife(estimate: float, leave_outs: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(standard error, low, high): the jackknife standard error of ``estimate`` from its leave-one-out
    values and a Student t interval around it (n − 1 degrees of freedom)."""
    from .tdist import t_quantile

    n = len(leave_outs)
    se = float(np.sqrt((n - 1) / n * ((leave_outs - leave_outs.mean()) ** 2).sum()))
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    return se, estimate - half, estimate + half


def _pie_counts(dense: tuple[np.ndarray, np.ndarray], pruned: list[tuple[np.ndarray, np.ndarray]], n_classes: int,
                drop: int | None = None) -> np.ndarray:
    """PIE count against each pruned population, leaving model ``drop`` out of all. A population is
    ``(one-hot rows, their sum)``: leaving a model out subtracts its row from the vote table."""
    def mode(population):
        hot, votes = population
        return _mode(votes if drop is None else votes - hot[drop], n_classes)

    modes = mode(dense)
    return np.array([(mode(p) != modes).sum() for p in pruned])


def pruning_identified_exemplars(labels, dense: np.ndarray, pruned: np.ndarray, *, paired: bool | None = None,
                                 confidence: float = 0.95) -> PIEs:
    """The examples whose modal prediction in ``pruned`` differs from the modal prediction in ``dense``.

    The count's interval is a jackknife over models (a t interval on its leave-one-out standard error):
    ``paired`` (default: when both populations have as many models, as a study's seeds do) leaves one
    seed out of both populations at once, else each population's models in turn. A bootstrap of
    models does not serve here: a resample repeats models, so its votes are noisier than the
    population's and its count is biased upwards. ``accuracy`` gives each population's mean
    accuracy over its models on the PIEs and on the other examples, with a t interval over models:
    the paper finds both populations do worse on PIEs.
    """
    from .effects import paired_effect  # a one-sample t interval: the mean over models

    labels = np.asarray(labels)
    n_classes = _check(labels, dense, pruned)
    paired = len(dense) == len(pruned) if paired is None else paired
    if paired and len(dense) != len(pruned):
        raise PrunelabError(f"paired populations need as many models: {len(dense)} dense, {len(pruned)} pruned")
    hot_d, hot_p = _one_hot_counts(dense, n_classes), _one_hot_counts(pruned, n_classes)
    votes_d, votes_p = hot_d.sum(axis=0), hot_p.sum(axis=0)
    mode_d, mode_p = _mode(votes_d, n_classes), _mode(votes_p, n_classes)
    pies = np.flatnonzero(mode_d != mode_p)
    if paired:
        leave = np.array([_pie_counts((hot_d, votes_d), [(hot_p, votes_p)], n_classes, drop=i)[0]
                          for i in range(len(dense))], float)
        _, low, high = _jackknife(len(pies), leave, confidence)
    else:  # independent populations: their jackknife variances add
        from .tdist import t_quantile

        variances = []
        for hot, votes, other in ((hot_d, votes_d, mode_p), (hot_p, votes_p, mode_d)):
            leave = np.array([(_mode(votes - row, n_classes) != other).sum() for row in hot], float)
            variances.append(_jackknife(len(pies), leave, confidence)[0] ** 2)

        half = t_quantile(0.5 + confidence / 2, min(len(dense), len(pruned)) - 1) * float(np.sqrt(sum(variances)))
        low, high = len(pies) - half, len(pies) + half
    is_pie = np.zeros(len(labels), dtype=bool)
    is_pie[pies] = True
    accuracy = {}
    for name, preds in (("dense", dense), ("pruned", pruned)):
        correct = preds == labels[None, :]
        accuracy[name] = {where: (paired_effect(correct[:, mask].mean(axis=1), confidence)[:3] if mask.any()
                                  else (np.nan, np.nan, np.nan))
                          for where, mask in (("pies", is_pie), ("rest", ~is_pie))}
    return PIEs(pies, mode_d[pies], mode_p[pies], labels[pies], (max(0.0, low), high), accuracy)


def class_sensitivity(model, x, y, n_classes: int, chunk: int = 512):
    """Per class, on the dense model (arXiv 2205.13574): the mean per-example gradient norm of the loss over
    all parameters, the mean margin (softmax probability of the true class minus the largest other; near 0
    means near the decision boundary) and the mean loss."""
    import pandas as pd
    import torch

    model.eval()
    norms, margins, losses = [], [], []
    norm_of = _linear_gradient_norms if _only_linear(model) else _vmap_gradient_norms
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        logits, norm = norm_of(model, xb, yb)
        norms.append(norm)
        with torch.no_grad():
            prob = logits.softmax(dim=1)
            true = prob.gather(1, yb[:, None]).squeeze(1)
            other = prob.scatter(1, yb[:, None], -1.0).max(dim=1).values
            margins.append(true - other)
            losses.append(torch.nn.functional.cross_entropy(logits, yb, reduction="none"))
    labels = y.numpy()
    frame = pd.DataFrame({"class": labels, "grad_norm": torch.cat(norms).numpy(),
                          "margin": torch.cat(margins).numpy(), "loss": torch.cat(losses).numpy()})
    table = frame.groupby("class").mean().reindex(range(n_classes))
    table["support"] = np.bincount(labels, minlength=n_classes)
    return table


def _only_linear(model) -> bool:
    import torch

    return all(isinstance(m, torch.nn.Linear) for m in model.modules() if any(True for _ in m.parameters(recurse=False)))


def _linear_gradient_norms(model, x, y):
    """Per-example gradient norms of a model whose parameters are all in Linear layers, without forming the
    per-example gradients: a Linear's weight gradient for example i is δᵢ aᵢᵀ, so its squared norm is
    |δᵢ|²|aᵢ|² (and the bias adds |δᵢ|²) — Goodfellow's trick (arXiv 1510.01799)."""
    import torch

    inputs, handles = {}, []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(lambda mod, inp, out: inputs.__setitem__(mod, (inp[0], out))))
    try:
        with torch.enable_grad():
            logits = model(x)
            outs = [(m, a, o) for m, (a, o) in inputs.items()]
            # the sum over examples: each example's δ is the gradient of its own loss
            deltas = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"),
                                         [o for _, _, o in outs])
    finally:
        for h in handles:
            h.remove()
    total = torch.zeros(len(x))
    for (m, a, _), d in zip(outs, deltas):
        d2 = d.detach().flatten(1).pow(2).sum(dim=1)
        total += d2 * a.detach().flatten(1).pow(2).sum(dim=1) + (d2 if m.bias is not None else 0.0)
    return logits.detach(), total.sqrt()


def _vmap_gradient_norms(model, x, y):
    """Per-example gradient norms of any model, by torch.func (every per-example gradient is formed)."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_of(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    g = vmap(grad(loss_of), in_dims=(None, 0, 0))(params, x, y)
    with torch.no_grad():
        logits = model(x)
    return logits, torch.sqrt(sum(v.flatten(1).pow(2).sum(dim=1) for v in g.values()))


def correlation(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """Pearson's r with its Fisher-z interval and Spearman's ρ, over paired values (NaN pairs dropped)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        raise PrunelabError(f"a correlation with an interval needs at least 4 pairs; got {len(x)}")
    r = stats.pearsonr(x, y)
    ci = r.confidence_interval(confidence)
    rho = stats.spearmanr(x, y)
    return {"n": int(len(x)), "pearson_r": float(r.statistic), "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p": float(r.pvalue), "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}


def needs_predictions(hypotheses: list[dict]) -> bool:
    """Whether any declared hypothesis (as a dict) is a PIE claim, which reads every model's predictions."""
    from ..spec import HypothesisSection

    return any((HypothesisSection.model_validate(h).population or ("",))[0] == "pies" for h in hypotheses)


class Populations:
    """The populations of a study's points table (:func:`prunelab.analysis.tables.study_points`): the dense
    models and, per (branch, round), the pruned ones, each state's predictions computed once."""

    def __init__(self, results, points, split: str = "test"):
        self.results, self.points, self.split = results, points, split
        self._predictions: dict[str, np.ndarray] = {}
        self.labels: np.ndarray | None = None
        self.dataset: str | None = None
        self.class_names = tuple(points["class_names"].iloc[0]) if len(points) else ()
        configs = points["config"].fillna("").unique() if len(points) else [""]
        self._config = configs[0] if len(configs) == 1 else None  # one configuration: the default one

    def _in(self, config: str | None):
        """The points of ``config`` (default: the table's only configuration; no sweep: all)."""
        p = self.points
        config = config if config is not None else self._config
        return p[p["config"].fillna("") == (config or "")]

    def _of(self, hashes: list[str]) -> np.ndarray:
        missing = [h for h in dict.fromkeys(hashes) if h not in self._predictions]
        if missing:
            labels, matrix, dataset = population_predictions(self.results, missing, self.split)
            if self.dataset is None:
                self.labels, self.dataset = labels, dataset
            elif dataset != self.dataset:
                raise PrunelabError(f"the population on {dataset!r} is not on the study's {self.dataset!r}")
            self._predictions.update(zip(missing, matrix))
        return np.stack([self._predictions[h] for h in hashes])

    def seeds(self, branch: str, round: int, config: str | None = None) -> dict[int, str]:
        """seed → state hash of one row of the study at one round (the dense row: round 0)."""
        p = self._in(config)
        rows = p[(p["branch"] == branch) & (p["round"] == round)]
        return dict(zip(rows["seed"].astype(int), rows["hash"]))

    def rounds(self, branch: str, config: str | None = None) -> list[tuple[int, float]]:
        """(round, mean weights remaining) of a branch, in order."""
        rows = self._in(config)
        rows = rows[rows["branch"] == branch]
        return sorted({(int(r), float(m)) for r, m in zip(rows["round"], rows["remaining"])})

    def dense_row(self, config: str | None = None) -> str:
        kinds = self._in(config)
        dense = kinds[kinds["kind"] == "dense"]["branch"]
        if "dense" in set(dense):
            return "dense"
        if not len(dense):
            raise PrunelabError("the study has no dense models to compare a population with")
        return str(dense.iloc[0])

    def pair(self, branch: str, round: int, config: str | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(seeds, dense predictions, pruned predictions) over the seeds both populations have, in one order."""
        dense, pruned = self.seeds(self.dense_row(config), 0, config), self.seeds(branch, round, config)
        seeds = sorted(set(dense) & set(pruned))
        if len(seeds) < 2:
            raise PrunelabError(f"{branch!r} round {round}: {len(seeds)} seed(s) with a dense model (2 needed)")
        return seeds, self._of([dense[s] for s in seeds]), self._of([pruned[s] for s in seeds])

    def class_tests(self, branch: str, config: str | None = None, **options):
        """:func:`class_population_test` at every round of ``branch``, one table."""
        import pandas as pd

        tables = []
        for rnd, remaining in self.rounds(branch, config):
            _, dense, pruned = self.pair(branch, rnd, config)
            t = class_population_test(self.labels, dense, pruned, class_names=self.class_names, **options)
            t.insert(0, "remaining", remaining)
            t.insert(0, "round", rnd)
            t.insert(0, "branch", branch)
            tables.append(t)
        if not tables:
            raise PrunelabError(f"no finished round of {branch!r} to compare with the dense models")
        return pd.concat(tables, ignore_index=True)

    def pies(self, branch: str, config: str | None = None, **options) -> list[tuple[int, float, PIEs]]:
        """(round, weights remaining, :func:`pruning_identified_exemplars`) at every round of ``branch``."""
        out = []
        for rnd, remaining in self.rounds(branch, config):
            _, dense, pruned = self.pair(branch, rnd, config)
            out.append((rnd, remaining, pruning_identified_exemplars(self.labels, dense, pruned, **options)))
        return out

    def pies_trend(self, branch: str, config: str | None = None, *, confidence: float = 0.95) -> dict:
        """Whether the PIE count grows along ``branch``'s rounds: the least-squares slope of the count over
        rounds (PIEs per round), its jackknife standard error over seeds (one seed left out of the dense
        and every pruned population at once: each seed's pruned models descend from its dense model), a
        t interval and a one-sided t test that the slope is positive (n − 1 degrees of freedom)."""
        from .tdist import t_sf

        levels = self.rounds(branch, config)
        pairs = [self.pair(branch, rnd, config) for rnd, _ in levels]
        seeds = sorted(set.intersection(*[set(s) for s, _, _ in pairs]))
        if len(seeds) < 3 or len(levels) < 2:
            raise PrunelabError(f"{branch!r}: {len(seeds)} seeds over {len(levels)} rounds (3 and 2 needed)")
        n_classes = int(max(self.labels.max(), *(max(d.max(), p.max()) for _, d, p in pairs))) + 1
        def population(predictions):
            hot = _one_hot_counts(predictions, n_classes)
            return hot, hot.sum(axis=0)

        keep = [[s.index(x) for x in seeds] for s, _, _ in pairs]
        hot_dense = population(pairs[0][1][keep[0]])
        hot = [population(p[k]) for (_, _, p), k in zip(pairs, keep)]
        x = np.array([r for r, _ in levels], dtype=float)
        xc = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
        observed = _pie_counts(hot_dense, hot, n_classes)
        slope = float(observed @ xc)
        leave = np.array([_pie_counts(hot_dense, hot, n_classes, drop=i) @ xc for i in range(len(seeds))])
        se, low, high = _jackknife(slope, leave, confidence)
        p = float(t_sf(slope / se, len(seeds) - 1)) if se > 0 else (0.0 if slope > 0 else 1.0)
        return {"n": len(seeds), "rounds": tuple(int(r) for r in x), "remaining": tuple(m for _, m in levels),
                "counts": tuple(int(c) for c in observed), "slope": slope, "se": se, "ci_low": low, "ci_high": high,
                "p": p}

    def sensitivity(self, branch: str, config: str | None = None, round: int | None = None, max_models: int = 5):
        """Per class: the dense models' gradient norm, margin and loss (mean over up to ``max_models`` seeds),
        beside the recall the class loses in ``branch`` (its last round by default; mean over seeds), and the
        correlation of each with that loss (arXiv 2205.13574)."""
        import torch

        from ..experiment.context import dataset_cache

        levels = self.rounds(branch, config)
        round = levels[-1][0] if round is None else round
        seeds, dense, pruned = self.pair(branch, round, config)
        n_classes = len(self.class_names)
        (rd, _), (rp, _) = class_recalls(self.labels, dense, n_classes), class_recalls(self.labels, pruned, n_classes)
        dense_hashes = self.seeds(self.dense_row(config), 0, config)
        tables = []
        for s in seeds[:max_models]:
            snapshot = self.results.snapshot(dense_hashes[s])
            data = dataset_cache(snapshot.dataset, download=False).split(self.split)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                tables.append(class_sensitivity(snapshot.model(), data.x, data.y, n_classes))
            finally:
                torch.set_num_threads(threads)
        table = sum(t[["grad_norm", "margin", "loss"]] for t in tables) / len(tables)
        table.index = list(self.class_names)
        table["recall_lost"] = (rd - rp).mean(axis=0)
        corr = {name: correlation(table[name], table["recall_lost"]) for name in ("grad_norm", "margin", "loss")}
        table.attrs.update(branch=branch, round=round, models=len(tables), correlations=corr)
        return table


def class_pays_trend(frame, cls: str, branch: str, config: str | None = None, metric: str = "test.accuracy"):
    """Per seed, the slope over ``branch``'s rounds of (class recall − accuracy) minus the dense model's, for the
    class named ``cls``: ``(seeds, slopes)``. A negative slope: the class pays more with each round."""
    part = frame[frame["config"].fillna("") == (config or "")]
    names = tuple(part["class_names"].iloc[0]) if len(part) else ()
    if cls not in names:
        raise PrunelabError(f"class {cls!r} is not a class of the study (classes: {', '.join(names)})")
    c = names.index(cls)
    norm = {(b, int(r), int(s)): rec[c] - acc for b, r, s, rec, acc in
            zip(part["branch"], part["round"], part["seed"], part["recall"], part[metric])}
    dense_row = "dense" if (part["branch"] == "dense").any() else part[part["kind"] == "dense"]["branch"].iloc[0]
    rounds = sorted({int(r) for r in part[part["branch"] == branch]["round"]})
    seeds = sorted(s for (b, _, s) in norm if b == dense_row
                   and all((branch, r, s) in norm for r in rounds))
    x = np.array(rounds, dtype=float)
    xc = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slopes = np.array([sum(w * (norm[(branch, r, s)] - norm[(dense_row, 0, s)]) for w, r in zip(xc, rounds))
                       for s in seeds])
    return seeds, rounds, slopes
