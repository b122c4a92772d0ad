"""Quality of a window: measured where people's labels arrived, estimated where they did not.

Measured: accuracy with a Wilson interval (scipy) and macro-F1 with a percentile bootstrap
over the labelled rows. Estimated: in the spirit of NannyML's CBPE, the expected accuracy of
a calibrated classifier is its mean confidence; CBPE itself handles tabular models only,
and here the probabilities come from the temperature fitted on the champion's validation
set. Confidences say nothing about classes the model has never seen, so a second figure
counts every row outside the reference's support (no close reference neighbour) as wrong:
between the two lies the truth when new classes arrive.
"""

from __future__ import annotations

import numpy as np

from monitors.frames import MonitorData
from monitors.results import Estimate, Quality
from monitors.thresholds import normalise

#: Labelled rows needed before measured quality is reported and trusted.
BOOTSTRAP_ROUNDS = 300
_CHUNK = 4096


def measured_quality(data: MonitorData, *, min_labels: int, confidence: float = 0.95) -> Quality:
    """Accuracy and macro-F1 (with intervals) on rows with a person's label."""
    from scipy.stats import binomtest

    labelled = data.labelled
    n = len(labelled)
    if n < min_labels or n == 0:
        return Quality(labelled=n)
    truth = labelled["true_label"].astype(str).to_numpy()
    pred = labelled["prediction"].astype(str).to_numpy()
    correct = int((truth == pred).sum())
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    f1, f1_ci = _macro_f1_with_ci(truth, pred, confidence=confidence)
    return Quality(
        labelled=n,
        accuracy=correct / n,
        accuracy_ci=(float(ci.low), float(ci.high)),
        macro_f1=f1,
        macro_f1_ci=f1_ci,
    )


def _macro_f1_with_ci(
    truth: np.ndarray, pred: np.ndarray, *, confidence: float, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    # Macro-F1 over the labels that occur in truth or prediction, as sklearn does; the
    # bootstrap resamples rows and recomputes from confusion counts (vectorised: 100k rows
    # x 300 rounds stays around a second).
    classes, codes = np.unique(np.concatenate([truth, pred]), return_inverse=True)
    k = len(classes)
    t, p = codes[: len(truth)], codes[len(truth) :]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(BOOTSTRAP_ROUNDS, len(t)))
    values = np.array([_f1(t[i], p[i], k) for i in idx])
    lo, hi = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return _f1(t, p, k), (float(lo), float(hi))


def _f1(t: np.ndarray, p: np.ndarray, k: int) -> float:
    tp = np.bincount(t[t == p], minlength=k).astype(float)
    support = np.bincount(t, minlength=k).astype(float)
    predicted = np.bincount(p, minlength=k).astype(float)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def estimated_quality(
    data: MonitorData,
    *,
    reference_embeddings: np.ndarray | None,
    support_similarity: float | None,
) -> Estimate | None:
    """CBPE-style accuracy from the confidences, and its bound for unseen classes."""
    confidence = data.frame["confidence"].to_numpy(dtype=float)
    finite = np.isfinite(confidence)
    if not finite.any():
        return None
    conf = np.clip(confidence[finite], 0.0, 1.0)
    estimate = float(conf.mean())
    outside = np.zeros(len(conf), dtype=bool)
    if (
        reference_embeddings is not None
        and support_similarity is not None
        and data.embeddings is not None
        and data.embeddings.shape[1] == reference_embeddings.shape[1]
    ):
        nearest = nearest_similarity(data.embeddings[finite], reference_embeddings)
        # A row without an embedding cannot be placed: it is not counted as outside.
        outside = np.nan_to_num(nearest, nan=1.0) < support_similarity
    low = float(np.where(outside, 0.0, conf).mean())
    return Estimate(accuracy=estimate, accuracy_low=low, out_of_support=float(outside.mean()))


def nearest_similarity(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to its nearest reference row (NaN for a NaN row)."""
    ref = normalise(reference[np.isfinite(reference).all(axis=1)])
    out = np.full(len(rows), np.nan)
    for start in range(0, len(rows), _CHUNK):
        block = rows[start : start + _CHUNK]
        ok = np.isfinite(block).all(axis=1)
        if ok.any():
            out[start : start + _CHUNK][ok] = (normalise(block[ok]) @ ref.T).max(axis=1)
    return out
