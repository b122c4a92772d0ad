"""Drift thresholds calibrated on the champion's own reference, for a target false-alarm rate.

Hand-picked constants are wrong for every window size but one. Instead, the reference is
split at random into two halves many times; each split is a window that, by construction,
did not drift, and its scores are the null distribution of each signal. Two-sample scores
shrink with sample size like sqrt(1/n + 1/m) (the noise of an AUC or a distance between two
empirical distributions), so the null is kept standardised by that factor and rescaled to
the sizes of each real check: one calibration serves every window size.

The threshold of each of the k signals is set for a false-alarm rate of ``rate / k``
(Bonferroni), so that a window with no drift raises any signal with probability at most
``rate``. The tail is read from a normal fit of the standardised null (log-normal for
distances; ``rounds`` splits cannot resolve a 0.1 % quantile empirically) and is never below
the largest null value seen.
A floor keeps a degenerate null (a signal constant on the reference) from alarming at the
first noise: no threshold is below Evidently's own default for the method.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from monitors.drift import BY_NAME, drift_scores
from monitors.frames import MonitorData

#: 2: an extractor's reference estimate scales span confidences (monitors.entity_quality).
FORMAT = 2
#: Evidently's default thresholds for the methods used: the floor of every threshold.
EVIDENTLY_DEFAULTS = {
    "abs_text_content_drift": 0.55,
    "model": 0.55,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
}
SUPPORT_QUANTILE = 0.01


@dataclass(frozen=True)
class Thresholds:
    """A champion's calibrated thresholds and reference profile (stored with its version)."""

    false_alarm_rate: float
    rounds: int
    reference_rows: int
    #: Standardised threshold per signal: threshold = baseline + z * sqrt(1/n_ref + 1/n_cur).
    z: dict[str, float]
    null_max: dict[str, float]
    #: A window row whose embedding is less similar than this (cosine) to every reference
    #: row is outside the reference's support (the reference's own 1 % leave-one-out quantile).
    support_similarity: float | None
    #: The reference's measured quality (``metric``: a classifier's accuracy, an extractor's
    #: entity F1) and its label-free estimate (a classifier's mean confidence).
    reference_accuracy: float
    reference_confidence: float
    format: int = FORMAT
    skipped: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"

    def threshold(self, signal: str, sizes: tuple[int, int]) -> float | None:
        """The threshold of ``signal`` for a check with these (reference, window) row counts."""
        if signal not in self.z:
            return None
        d = BY_NAME[signal]
        scale = math.sqrt(1.0 / max(sizes[0], 1) + 1.0 / max(sizes[1], 1))
        calibrated = d.baseline + self.z[signal] * scale
        return max(calibrated, EVIDENTLY_DEFAULTS[d.method])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Thresholds:
        data: dict[str, Any] = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"thresholds format {data.get('format')!r}, expected {FORMAT}")
        return cls(**data)


def calibrate(
    reference: MonitorData,
    *,
    false_alarm_rate: float,
    rounds: int = 40,
    seed: int = 0,
    metric: str = "accuracy",
    quality: tuple[float, float] | None = None,
) -> Thresholds:
    """Thresholds for ``reference`` from ``rounds`` random half/half splits of it.

    Every signal the reference has columns for is calibrated (``monitors.drift.applicable``),
    an extractor's answer signals included, and all share one false-alarm budget.
    ``quality`` is the reference's measured ``metric`` and its label-free estimate; without
    it, a classifier's: accuracy on the labelled rows and mean confidence.
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be within (0, 1), got {false_alarm_rate}")
    n = len(reference)
    if n < 4:
        raise ValueError(f"a reference of {n} rows cannot be split for calibration")
    rng = np.random.default_rng(seed)
    null: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for _ in range(rounds):
        order = rng.permutation(n)
        a, b = reference.take(order[: n // 2]), reference.take(order[n // 2 :])
        scores = drift_scores(a, b)
        skipped.update(scores.skipped)
        for name, value in scores.values.items():
            sizes = scores.sizes[name]
            scale = math.sqrt(1.0 / sizes[0] + 1.0 / sizes[1])
            null.setdefault(name, []).append((value - BY_NAME[name].baseline) / scale)
    usable = {k: np.asarray(v) for k, v in null.items() if len(v) >= max(3, rounds // 2)}
    k = max(len(usable), 1)
    tail = NormalDist().inv_cdf(1.0 - false_alarm_rate / k)
    z = {name: _upper_tail(values, name, tail) for name, values in usable.items()}
    if quality is None:
        quality = accuracy_profile(reference)
    return Thresholds(
        false_alarm_rate=false_alarm_rate,
        rounds=rounds,
        reference_rows=n,
        z=z,
        null_max={name: float(values.max()) for name, values in usable.items()},
        support_similarity=support_similarity(reference.embeddings),
        reference_accuracy=quality[0],
        reference_confidence=quality[1],
        skipped={k: v for k, v in skipped.items() if k not in z},
        metric=metric,
    )


def accuracy_profile(reference: MonitorData) -> tuple[float, float]:
    """A classifier's reference quality: accuracy on its labelled rows (1.0 without any)
    and mean confidence, its label-free estimate."""
    labelled = reference.labelled
    accuracy = (
        float((labelled["true_label"] == labelled["prediction"]).mean()) if len(labelled) else 1.0
    )
    return accuracy, float(reference.frame["confidence"].mean())


def _upper_tail(values: np.ndarray, name: str, tail: float) -> float:
    """The null's upper quantile at ``tail`` standard deviations, from a fitted normal.

    Distances are positive and right-skewed (a normal fit underrates their tail), so they
    are fitted on the log scale; AUCs scatter symmetrically around 0.5 and are fitted as is.
    """
    if BY_NAME[name].baseline == 0.0 and (values > 0).all():
        logs = np.log(values)
        fitted = float(np.exp(logs.mean() + tail * logs.std(ddof=1)))
    else:
        fitted = float(values.mean() + tail * values.std(ddof=1))
    return max(fitted, float(values.max()))


def support_similarity(embeddings: np.ndarray | None) -> float | None:
    """The 1 % quantile of each reference row's cosine similarity to its nearest other row."""
    if embeddings is None:
        return None
    whole = embeddings[np.isfinite(embeddings).all(axis=1)]
    if len(whole) < 10:
        return None
    unit = normalise(whole)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return float(np.quantile(sims.max(axis=1), SUPPORT_QUANTILE))


def normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)
