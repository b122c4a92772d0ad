"""An extractor's quality: entity F1 measured on people's corrections, estimated without them.

Measured: exact-span micro-F1 over the corrected requests (the convention of
``lifecycle.extraction.metrics``: a span counts when label, start and end all match), with a
percentile bootstrap that resamples requests, not spans: people correct whole requests, and
the spans of one request succeed or fail together. Exact match (every span of a request
right, none missing) comes with a Wilson interval.

Estimated, without labels: F1 = 2 TP / (predicted + gold), and each part has an expectation.

- E[TP] = the sum of the predicted spans' confidences: a calibrated confidence is the chance
  that the span is exactly right. Span confidences come from per-piece tag probabilities
  calibrated by one temperature, not from spans scored as wholes, and can be off by a steady
  factor (a SNIPS champion's spans were wrong 0.64 times as often as their doubt said, which
  put the estimate 7.6 points under the measured F1 on its own reference). So the doubt,
  spans minus their confidences, is scaled by the reference's wrong spans per unit of it:
  E[wrong] = r x (predicted - sum of confidences), E[TP] = predicted - E[wrong], within
  [0, predicted] per request. Scaling the doubt rather than the confidences keeps a sure
  span sure (a confidence of 0.99 cannot stand for more than one right span).
- predicted = the number of predicted spans (known), so E[FP] = predicted - E[TP].
- E[gold] = E[TP] + E[missed]. Missed gold spans are of two sorts, each scaled by a ratio
  measured on the champion's reference, where the truth is known:
  - a wrong span usually stands for a gold one (a boundary one word short, a wrong label):
    E[boundary misses] = a x E[FP], a = (gold spans missed under a wrong predicted span) /
    (wrong predicted spans) on the reference;
  - a span the model did not mark at all leaves a trace only in the request's confidence,
    the probability of its whole answer: what the spans' confidences do not explain of it
    (``outside_error`` in ``monitors.entities``) is the chance something outside the spans
    is wrong. E[unmarked misses] = k x the window's sum of that chance, k = unmarked misses
    / the same sum on the reference. Without that trace (no request confidence), the
    reference's unmarked misses per request.

On the reference itself the estimate equals the measured F1 whenever the confidences are
calibrated there (both ratios are fitted on it), so a gap between them shows miscalibration;
in a window the estimate follows changes in confidence, in the number and length of spans
and in the doubt outside them. What it cannot see, it says in ``ASSUMPTIONS``: above all, a
field the model was never taught is found nowhere and doubted nowhere, so the estimate stays
where it was while the true F1 falls; the drift signals and people's labels catch that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitors.frames import MonitorData
from monitors.results import Estimate, Quality

BOOTSTRAP_ROUNDS = 300
METRIC = "entity_f1"
ASSUMPTIONS = (
    "span confidences are calibrated (as on the reference)",
    "a wrong span stands for a missed gold span as often as on the reference",
    "spans the model marks nowhere are as many, per unit of the doubt its confidence leaves "
    "outside its spans, as on the reference",
    "a field the model was never taught is invisible: missing it lowers the true F1, not this",
)
NO_REFERENCE_TRUTH = "the reference has no corrected spans: missed spans are not estimated"


def measured_entity_quality(
    data: MonitorData, *, min_labels: int, confidence: float = 0.95
) -> Quality:
    """Entity micro-F1 and exact match (with intervals) on the requests a person corrected."""
    from scipy.stats import binomtest

    rows = _scored(data)
    n = int(rows.sum())
    if n < min_labels or n == 0:
        return Quality(labelled=n, metric=METRIC)
    frame = data.frame[rows]
    f1, f1_ci = micro_f1_with_ci(
        frame["correct_count"].to_numpy(dtype=float),
        frame["n_entities"].to_numpy(dtype=float),
        frame["gold_count"].to_numpy(dtype=float),
        confidence=confidence,
    )
    exact = int(frame["exact"].sum())
    ci = binomtest(exact, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Quality(
        labelled=n,
        entity_f1=f1,
        entity_f1_ci=f1_ci,
        exact_match=exact / n,
        exact_match_ci=(float(ci.low), float(ci.high)),
        metric=METRIC,
    )


def micro_f1_with_ci(
    correct: np.ndarray,
    predicted: np.ndarray,
    gold: np.ndarray,
    *,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Micro-F1 from per-request counts, and its percentile bootstrap over requests."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(BOOTSTRAP_ROUNDS, len(correct)))
    values = f1_of(correct[idx].sum(axis=1), predicted[idx].sum(axis=1), gold[idx].sum(axis=1))
    lo, hi = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    point = float(f1_of(correct.sum(), predicted.sum(), gold.sum()))
    return point, (float(lo), float(hi))


def f1_of(
    tp: np.ndarray | float, predicted: np.ndarray | float, gold: np.ndarray | float
) -> np.ndarray:
    """2 TP / (predicted + gold), element-wise; 1.0 where nothing was there nor predicted."""
    tp, denom = np.asarray(tp, dtype=float), np.asarray(predicted, dtype=float) + gold
    return np.divide(2 * tp, denom, out=np.ones_like(denom, dtype=float), where=denom > 0)


@dataclass(frozen=True, slots=True)
class MissModel:
    """The reference's ratios behind E[TP] and E[missed] (module docstring)."""

    #: Gold spans missed under a wrong predicted span, per wrong predicted span.
    boundary_share: float
    #: Unmarked misses per unit of ``outside_error``; None when the reference has no such doubt.
    per_outside_error: float | None
    #: Unmarked misses per request: the fallback for rows without ``outside_error``.
    per_request: float
    #: Reference requests with a correction behind the ratios.
    rows: int
    #: Wrong spans per unit of doubt (spans minus their confidences); 1.0: calibrated.
    wrong_per_doubt: float = 1.0


def fit_miss_model(reference: MonitorData) -> MissModel:
    """The ratios, measured on the reference's corrected requests."""
    frame = reference.frame[_scored(reference) & _answered(reference)]
    if not len(frame):
        return MissModel(boundary_share=1.0, per_outside_error=None, per_request=0.0, rows=0)
    wrong = float((frame["n_entities"] - frame["correct_count"]).sum())
    missed = float((frame["gold_count"] - frame["correct_count"]).sum())
    boundary = float(frame["boundary_misses"].sum())
    unmarked = max(missed - boundary, 0.0)
    doubt = float(frame["outside_error"].fillna(0.0).sum())
    span_doubt = float((frame["n_entities"] - frame["confidence_sum"]).sum())
    return MissModel(
        # No wrong span on the reference: nothing to measure; one gold span per wrong span
        # is what a boundary or label error is.
        boundary_share=boundary / wrong if wrong > 0 else 1.0,
        per_outside_error=unmarked / doubt if doubt > 0 else None,
        per_request=unmarked / len(frame),
        rows=len(frame),
        # No doubt on the reference: nothing to scale, the confidences are taken as they are.
        wrong_per_doubt=wrong / span_doubt if span_doubt > 0 else 1.0,
    )


def expected_counts(
    data: MonitorData, model: MissModel, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per answered request (of ``rows``, a mask): E[TP], predicted spans and E[gold]."""
    keep = _answered(data) if rows is None else _answered(data) & rows
    frame = data.frame[keep]
    predicted = frame["n_entities"].to_numpy(dtype=float)
    span_doubt = predicted - frame["confidence_sum"].to_numpy(dtype=float)
    tp = np.clip(predicted - model.wrong_per_doubt * span_doubt, 0.0, predicted)
    doubt = frame["outside_error"].to_numpy(dtype=float)
    if model.per_outside_error is None:
        unmarked = np.full(len(frame), model.per_request)
    else:
        unmarked = np.where(np.isfinite(doubt), model.per_outside_error * doubt, model.per_request)
    gold = tp + model.boundary_share * (predicted - tp) + unmarked
    return tp, predicted, gold


def estimate_entity_f1(
    data: MonitorData,
    model: MissModel,
    *,
    base: Estimate | None = None,
    min_labels: int = 10,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate | None:
    """The window's label-free entity F1, its bootstrap interval over requests, and where
    at least ``min_labels`` requests were corrected, the measured F1 on them and the
    estimate's error on those same requests. ``base`` (the open-world estimate, when the
    champion has a detector) lends its out-of-support and out-of-scope shares."""
    tp, predicted, gold = expected_counts(data, model)
    if not len(tp):
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tp), size=(BOOTSTRAP_ROUNDS, len(tp)))
    values = f1_of(tp[idx].sum(axis=1), predicted[idx].sum(axis=1), gold[idx].sum(axis=1))
    lo, hi = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    value = float(f1_of(tp.sum(), predicted.sum(), gold.sum()))
    measured = error = None
    labelled = _scored(data) & _answered(data)
    if int(labelled.sum()) >= max(min_labels, 1):
        frame = data.frame[labelled]
        measured = float(
            f1_of(
                frame["correct_count"].sum(), frame["n_entities"].sum(), frame["gold_count"].sum()
            )
        )
        l_tp, l_pred, l_gold = expected_counts(data, model, labelled)
        error = float(f1_of(l_tp.sum(), l_pred.sum(), l_gold.sum())) - measured
    return Estimate(
        accuracy=value,
        accuracy_low=float(lo),
        accuracy_high=float(hi),
        out_of_support=base.out_of_support if base is not None else 0.0,
        out_of_scope=base.out_of_scope if base is not None else None,
        method="label-free",
        label_free=value,
        assumptions=ASSUMPTIONS if model.rows else (*ASSUMPTIONS, NO_REFERENCE_TRUTH),
        metric=METRIC,
        measured=measured,
        error=error,
    )


def reference_entity_quality(reference: MonitorData) -> tuple[float, float]:
    """The reference's measured entity F1 (1.0 without corrections, as a classifier's
    accuracy is) and its label-free estimate: what a window's figures are compared with."""
    rows = _scored(reference)
    frame = reference.frame[rows]
    measured = (
        float(
            f1_of(
                frame["correct_count"].sum(), frame["n_entities"].sum(), frame["gold_count"].sum()
            )
        )
        if len(frame)
        else 1.0
    )
    tp, predicted, gold = expected_counts(reference, fit_miss_model(reference))
    estimated = float(f1_of(tp.sum(), predicted.sum(), gold.sum())) if len(tp) else measured
    return measured, estimated


def _scored(data: MonitorData) -> np.ndarray:
    """Requests with a person's spans and a readable answer."""
    frame = data.frame
    return (frame["gold_count"].notna() & frame["n_entities"].notna()).to_numpy()


def _answered(data: MonitorData) -> np.ndarray:
    """Requests whose answer the estimate can read: spans with confidences."""
    frame = data.frame
    return (frame["confidence_sum"].notna() & frame["n_entities"].notna()).to_numpy()
