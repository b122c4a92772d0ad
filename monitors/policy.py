"""From measurements to one Verdict: a pure function, the whole monitoring policy in one place.

- Too little traffic: NEEDS_DATA.
- Quality fell (measured on people's labels when there are enough, else estimated from the
  confidences) by more than the spec's ``quality_drop``: QUALITY_DROP, the only verdict that
  asks for retraining.
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
    common: dict[str, Any] = {
        "specialist": specialist,
        "champion_version": champion_version,
        "window": window,
        "signals": tuple(signals),
        "quality": quality,
        "estimate": estimate,
        "reference": {"accuracy": reference_accuracy, "confidence": reference_confidence},
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
    if quality.accuracy is not None:
        assert quality.accuracy_ci is not None
        # Significant as well as large: the interval must clear the reference.
        if quality.accuracy < floor and quality.accuracy_ci[1] < reference_accuracy:
            reason = Reason(
                "accuracy",
                quality.accuracy,
                floor,
                f"measured on {quality.labelled} labelled requests, 95% CI "
                f"[{quality.accuracy_ci[0]:.3f}, {quality.accuracy_ci[1]:.3f}]",
            )
            return Verdict(status=Status.QUALITY_DROP, reasons=(reason, *drifted), **common)
        if drifted:
            return Verdict(status=Status.WARN, reasons=tuple(drifted), **common)
        return Verdict(status=Status.OK, reasons=(), **common)

    if estimate is not None:
        estimated_floor = reference_confidence - quality_drop
        if estimate.accuracy < estimated_floor:
            reason = Reason(
                "estimated_accuracy",
                estimate.accuracy,
                estimated_floor,
                f"mean calibrated confidence, no labels (reference {reference_confidence:.3f})",
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
