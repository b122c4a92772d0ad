"""Temperature scaling, calibration error and evaluation metrics (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from lifecycle.model.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)
from lifecycle.training.evaluate import evaluate


def _overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is right 70% of the time but says ~99%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    predicted = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 4, size=n))
    logits = rng.normal(0, 0.5, size=(n, 4))
    logits[np.arange(n), predicted] += 8.0
    return logits, labels


def test_temperature_fixes_overconfidence() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t > 2.0
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert before > 0.2
    assert after < 0.05
    assert negative_log_likelihood(logits, labels, t) < negative_log_likelihood(logits, labels, 1.0)
    # One scalar cannot change the argmax, hence not the accuracy.
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()


def test_temperature_of_empty_set_is_neutral() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_a_perfectly_separated_set_does_not_sharpen() -> None:
    # All right with margin: NLL falls as T falls, towards the bound; keep T = 1 instead.
    logits = np.array([[3.0, 0.0], [0.0, 3.0]] * 50)
    labels = np.array([0, 1] * 50)
    assert fit_temperature(logits, labels) == 1.0


def test_an_underconfident_model_is_sharpened() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=3000)
    logits = rng.normal(0, 0.3, size=(3000, 3))
    logits[np.arange(3000), labels] += 0.6  # right most of the time, but says ~45%
    wrong = rng.random(3000) < 0.1
    logits[wrong] = rng.normal(0, 0.3, size=(int(wrong.sum()), 3))
    t = fit_temperature(logits, labels)
    assert 0.05 < t < 1.0


def test_evaluate_counts_unknown_labels_as_errors() -> None:
    labels = ["a", "b"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    ev = evaluate(["a", "b", "b", "new"], probs, labels)
    assert ev.accuracy == pytest.approx(0.5)
    assert ev.labels == ("a", "b", "new")
    assert ev.confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert ev.per_class["a"].precision == pytest.approx(0.5)
    assert ev.per_class["b"].recall == pytest.approx(0.5)
    metrics = ev.metrics("val.")
    assert metrics["val.accuracy"] == pytest.approx(0.5)
    assert "val.recall.new" in metrics


def test_evaluate_rejects_mismatched_and_empty_input() -> None:
    with pytest.raises(ValueError, match="one row"):
        evaluate(["a"], np.zeros((2, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        evaluate([], np.zeros((0, 2)), ["a", "b"])
