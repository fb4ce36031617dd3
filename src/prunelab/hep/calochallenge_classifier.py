"""The CaloChallenge classifier test (arXiv 2410.21611): can a network tell generated showers from reference ones?

Protocol, as the challenge's evaluation runs it:

* inputs — **low-level**: ``log10(E_inc / MeV)`` and every voxel as ``100 · E_voxel / E_inc``; **high-level**:
  ``log10(E_inc / MeV)``, ``log10(E_layer / MeV + 1e-8)``, centres of energy and widths in mm / 100, and (our
  addition, for a 3-layer detector where occupancy is what generators get wrong) the sparsity per layer;
* the high-level inputs standardised on the training split (our addition: their scales differ by orders of
  magnitude — log energies near 4 that move by hundredths beside widths near 0.3 — and raw, a small network
  missed a 10 % layer-energy scale that the separation power shows plainly); the voxels are fed as they are;
* equal numbers of showers on both sides (the larger sample is subsampled, seeded), each split 60 / 20 / 20
  into training, validation and test sets; reference showers are class 1;
* a fully connected network (LeakyReLU, 512 units per hidden layer, no dropout) trained with Adam (learning
  rate 2·10⁻⁴, batches of 1,000, binary cross-entropy) for up to 50 epochs, keeping the epoch with the
  lowest validation loss (and stopping after ``patience`` epochs without improvement);
* on the test set: the ROC AUC with a percentile bootstrap interval over test showers
  (``scipy.stats.bootstrap``, paired), per incident-energy range as well (the same network, its test
  showers in that range), and the Jensen–Shannon divergence ``(ln 2 - BCE) / ln 2`` of the probabilities
  after isotonic calibration on the validation set (0: indistinguishable, 1: fully separated).

Deterministic: same inputs and settings give the same numbers. The networks run at one torch thread by
default — CPU-cheap at these sizes, the same numbers on any machine (kernels sum in a thread-count-dependent
order), and free of the spin-waiting that two threads on a busy 2-core machine showed (a 10x slow-down).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import PrunelabError
from .metrics import energy_masks

SPLIT = (0.6, 0.2, 0.2)  # training, validation, test
MIN_EVENTS = 10  # per class, for an AUC or a comparison of distributions in one energy range


@dataclass(frozen=True)
class ClassifierSettings:
    hidden: tuple[int, ...] = (512, 512)
    epochs: int = 50
    batch_size: int = 1000
    learning_rate: float = 2e-4
    patience: int = 10
    bootstrap: int = 1000  # resamples for the AUC interval
    confidence: float = 0.95
    seed: int = 0
    threads: int | None = 1  # torch threads while training and scoring (None: as set)

    def __post_init__(self):
        problems = [name for name, ok in (("hidden", len(self.hidden) > 0 and min(self.hidden) > 0),
                                          ("epochs", self.epochs > 0), ("batch_size", self.batch_size > 0),
                                          ("learning_rate", self.learning_rate > 0), ("patience", self.patience > 0),
                                          ("bootstrap", self.bootstrap >= 100),
                                          ("confidence", 0 < self.confidence < 1),
                                          ("threads", self.threads is None or self.threads > 0)) if not ok]
        if problems:
            raise PrunelabError(f"classifier setting {problems[0]}={getattr(self, problems[0])!r} is out of range")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


def low_level_inputs(showers, table=None) -> np.ndarray:
    incident = 1000.0 * np.asarray(showers.energy, dtype=np.float64)[:, None]
    return np.column_stack([np.log10(incident), 100.0 * showers.flat() / incident]).astype(np.float32)


def high_level_inputs(showers, table) -> np.ndarray:
    incident = 1000.0 * np.asarray(showers.energy, dtype=np.float64)[:, None]
    columns = list(table.columns)
    energies = table[[c for c in columns if c.startswith("E_layer")]].to_numpy()
    lengths = table[[c for c in columns if c.startswith(("EC_", "width_"))]].to_numpy()
    sparsity = table[[c for c in columns if c.startswith("sparsity")]].to_numpy()
    return np.column_stack([np.log10(incident), np.log10(energies + 1e-8), lengths / 100.0,
                            sparsity]).astype(np.float32)


def _auc_statistic(labels, scores, axis=-1):
    """ROC AUC from ranks (ties share ranks), along ``axis``: vectorised over bootstrap resamples."""
    from scipy.stats import rankdata

    labels, scores = np.moveaxis(np.asarray(labels), axis, -1), np.moveaxis(np.asarray(scores), axis, -1)
    positive = labels > 0.5
    m = positive.sum(axis=-1)
    n = labels.shape[-1] - m
    ranks = rankdata(scores, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(axis=-1) - m * (m + 1) / 2) / (m * n)


def auc_interval(labels, scores, *, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(AUC, low, high): the ROC AUC and its percentile bootstrap interval over events (resampled in pairs)."""
    from scipy.stats import bootstrap

    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if min(int((labels > 0.5).sum()), int((labels <= 0.5).sum())) < 2:
        raise PrunelabError("an AUC interval needs at least 2 events of each class")
    auc = float(_auc_statistic(labels, scores))
    result = bootstrap((labels, scores), _auc_statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                       confidence_level=confidence, method="percentile", batch=250,
                       rng=np.random.default_rng(seed))
    return auc, float(result.confidence_interval.low), float(result.confidence_interval.high)


def _split(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    train, validation = int(SPLIT[0] * n), int(SPLIT[1] * n)
    return [order[:train], order[train:train + validation], order[train + validation:]]


def _network(inputs: int, hidden: tuple[int, ...]):
    import torch

    layers, width = [], inputs
    for units in hidden:
        layers += [torch.nn.Linear(width, units), torch.nn.LeakyReLU()]
        width = units
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))


class _Threads:
    def __init__(self, threads: int | None):
        self.threads, self.before = threads, None

    def __enter__(self):
        import torch

        if self.threads is not None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)


def _train(x_train, y_train, x_val, y_val, settings: ClassifierSettings):
    """Adam on binary cross-entropy; the weights of the epoch with the lowest validation loss."""
    import torch

    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays untouched
        torch.manual_seed(settings.seed)
        model = _network(x_train.shape[1], settings.hidden)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_val, y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)
    best_loss, best_state, best_epoch, waited, epoch = math.inf, None, 0, 0, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            loss = loss_fn(model(x_train[batch]).squeeze(1), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            validation = float(loss_fn(model(x_val).squeeze(1), y_val))
        if validation < best_loss:
            best_loss, best_state, best_epoch, waited = validation, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"epochs_trained": epoch, "best_epoch": best_epoch, "validation_loss": best_loss}


def _probabilities(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x)).squeeze(1)).double().numpy()


def jensen_shannon(labels, calibration_labels, calibration_scores, scores) -> float:
    """``(ln 2 - BCE) / ln 2`` on (``labels``, ``scores``) after isotonic calibration of the scores on the
    calibration set: the classifier's estimate of the Jensen–Shannon divergence of two equally likely classes."""
    from sklearn.isotonic import IsotonicRegression

    calibrator = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6)
    calibrator.fit(calibration_scores, calibration_labels)
    p = calibrator.predict(scores)
    y = np.asarray(labels, dtype=np.float64)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float((math.log(2) - bce) / math.log(2))


def classifier_test(x_reference: np.ndarray, x_generated: np.ndarray, energy_reference, energy_generated,
                    energy_edges, settings: ClassifierSettings = ClassifierSettings(), *,
                    standardise: bool = False) -> dict:
    """Train on 60 %, select on 20 %, test on 20 % of equally many showers per side (see the module docstring).
    ``energy_*`` are the incident energies (GeV) for the per-range AUCs; ``standardise``: scale every input to
    zero mean and unit variance on the training split."""
    if x_reference.ndim != 2 or x_generated.shape[1:] != x_reference.shape[1:]:
        raise PrunelabError(f"classifier inputs of shapes {x_reference.shape} and {x_generated.shape} differ")
    rng = np.random.default_rng(settings.seed)
    size = min(len(x_reference), len(x_generated))
    if int(SPLIT[2] * size) < MIN_EVENTS:
        raise PrunelabError(f"{size} showers per side leave {int(SPLIT[2] * size)} to test; the classifier test "
                            f"needs at least {int(np.ceil(MIN_EVENTS / SPLIT[2]))} per side")
    sides = []
    for x, energy, label in ((x_reference, energy_reference, 1.0), (x_generated, energy_generated, 0.0)):
        keep = np.sort(rng.permutation(len(x))[:size])
        x, energy = x[keep], np.asarray(energy)[keep]
        sides.append([(x[part], energy[part], np.full(len(part), label, np.float32)) for part in _split(size, rng)])
    train, validation, test = ([np.concatenate(parts) for parts in zip(*(side[k] for side in sides))]
                               for k in range(3))  # each [inputs, incident energies, labels]
    if standardise:
        mean, sd = train[0].mean(axis=0), train[0].std(axis=0)
        sd[sd == 0] = 1.0
        for part in (train, validation, test):
            part[0] = ((part[0] - mean) / sd).astype(np.float32)
    with _Threads(settings.threads):
        model, history = _train(train[0], train[2], validation[0], validation[2], settings)
        p_validation, p_test = _probabilities(model, validation[0]), _probabilities(model, test[0])
    auc, low, high = auc_interval(test[2], p_test, n_resamples=settings.bootstrap, confidence=settings.confidence,
                                  seed=settings.seed)
    by_range = []
    for label, mask in energy_masks(test[1], energy_edges)[1:]:
        y = test[2][mask]
        row = {"energy_range": label, "test_events": int(mask.sum())}
        if min(int((y == 1).sum()), int((y == 0).sum())) >= MIN_EVENTS:
            row["auc"], row["auc_low"], row["auc_high"] = auc_interval(
                y, p_test[mask], n_resamples=settings.bootstrap, confidence=settings.confidence, seed=settings.seed)
        else:
            row.update(auc=None, auc_low=None, auc_high=None)
        by_range.append(row)
    jsd = jensen_shannon(test[2], validation[2], p_validation, p_test)
    return {"auc": auc, "auc_interval": [low, high], "jsd": jsd,
            "inputs": int(train[0].shape[1]), "showers_per_side": size,
            "train_events": len(train[2]), "validation_events": len(validation[2]), "test_events": len(test[2]),
            "standardised": standardise, **history, "by_energy": by_range,
            "network": f"{train[0].shape[1]}-" + "-".join(str(h) for h in settings.hidden) + "-1, LeakyReLU"}
