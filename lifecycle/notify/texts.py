"""What each alert says: the sentence on-call reads first and the commands they can run.

One small pure function per alert the loop sends (the table "Every alert the code sends" in
docs/operations.md), taking plain values so that monitors and flows, which know the verdict
or the step's outcome, only pick the function; the wording lives here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class AlertText:
    """An alert's words: its one-line ``summary`` and the ``actions`` (commands) it offers."""

    summary: str
    actions: list[str]


_MONITOR_SUMMARIES = {
    "OK": "back to normal",
    "WARN": "inputs drifted; measured quality holds",
    "DRIFT": "traffic drifted; quality not measured yet, the estimate holds",
    "QUALITY_DROP": "quality dropped: retraining advised",
    "NEEDS_LABELS": "traffic left the reference's support: labels needed",
}

#: How a summary names a check's headline quality figure (``Quality.metric`` in monitors).
_METRIC_NAMES = {"accuracy": "accuracy", "entity_f1": "entity F1"}

#: What each alerting gate outcome tells on-call: the verb, and the commands to act, as
#: templates of the specialist's ``name`` and the challenger's ``version``.
_GATE_OUTCOMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "promoted": ("promoted", ("lifecycle rollback -s {name}",)),
    "rejected": (
        "rejected",
        ("lifecycle promote -s {name} --version {version} --force   # to override the gate",),
    ),
    "ready": (
        "passed the gate (auto_promote is off)",
        ("lifecycle promote -s {name} --force   # to promote it",),
    ),
    "superseded": (
        "was superseded by the labels that arrived since its training (undecided)",
        ("lifecycle retrain -s {name}   # to train on all of them now",),
    ),
}

#: Long free text (a training error, a rejection reason) is cut so that a summary stays a line.
_SUMMARY_MAX = 500


def monitor_verdict(
    specialist: str,
    verdict: str,
    *,
    missing_labels: int = 0,
    new_traffic: str | None = None,
    proposed_labels: Mapping[str, int] | None = None,
    estimated_accuracy: float | None = None,
    measured_accuracy: float | None = None,
    metric: str = "accuracy",
) -> AlertText:
    """A monitoring check's verdict (OK, WARN, DRIFT, QUALITY_DROP, NEEDS_LABELS, ...).

    ``missing_labels`` counts for NEEDS_LABELS only; ``new_traffic`` is the headline of the
    clusters found outside the reference; the measured figure is shown beside an estimate.
    ``metric`` names the figure both are: ``accuracy`` (a classifier) or ``entity_f1`` (an
    extractor, whose figures are entity F1).
    """
    actions: list[str] = []
    if verdict == "QUALITY_DROP":
        actions.append(f"lifecycle retrain --specialist {specialist}")
        actions.append(
            f"lifecycle rollback --specialist {specialist}   # if a recent promotion caused it"
        )
    elif verdict == "NEEDS_LABELS":
        actions.append(_label_more(specialist, missing_labels))
    elif verdict in ("DRIFT", "WARN"):
        actions.append(
            f"label a sample to measure quality: POST /v1/specialists/{specialist}/feedback"
        )
    actions.append(f"lifecycle monitor --specialist {specialist}   # check again")
    summary = _MONITOR_SUMMARIES.get(verdict, verdict)
    if new_traffic is not None:
        summary += f"; {new_traffic}"
    if proposed_labels:
        shown = ", ".join(f"{label} ({n})" for label, n in list(proposed_labels.items())[:5])
        more = f" and {len(proposed_labels) - 5} more" if len(proposed_labels) > 5 else ""
        summary += f"; proposed labels: {shown}{more}"
        actions.insert(0, f"lifecycle label-requests -s {specialist}   # requests worth a label")
    if estimated_accuracy is not None:
        name = _METRIC_NAMES.get(metric, metric)
        summary += f" (estimated {name} {estimated_accuracy:.1%}"
        if measured_accuracy is not None:
            summary += f", measured {measured_accuracy:.1%}"
        summary += ")"
    return AlertText(summary, actions)


def resolved_summary(verdict: str, *, specialist: str, kind: str, since: datetime, now: str) -> str:
    """The summary of the ``RESOLVED`` alert that closes a ``verdict`` problem open since
    ``since``; ``now`` is the summary of the check that closed it."""
    opened = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{verdict} on {specialist} ({kind}) is resolved; open since {opened}. Now: {now}"
    ).strip()


def rolled_back(
    specialist: str, *, champion_version: int | None, previous_version: int | None
) -> AlertText:
    """The guardrail undid a promotion that hurt quality."""
    return AlertText(
        f"v{champion_version} hurt quality after its promotion: rolled back to v{previous_version}",
        [_status(specialist)],
    )


def gate_outcome(
    action: str,
    specialist: str,
    *,
    challenger_version: int | None,
    champion_version: int | None,
    challenger_accuracy: float | None,
    champion_accuracy: float | None,
    n_labelled: int,
    reasons: Sequence[str],
    metric: str = "accuracy",
) -> AlertText | None:
    """The gate's decision on a challenger; None for an outcome that tells nobody (waiting).
    ``metric`` names the compared figure (an extractor's is its mean F1 per request)."""
    if action not in _GATE_OUTCOMES:
        return None
    verb, templates = _GATE_OUTCOMES[action]
    if challenger_accuracy is None:  # rejected before any label: it kept failing
        evidence = reasons[-1]
    else:
        evidence = (
            f"{metric} {challenger_accuracy:.3f} vs {champion_accuracy:.3f} on "
            f"{n_labelled} labelled shadowed requests"
        )
    return AlertText(
        f"challenger v{challenger_version} {verb} against champion v{champion_version}: {evidence}",
        [t.format(name=specialist, version=challenger_version) for t in templates],
    )


def retrain_needs_labels(specialist: str, *, missing: int, reason: str) -> AlertText:
    """Too few labels to train a challenger."""
    return AlertText(
        f"retraining {specialist} needs {missing} more labels: {reason}",
        [
            _label_more(specialist, missing),
            f"lifecycle label-requests -s {specialist}   # the requests worth a label",
        ],
    )


def candidate_registered(specialist: str, *, challenger_version: int | None) -> AlertText:
    """A challenger was registered; the gateways shadow it."""
    return AlertText(
        f"challenger v{challenger_version} registered; the gateway shadows it",
        [_status(specialist)],
    )


def candidate_rejected(
    specialist: str,
    *,
    challenger_version: int | None,
    champion_version: int | None,
    reason: str,
) -> AlertText:
    """A trained candidate did not beat the champion, so it is not made challenger."""
    return AlertText(
        f"candidate v{challenger_version} not made challenger: it does not "
        f"beat champion v{champion_version} on held-out drifted labels "
        f"({reason})"[:_SUMMARY_MAX],
        [
            f"{_status(specialist)}   # the version's lifecycle.rejected_reason tag says why",
            f"collect more labels, then lifecycle retrain -s {specialist}",
        ],
    )


def retrain_failed(specialist: str, *, error: BaseException) -> AlertText:
    """Training raised; the aliases are untouched."""
    return AlertText(
        f"retraining {specialist} failed: {error}"[:_SUMMARY_MAX],
        [f"lifecycle retrain -s {specialist}   # after fixing the cause"],
    )


def _label_more(specialist: str, missing: int) -> str:
    return f"label {missing} more requests: POST /v1/specialists/{specialist}/feedback"


def _status(specialist: str) -> str:
    return f"lifecycle status -s {specialist}"
