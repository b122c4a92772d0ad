"""Confidence calibration: temperature scaling and calibration error (numpy and scipy)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise probabilities of (rows, classes) logits at a temperature, in float64."""
    # scipy.special costs ~0.4 s to import: only where probabilities are computed.
    from scipy.special import softmax as row_softmax

    return np.asarray(
        row_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1), dtype=np.float64
    )


def negative_log_likelihood(
    logits: NDArray[np.floating], labels: NDArray[np.integer], temperature: float
) -> float:
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def fit_temperature(
    logits: NDArray[np.floating],
    labels: NDArray[np.integer],
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """The temperature that minimises validation NLL (Guo et al., 2017).

    One scalar keeps the argmax, so accuracy is unchanged while confidences
    become usable for escalation thresholds and label-free accuracy estimates.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(float(np.log(bounds[0])), float(np.log(bounds[1]))),
        method="bounded",
    )
    fitted = float(np.exp(result.x))
    if fitted < 1.0 and bool((np.asarray(logits).argmax(axis=1) == labels).all()):
        # On a set the model gets all right, NLL only falls as T falls: the data say nothing
        # about underconfidence, and confidences of 1.0 would blind escalation and drift checks.
        return 1.0
    return fitted


def expected_calibration_error(
    probabilities: NDArray[np.floating], labels: NDArray[np.integer], *, bins: int = 15
) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(error)
