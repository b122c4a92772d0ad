"""Evaluation of a specialist's predictions (pure: numpy and scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lifecycle.model.calibration import expected_calibration_error


@dataclass(frozen=True)
class ClassReport:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    """Quality of one model on one labelled set."""

    n: int
    accuracy: float
    macro_f1: float
    calibration_error: float
    #: Labels of the confusion matrix's rows (true) and columns (predicted).
    labels: tuple[str, ...]
    confusion: np.ndarray
    per_class: dict[str, ClassReport]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow: overall figures plus per-class precision and recall."""
        flat = {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}calibration_error": self.calibration_error,
        }
        for label, report in self.per_class.items():
            key = _metric_safe(label)
            flat[f"{prefix}precision.{key}"] = report.precision
            flat[f"{prefix}recall.{key}"] = report.recall
        return flat


def evaluate(
    true_labels: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]
) -> Evaluation:
    """Accuracy, macro-F1, per-class precision/recall, calibration error and confusion matrix.

    ``probabilities`` has one column per entry of ``labels`` (the model's label
    set). A true label outside that set (an intent the model has never seen)
    counts as an error and gets its own row in the confusion matrix.
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    truth = [str(t) for t in true_labels]
    if len(truth) != len(probabilities):
        raise ValueError("one row of probabilities per true label")
    if not truth:
        raise ValueError("cannot evaluate on an empty set")
    predicted = [labels[i] for i in np.asarray(probabilities).argmax(axis=1)]
    all_labels = list(labels) + sorted(set(truth) - set(labels))
    index = {label: i for i, label in enumerate(labels)}
    true_index = np.array([index.get(t, -1) for t in truth])
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=all_labels, zero_division=0
    )
    per_class = {
        label: ClassReport(float(p), float(r), float(f), int(s))
        for label, p, r, f, s in zip(all_labels, precision, recall, f1, support, strict=True)
    }
    present = sorted(set(truth) | set(predicted), key=all_labels.index)
    return Evaluation(
        n=len(truth),
        accuracy=float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)])),
        macro_f1=float(
            f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
        ),
        calibration_error=expected_calibration_error(np.asarray(probabilities), true_index),
        labels=tuple(all_labels),
        confusion=confusion_matrix(truth, predicted, labels=all_labels),
        per_class=per_class,
    )


def _metric_safe(label: str) -> str:
    # MLflow metric keys allow alphanumerics, _ - . / and space.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in label)
