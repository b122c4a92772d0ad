"""The on-call message for a monitoring verdict: what drifted, by how much, what to run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitors.results import Status, Verdict

if TYPE_CHECKING:
    from lifecycle.config.spec import SpecialistSpec


def alert_message(spec: SpecialistSpec, verdict: Verdict) -> Any:
    """The on-call message for a verdict: what drifted, by how much, and what to run."""
    from lifecycle.notify.alerts import AlertMessage, AlertReason

    name = spec.name
    actions: list[str] = []
    if verdict.status is Status.QUALITY_DROP:
        actions.append(f"lifecycle retrain --specialist {name}")
        actions.append(
            f"lifecycle rollback --specialist {name}   # if a recent promotion caused it"
        )
    elif verdict.status is Status.NEEDS_LABELS:
        missing = max(
            spec.monitoring.min_labels - (verdict.quality.labelled if verdict.quality else 0), 0
        )
        actions.append(f"label {missing} more requests: POST /v1/specialists/{name}/feedback")
    elif verdict.status in (Status.DRIFT, Status.WARN):
        actions.append(f"label a sample to measure quality: POST /v1/specialists/{name}/feedback")
    actions.append(f"lifecycle monitor --specialist {name}   # check again")
    est = verdict.estimate
    summary = {
        Status.OK: "back to normal",
        Status.WARN: "inputs drifted; measured quality holds",
        Status.DRIFT: "traffic drifted; quality not measured yet, the estimate holds",
        Status.QUALITY_DROP: "quality dropped: retraining advised",
        Status.NEEDS_LABELS: "traffic left the reference's support: labels needed",
    }.get(verdict.status, verdict.status.value)
    if verdict.discovery and verdict.discovery.get("clusters"):
        summary += f"; {verdict.discovery['headline']}"
    proposed: dict[str, int] = verdict.window.get("proposed_labels") or {}
    if proposed:
        shown = ", ".join(f"{label} ({n})" for label, n in list(proposed.items())[:5])
        more = f" and {len(proposed) - 5} more" if len(proposed) > 5 else ""
        summary += f"; proposed labels: {shown}{more}"
        actions.insert(0, f"lifecycle label-requests -s {name}   # requests worth a label")
    if est is not None:
        summary += f" (estimated accuracy {est.accuracy:.1%}"
        if verdict.quality and verdict.quality.accuracy is not None:
            summary += f", measured {verdict.quality.accuracy:.1%}"
        summary += ")"
    window = {
        k: verdict.window.get(k)
        for k in ("rows", "labelled", "first_request", "last_request", "since", "until")
        if verdict.window.get(k) is not None
    }
    return AlertMessage(
        specialist=name,
        kind="monitor",
        verdict=verdict.status.value,
        summary=summary,
        reasons=[
            AlertReason(signal=r.signal, value=r.value, threshold=r.threshold, detail=r.detail)
            for r in verdict.reasons
        ],
        window=window,
        champion_version=verdict.champion_version,
        report_uri=verdict.report_uri,
        actions=actions,
        extra=({"mlflow_run_id": verdict.run_id} if verdict.run_id else {})
        | ({"proposed_labels": proposed} if proposed else {}),
    )
