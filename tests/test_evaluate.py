"""Metrics against independent, loop-based reference computations."""

import numpy as np
import pytest
import torch

from mnist_lib.training.evaluate import classification_report, confusion_matrix, misclassified, per_class_metrics


@pytest.fixture
def preds():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (500,), generator=g)
    p = torch.where(torch.rand(500, generator=g) < 0.7, y, torch.randint(0, 10, (500,), generator=g))
    return y, p


def test_confusion_matrix_matches_a_loop(preds):
    y, p = preds
    ref = np.zeros((10, 10), dtype=int)
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        ref[t, q] += 1
    np.testing.assert_array_equal(confusion_matrix(y, p).numpy(), ref)


def test_per_class_metrics_match_definitions(preds):
    y, p = preds
    df = per_class_metrics(confusion_matrix(y, p))
    for c in range(10):
        tp = int(((p == c) & (y == c)).sum())
        prec = tp / int((p == c).sum())
        rec = tp / int((y == c).sum())
        assert df.loc[c, "precision"] == pytest.approx(prec)
        assert df.loc[c, "recall"] == pytest.approx(rec)
        assert df.loc[c, "f1"] == pytest.approx(2 * prec * rec / (prec + rec))
        assert df.loc[c, "support"] == int((y == c).sum())


def test_per_class_metrics_with_an_absent_class():
    cm = torch.zeros(10, 10, dtype=torch.long)
    cm[0, 0] = 5
    df = per_class_metrics(cm)
    assert df.loc[0, "f1"] == 1.0 and df.loc[3, "precision"] == 0.0 and df.loc[3, "recall"] == 0.0


def test_misclassified_lists_mistakes_by_confidence():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = torch.tensor([0, 0, 1, 1])
    df = misclassified(probs, y)
    assert df["index"].tolist() == [1, 2]
    assert df["pred"].tolist() == [1, 0] and df["true"].tolist() == [0, 1]
    assert df["confidence"].tolist() == pytest.approx([0.8, 0.6])


def test_classification_report_on_a_known_linear_model():
    model = torch.nn.Linear(3, 10, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = model.weight[1, 1] = model.weight[2, 2] = 10.0
    x = torch.eye(3).repeat(4, 1)
    y = torch.tensor([0, 1, 2] * 3 + [1, 1, 1])  # the last three: one right, two wrong
    r = classification_report(model, x, y)
    assert r.acc == pytest.approx(10 / 12)
    assert int(r.confusion.sum()) == 12 and int(r.confusion.trace()) == 10
    assert len(r.misclassified) == 2
    expected_loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert r.loss == pytest.approx(expected_loss, rel=1e-5)


def test_per_class_metrics_with_single_predictions_and_low_scores():
    # class 0: 1 predicted (right); class 1: 4 true, 1 found, 4 predicted; class 2: never true or predicted
    y = torch.tensor([0, 1, 1, 1, 1, 3, 3, 3])
    p = torch.tensor([0, 1, 3, 3, 3, 1, 1, 1])
    df = per_class_metrics(confusion_matrix(y, p, n_classes=4))
    assert df.loc[0, "precision"] == 1.0 and df.loc[0, "recall"] == 1.0 and df.loc[0, "f1"] == 1.0
    # class 1: precision 1/4, recall 1/4, so precision + recall = 0.5 < 1
    assert df.loc[1, "precision"] == pytest.approx(0.25) and df.loc[1, "f1"] == pytest.approx(0.25)
    assert (df.loc[2, "precision"], df.loc[2, "recall"], df.loc[2, "f1"]) == (0.0, 0.0, 0.0)
    assert df.loc[3, "f1"] == 0.0 and df.loc[3, "support"] == 3


def test_misclassified_frame_has_exactly_its_columns_and_keeps_ties_in_order():
    probs = torch.tensor([[0.3, 0.7], [0.3, 0.7], [0.9, 0.1], [0.3, 0.7]])
    df = misclassified(probs, torch.tensor([0, 0, 1, 0]))
    assert list(df.columns) == ["index", "true", "pred", "confidence"] and list(df.index) == [0, 1, 2, 3]
    assert df["index"].tolist() == [2, 0, 1, 3]  # 0.9 first, then the three 0.7 ties in their original order


def test_report_probabilities_are_the_softmax_of_the_logits():
    model = torch.nn.Linear(4, 10)
    x = torch.randn(6, 4)
    r = classification_report(model, x, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(r.probs, model(x).softmax(1).detach())
