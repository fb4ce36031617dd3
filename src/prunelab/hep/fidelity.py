"""How faithful generated showers are to reference showers: the checks physicists trust.

* Per shower-shape observable and per incident-energy bin: the 1-D
  Wasserstein distance (``scipy.stats.wasserstein_distance``) divided by the
  reference's standard deviation in that bin — 0.1 means the distributions
  are a tenth of the reference spread apart — and the two-sample
  Kolmogorov–Smirnov statistic (``scipy.stats.ks_2samp``).
* A classifier two-sample test (C2ST): a gradient-boosted classifier
  (scikit-learn's ``HistGradientBoostingClassifier``) is trained to tell the
  reference from the generated showers on their shower shapes *and* the
  incident energy (so a shower that is right for another energy is caught),
  on a seeded half of the events; the ROC AUC on the other half, with its
  DeLong 95 % interval (DeLong et al. 1988, the fast form of Sun & Xu 2014).
  0.5: the classifier cannot tell them apart; 1: every shower is recognised.
* The energy response: (energy in the grids + overflow) / requested energy,
  mean and spread per energy bin, for both.

Compare like with like: generate at the reference showers' incident energies
(:func:`~prunelab.hep.gan.sample` does, given ``reference.energy``), so every
energy bin holds the same events on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PrunelabError
from .metrics import ENERGY_BINS

BIN_LABELS = tuple(f"{lo:g}-{hi:g} GeV" for lo, hi in zip(ENERGY_BINS[:-1], ENERGY_BINS[1:]))


def normalised_wasserstein(reference: np.ndarray, generated: np.ndarray) -> float:
    """W1(reference, generated) / SD(reference); a constant reference is scaled by the pooled SD, and two
    identical constants are 0 apart."""
    from scipy.stats import wasserstein_distance

    distance = float(wasserstein_distance(reference, generated))
    scale = float(np.std(reference))
    if scale == 0:
        scale = float(np.std(np.concatenate([reference, generated])))
    return 0.0 if distance == 0 else distance / scale if scale > 0 else float("inf")


def delong_interval(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC and its DeLong interval (clipped to [0, 1]); ``labels`` 1 for the positive class."""
    from scipy.stats import norm, rankdata

    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores, dtype=np.float64)[labels], np.asarray(scores, dtype=np.float64)[~labels]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise PrunelabError(f"a two-sample AUC needs at least 2 events per class, got {m} and {n}")
    ranks_all = rankdata(np.concatenate([pos, neg]))
    ranks_pos, ranks_neg = rankdata(pos), rankdata(neg)
    auc = (ranks_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (ranks_all[:m] - ranks_pos) / n  # structural components (Sun & Xu 2014)
    v01 = 1.0 - (ranks_all[m:] - ranks_neg) / m
    se = np.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    z = norm.ppf(0.5 + level / 2)
    return float(auc), float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))


def _features(showers) -> tuple[np.ndarray, list[str]]:
    from .shapes import shape_features

    x, names = shape_features(showers)
    return np.column_stack([x, np.log(showers.energy)]), [*names, "log_incident_energy"]


def two_sample_auc(reference, generated, *, seed: int = 0, max_iter: int = 200) -> dict:
    """C2ST on shower shapes + incident energy: AUC on a held-out half with its DeLong 95 % interval."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    xr, names = _features(reference)
    xg, _ = _features(generated)
    x = np.concatenate([xr, xg])
    y = np.concatenate([np.ones(len(xr), dtype=np.int64), np.zeros(len(xg), dtype=np.int64)])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in (0, 1):  # stratified halves
        index = np.flatnonzero(y == label)
        test[rng.permutation(index)[: len(index) // 2]] = True
    from .baselines import one_openmp_thread

    classifier = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed, early_stopping=False)
    with one_openmp_thread():
        classifier.fit(x[~test], y[~test])
        scores = classifier.predict_proba(x[test])[:, 1]
    auc, low, high = delong_interval(y[test], scores)
    return {"auc": auc, "interval": [low, high], "train_events": int((~test).sum()), "test_events": int(test.sum()),
            "features": names, "classifier": f"HistGradientBoostingClassifier(max_iter={max_iter})"}


def response(showers) -> np.ndarray:
    """(grid + overflow energy) / requested energy, per shower."""
    deposited = showers.layer_energies.sum(axis=1) + showers.overflow.sum(axis=1)
    return deposited / (1000.0 * showers.energy)


@dataclass
class Fidelity:
    table: "object"  # pandas: observable, energy bin, events, normalised W1, KS statistic
    two_sample: dict
    energy_response: "object"  # pandas: energy bin, reference and generated response mean and SD

    def summary(self) -> dict:
        """The headline numbers (what a state stores and the pruning study plots)."""
        t = self.table
        overall = t[t["energy_bin"] == "all"]
        response = self.energy_response.set_index("energy_bin").loc["all"]
        worst = overall.loc[overall["wasserstein"].idxmax()]
        worst_bin = t.loc[t["wasserstein"].idxmax()]
        return {"auc": self.two_sample["auc"], "auc_interval": self.two_sample["interval"],
                "worst_wasserstein": float(worst["wasserstein"]), "worst_observable": str(worst["observable"]),
                "median_wasserstein": float(overall["wasserstein"].median()),
                "worst_wasserstein_in_a_bin": float(worst_bin["wasserstein"]),
                "worst_bin": f"{worst_bin['observable']} at {worst_bin['energy_bin']}",
                "max_ks": float(overall["ks"].max()),
                "response_bias": float(response["generated_mean"] - response["reference_mean"])}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "two_sample": self.two_sample,
                "table": self.table.to_dict(orient="records"),
                "energy_response": self.energy_response.to_dict(orient="records")}

    @classmethod
    def from_dict(cls, data: dict) -> "Fidelity":
        import pandas as pd

        return cls(pd.DataFrame(data["table"]), data["two_sample"], pd.DataFrame(data["energy_response"]))


def _bins(energy: np.ndarray) -> np.ndarray:
    return np.clip(np.digitize(energy, ENERGY_BINS[1:-1]), 0, len(BIN_LABELS) - 1)


def fidelity(reference, generated, *, seed: int = 0) -> Fidelity:
    """Compare ``generated`` showers with ``reference`` ones (see the module docstring)."""
    import pandas as pd
    from scipy.stats import ks_2samp

    from .shapes import shower_shapes

    if len(reference) < 20 or len(generated) < 20:
        raise PrunelabError(f"fidelity needs at least 20 showers on each side, got {len(reference)} reference "
                            f"and {len(generated)} generated")
    shapes_r, shapes_g = shower_shapes(reference), shower_shapes(generated)
    bins_r, bins_g = _bins(reference.energy), _bins(generated.energy)
    rows = []
    selections = [("all", np.ones(len(reference), bool), np.ones(len(generated), bool))]
    selections += [(label, bins_r == i, bins_g == i) for i, label in enumerate(BIN_LABELS)]
    for label, in_r, in_g in selections:
        if in_r.sum() < 10 or in_g.sum() < 10:
            continue  # too few showers in this bin to compare distributions
        for column in shapes_r.columns:
            a, b = shapes_r[column].to_numpy()[in_r], shapes_g[column].to_numpy()[in_g]
            rows.append({"observable": column, "energy_bin": label, "reference_events": int(in_r.sum()),
                         "generated_events": int(in_g.sum()), "wasserstein": normalised_wasserstein(a, b),
                         "ks": float(ks_2samp(a, b).statistic),
                         "reference_mean": float(a.mean()), "generated_mean": float(b.mean())})
    resp_r, resp_g = response(reference), response(generated)
    energy_rows = []
    for label, in_r, in_g in selections:
        if in_r.sum() and in_g.sum():
            energy_rows.append({"energy_bin": label, "reference_mean": float(resp_r[in_r].mean()),
                                "reference_sd": float(resp_r[in_r].std()), "generated_mean": float(resp_g[in_g].mean()),
                                "generated_sd": float(resp_g[in_g].std())})
    return Fidelity(pd.DataFrame(rows), two_sample_auc(reference, generated, seed=seed), pd.DataFrame(energy_rows))
