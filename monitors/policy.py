"""From measurements to one Verdict: a pure function, the whole monitoring policy in one place.

- Too little traffic: NEEDS_DATA.
- Quality fell (measured on people's labels when there are enough, else estimated from the
  confidences) by more than the spec's ``quality_drop``: QUALITY_DROP, the only verdict that
  asks for retraining. Quality is the kind's headline figure (``Quality.metric``): a
  classifier's accuracy, an extractor's entity F1; the same rules apply to both.
- A signal drifted but measured quality holds: WARN. A label-prior shift lands here (or in
  DRIFT without labels): the model is still right, so retraining would buy nothing.
- A signal drifted, no labels to measure quality, and the estimate holds: DRIFT, unless much
  of the traffic lies outside the reference's support, where confidences cannot be trusted:
  then NEEDS_LABELS, with how many are missing.
- Nothing drifted: OK.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitors.results import Estimate, Quality, Reason, SignalResult, Status, Verdict

#: What each label-free estimate rests on, for the reason a verdict gives.
_ESTIMATE_BASIS = {
    "accuracy": "mean calibrated confidence",
    "entity_f1": "expected F1 from calibrated span confidences",
}


def decide(
    *,
    specialist: str,
    champion_version: int | None,
    window: dict[str, Any],
    signals: Sequence[SignalResult],
    quality: Quality,
    estimate: Estimate | None,
    reference_accuracy: float,
    reference_confidence: float,
    quality_drop: float,
    min_window: int,
    min_labels: int,
) -> Verdict:
    rows = int(window.get("rows", 0))
    metric = quality.metric
    # A classifier's label-free reference is its mean confidence, as the verdict JSON had it.
    label_free = "confidence" if metric == "accuracy" else f"estimated_{metric}"
    common: dict[str, Any] = {
        "specialist": specialist,
        "champion_version": champion_version,
        "window": window,
        "signals": tuple(signals),
        "quality": quality,
        "estimate": estimate,
        "reference": {metric: reference_accuracy, label_free: reference_confidence},
    }
    if rows < min_window:
        reason = Reason("window_rows", float(rows), float(min_window), "fewer requests than needed")
        return Verdict(status=Status.NEEDS_DATA, reasons=(reason,), **common)

    drifted = [
        Reason(s.name, s.score, s.threshold, f"{s.method} score over its calibrated threshold")
        for s in signals
        if s.drifted
    ]
    floor = reference_accuracy - quality_drop
    measured, interval = quality.value, quality.interval
    if measured is not None:
        assert interval is not None
        # Significant as well as large: the interval must clear the reference.
        if measured < floor and interval[1] < reference_accuracy:
            reason = Reason(
                metric,
                measured,
                floor,
                f"measured on {quality.labelled} labelled requests, 95% CI "
                f"[{interval[0]:.3f}, {interval[1]:.3f}]",
            )
            return Verdict(status=Status.QUALITY_DROP, reasons=(reason, *drifted), **common)
        if drifted:
            return Verdict(status=Status.WARN, reasons=tuple(drifted), **common)
        return Verdict(status=Status.OK, reasons=(), **common)

    if estimate is not None:
        estimated_floor = reference_confidence - quality_drop
        if estimate.accuracy < estimated_floor:
            basis = _ESTIMATE_BASIS.get(estimate.metric, "label-free estimate")
            reason = Reason(
                f"estimated_{estimate.metric}",
                estimate.accuracy,
                estimated_floor,
                f"{basis}, no labels (reference {reference_confidence:.3f})",
            )
            return Verdict(status=Status.QUALITY_DROP, reasons=(reason, *drifted), **common)
    if not drifted:
        return Verdict(status=Status.OK, reasons=(), **common)
    if estimate is not None and estimate.accuracy - estimate.accuracy_low > quality_drop:
        missing = max(min_labels - quality.labelled, 0)
        reason = Reason(
            "out_of_support_share",
            estimate.out_of_support,
            quality_drop,
            f"traffic unlike anything in the reference; {missing} more labels needed to "
            "measure quality",
        )
        return Verdict(status=Status.NEEDS_LABELS, reasons=(reason, *drifted), **common)
    return Verdict(status=Status.DRIFT, reasons=tuple(drifted), **common)
