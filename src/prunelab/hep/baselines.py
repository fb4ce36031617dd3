"""The classical baseline: gradient-boosted trees on shower shapes (scikit-learn's
``HistGradientBoostingClassifier``, the field's usual choice for tabular observables)."""

from __future__ import annotations

import numpy as np

from .metrics import EFFICIENCIES, rejection, roc_auc


def one_openmp_thread():
    """scikit-learn's tree fits at one OpenMP thread: beside torch's own OpenMP pool its threads
    oversubscribe the cores and a fit slows down several times (measured in
    docs/benchmarks/calo_classify.md); the fitted trees are the same."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def gradient_boosted_trees(dataset, seed: int = 0, efficiencies=EFFICIENCIES) -> dict:
    """Fit on the training and validation splits of a two-class ``dataset`` (e.g.
    ``calo_eplus_gamma_shapes``), score its test split: ROC AUC, background rejection
    at each signal efficiency, and the test scores (probability of class 1)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if dataset.num_classes != 2:
        from ..errors import PrunelabError

        raise PrunelabError(f"dataset {dataset.name!r} has {dataset.num_classes} classes; the baseline is for two")
    x = np.concatenate([dataset.train.x.numpy(), dataset.validation.x.numpy()])
    y = np.concatenate([dataset.train.y.numpy(), dataset.validation.y.numpy()])
    with one_openmp_thread():
        model = HistGradientBoostingClassifier(random_state=seed).fit(x, y)
        scores = model.predict_proba(dataset.test.x.numpy())[:, 1]
    labels = dataset.test.y.numpy()
    return {"roc_auc": roc_auc(labels, scores), "rejection": rejection(labels, scores, efficiencies), "scores": scores}


def calorimetric_energy(train, test) -> np.ndarray:
    """The classical energy estimate: the energy deposited in the three grids, linearly calibrated
    (least squares of the incident energy on it over the ``train`` showers); returns GeV for ``test``."""
    deposited = train.layer_energies.sum(axis=1) / 1000.0
    slope, offset = np.polyfit(deposited, train.energy, 1)
    return slope * test.layer_energies.sum(axis=1) / 1000.0 + offset
