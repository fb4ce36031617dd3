import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support, top_k_accuracy_score

from prunelab.tasks import Split, evaluate
from prunelab.tasks.evaluation import Evaluation, confusion_matrix


class FixedLogits(torch.nn.Module):
    """A 'model' whose outputs are given: row i of x holds the logits."""

    def forward(self, x):
        return x


def random_case(seed, n=500, k=7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.uniform(0, 2, n)  # better than chance, not perfect
    logits[:, k - 1] -= 10  # class k-1 is never predicted: zero-division path
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_match_scikit_learn(seed):
    logits, y = random_case(seed)
    names = tuple(f"c{i}" for i in range(7))
    ev = evaluate(FixedLogits(), Split(logits, y), names)
    pred = logits.argmax(1).numpy()
    p, r, f, s = precision_recall_fscore_support(y.numpy(), pred, labels=range(7), zero_division=0)
    np.testing.assert_allclose(ev.precision, p)
    np.testing.assert_allclose(ev.recall, r)
    np.testing.assert_allclose(ev.f1, f)
    np.testing.assert_array_equal(ev.support, s)
    np.testing.assert_array_equal(ev.confusion, sk_confusion(y.numpy(), pred, labels=range(7)))
    assert ev.accuracy == pytest.approx((pred == y.numpy()).mean())
    assert ev.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert ev.precision[6] == 0.0 and ev.recall[6] == 0.0


def test_top5_only_beyond_ten_classes_and_matches_scikit_learn():
    rng = np.random.default_rng(3)
    k, n = 12, 400
    logits = torch.tensor(rng.normal(size=(n, k)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, k, n))
    ev = evaluate(FixedLogits(), Split(logits, y), tuple(map(str, range(k))))
    assert ev.top_k[5] == pytest.approx(top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=range(k)))
    small = evaluate(FixedLogits(), Split(logits[:, :10], y % 10), tuple(map(str, range(10))))
    assert small.top_k == {}


def test_confusion_matrix_counts_every_example_once():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(y, p, 3)
    assert cm.sum() == 6
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_to_dict_is_json_ready():
    import json

    ev = Evaluation(0.5, 0.5, np.array([[1, 1], [0, 2]]), ("a", "b"))
    data = json.loads(json.dumps(ev.to_dict()))
    assert data["per_class"][0] == {"class": "a", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
