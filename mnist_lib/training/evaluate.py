"""Accuracy, loss, confusion matrix, per-class metrics and misclassified examples on any split.

report = classification_report(model, x_val, y_val)
report.acc, report.confusion        # float, 10 x 10 tensor [true, predicted]
report.per_class                    # DataFrame: precision, recall, f1, support
report.misclassified.head()         # DataFrame: index, true, pred, confidence
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ..core.config import N_CLASSES
from ..core.errors import UserError
from ..data.splits import normalize

EVAL_BATCH = 8192  # large batches: no gradients are kept, memory is not the limit


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH, source: str | None = None) -> torch.Tensor:
    """Logits for every row of `x`, in eval mode (no dropout; BatchNorm on its running statistics); restores the previous mode.

    source: where a loaded model came from (a run folder or file). Given, logits that
    are not finite on the first batch are a UserError naming it: finite weights can
    still overflow (every weight at 3e38), and a NaN probability is no answer.
    """
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for chunk in x.split(batch_size):
            chunks.append(model(chunk).float())
            if source is not None and len(chunks) == 1 and not bool(torch.isfinite(chunks[0]).all()):
                raise UserError(f"{source}: the model's outputs are not finite numbers (its weights overflow); not a usable model")
        return torch.cat(chunks)
    finally:
        model.train(was_training)


def predict_proba(model: torch.nn.Module, digits: torch.Tensor, mean: float, std: float, source: str | None = None) -> torch.Tensor:
    """Class probabilities (N x classes) for uint8 N x 28 x 28 images, normalized with the run's mean and std (predict, widgets).

    source: as for predict_logits (the run the model was loaded from).
    """
    return predict_logits(model, normalize(digits, mean, std), source=source).softmax(1)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of `model` on (x, y)."""
    return _loss_acc(predict_logits(model, x, batch_size), y)


@torch.no_grad()
def evaluate_members(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH
) -> tuple[list[float], list[float]]:
    """evaluate() for each member of a population (a stacked.StackedMLP) on the shared (x, y): ([mean loss], [accuracy]).

    fp32 and eval mode, as evaluate(); the previous mode is restored.
    """
    was_training, members = model.training, model.n_members
    model.eval()
    loss = torch.zeros(members, device=x.device)
    correct = torch.zeros(members, dtype=torch.long, device=x.device)
    try:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            batch_loss, batch_correct = loss_and_correct(
                model(xb.float().flatten(1).expand(members, -1, -1)).float(), yb.expand(members, -1)
            )
            loss += batch_loss
            correct += batch_correct
    finally:
        model.train(was_training)
    return (loss / len(y)).tolist(), [c / len(y) for c in correct.tolist()]


def loss_and_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and count of correct predictions: the one evaluation rule.

    logits [N, C] and y [N] give two scalars; a population's logits [M, N, C] and
    y [M, N] give two [M] tensors, one value per member.
    """
    loss = F.cross_entropy(logits.movedim(-1, 1), y, reduction="none").sum(-1)
    return loss, (logits.argmax(-1) == y).sum(-1)


def _loss_acc(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    loss, correct = loss_and_correct(logits, y)
    return {"loss": loss.item() / len(y), "acc": correct.item() / len(y)}


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Counts [true class, predicted class]."""
    flat = y_true.long().cpu() * n_classes + y_pred.long().cpu()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_metrics(confusion: torch.Tensor, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined); a `name` column if classes are given."""
    cm = confusion.double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), 0.0)
    names = {"name": list(classes)} if classes is not None else {}
    return pd.DataFrame(
        {
            "class": range(len(cm)),
            **names,
            "precision": precision.numpy(),
            "recall": recall.numpy(),
            "f1": f1.numpy(),
            "support": actual.long().numpy(),
        }
    ).set_index("class")


def misclassified(probs: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Wrongly classified rows: index, true label, predicted label, confidence; most confident first."""
    probs, y = probs.cpu(), y.cpu()
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    df = pd.DataFrame(
        {
            "index": wrong.numpy(),
            "true": y[wrong].numpy(),
            "pred": pred[wrong].numpy(),
            "confidence": conf[wrong].numpy(),
        }
    )
    return df.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class Report:
    """Everything `classification_report` measures on one split."""

    loss: float
    acc: float
    confusion: torch.Tensor
    per_class: pd.DataFrame
    misclassified: pd.DataFrame
    probs: torch.Tensor


def classification_report(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str] | None = None, source: str | None = None
) -> Report:
    """Loss, accuracy, confusion matrix, per-class metrics (named if `classes`) and mistakes of `model` on (x, y).

    source: as for predict_logits (the run the model was loaded from).
    """
    logits = predict_logits(model, x, source=source)
    y = y.to(logits.device)
    probs = logits.softmax(1)
    cm = confusion_matrix(y, logits.argmax(1), logits.shape[1])
    return Report(
        **_loss_acc(logits, y),
        confusion=cm,
        per_class=per_class_metrics(cm, classes),
        misclassified=misclassified(probs, y),
        probs=probs.cpu(),
    )
