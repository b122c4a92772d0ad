"""The on-call message for a monitoring verdict: what drifted, by how much, what to run.

The words come from ``lifecycle.notify.texts``; this module picks out of a ``Verdict`` the
values they need, since ``lifecycle`` does not import ``monitors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.notify.message import AlertMessage
    from monitors.results import Verdict


def alert_message(spec: SpecialistSpec, verdict: Verdict) -> AlertMessage:
    """The on-call message for a verdict: what drifted, by how much, and what to run."""
    from lifecycle.notify.message import AlertMessage, AlertReason
    from lifecycle.notify.texts import monitor_verdict

    labelled = verdict.quality.labelled if verdict.quality else 0
    discovery = verdict.discovery or {}
    proposed: dict[str, int] = verdict.window.get("proposed_labels") or {}
    text = monitor_verdict(
        spec.name,
        verdict.status.value,
        missing_labels=max(spec.monitoring.min_labels - labelled, 0),
        new_traffic=discovery["headline"]
        if discovery.get("clusters") or discovery.get("surges")
        else None,
        proposed_labels=proposed,
        estimated_accuracy=None if verdict.estimate is None else verdict.estimate.accuracy,
        measured_accuracy=None if verdict.quality is None else verdict.quality.value,
        metric=verdict.quality.metric if verdict.quality else "accuracy",
    )
    window = {
        k: verdict.window.get(k)
        for k in ("rows", "labelled", "first_request", "last_request", "since", "until")
        if verdict.window.get(k) is not None
    }
    return AlertMessage(
        specialist=spec.name,
        kind="monitor",
        verdict=verdict.status.value,
        summary=text.summary,
        reasons=[
            AlertReason(signal=r.signal, value=r.value, threshold=r.threshold, detail=r.detail)
            for r in verdict.reasons
        ],
        window=window,
        champion_version=verdict.champion_version,
        report_uri=verdict.report_uri,
        actions=text.actions,
        extra=({"mlflow_run_id": verdict.run_id} if verdict.run_id else {})
        | ({"proposed_labels": proposed} if proposed else {}),
    )
