"""When a person needs to hear about a problem: the dedupe and resolution rules, pure.

- the same problem (same specialist, kind, verdict and set of signals: its ``fingerprint``)
  is not sent again within the cooldown; it is stored as ``suppressed``;
- an ``OK`` verdict closes an open problem with a ``RESOLVED`` message, and is silent otherwise.

The history these rules read is kept by ``alerter`` (the traffic store, or its own memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lifecycle.notify.message import NO_WEBHOOK, RESOLVED, SENT, SUPPRESSED, AlertMessage
from lifecycle.notify.texts import resolved_summary


@dataclass(frozen=True)
class PastAlert:
    """One stored alert of a (specialist, kind), as the dedupe needs it."""

    verdict: str
    status: str
    fingerprint: str
    created_at: datetime


def open_episode(past: list[PastAlert]) -> list[PastAlert]:
    """The alerts since the last RESOLVED: a problem is open while this is not empty."""
    for i in range(len(past) - 1, -1, -1):
        if past[i].verdict == RESOLVED:
            return past[i + 1 :]
    return past


def is_repeat(
    message: AlertMessage, episode: list[PastAlert], *, now: datetime, cooldown: timedelta
) -> bool:
    """True when the last attempt to tell someone was this same problem, within the cooldown.

    Suppressed rows do not count: they would push the cooldown forward for ever. A failed
    attempt does count, and is not a repeat: the next run tries again.
    """
    told = [p for p in episode if p.status != SUPPRESSED]
    if not told:
        return False
    last = told[-1]
    return (
        last.status in (SENT, NO_WEBHOOK)
        and last.fingerprint == message.fingerprint
        and now - last.created_at < cooldown
    )


def resolved_message(ok: AlertMessage, *, verdict: str, since: datetime) -> AlertMessage:
    """The ``RESOLVED`` message that closes a ``verdict`` problem open since ``since``,
    built from the ``OK`` check that closed it (its window, champion and report)."""
    summary = resolved_summary(
        verdict, specialist=ok.specialist, kind=ok.kind, since=since, now=ok.summary
    )
    return ok.model_copy(
        update={
            "verdict": RESOLVED,
            "summary": summary,
            "reasons": [],
            "actions": [],
            "extra": {
                **ok.extra,
                "resolved_verdict": verdict,
                "open_since": since.isoformat(),
            },
        }
    )
