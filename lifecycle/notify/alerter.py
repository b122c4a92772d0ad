"""Alerts for on-call: whether a person needs to hear about a problem, sent, and recorded.

``Alerter.notify`` takes an ``AlertMessage``, applies the dedupe rules (``dedup``), posts its
Slack rendering (``slack``) to every configured webhook (``delivery``), and records each
alert in the traffic store. The store is also the memory of what was already said, so that
separately scheduled flow runs share one cooldown. A webhook or store outage never raises
out of ``notify``: the ``AlertOutcome`` says what happened and a warning is logged.

This package takes plain data and never imports ``monitors`` or ``flows``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lifecycle.notify.dedup import PastAlert, is_repeat, open_episode, resolved_message
from lifecycle.notify.delivery import Delivery, Webhooks
from lifecycle.notify.message import (
    FAILED,
    NO_WEBHOOK,
    OK,
    SENT,
    SKIPPED,
    SUPPRESSED,
    AlertMessage,
    oneline,
)
from lifecycle.notify.slack import slack_payload

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.store import TrafficStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertOutcome:
    """What ``notify`` did: ``status`` is sent, suppressed, failed, no_webhook or skipped."""

    status: str
    delivered: int
    attempts: int
    stored: bool
    fingerprint: str
    record_id: str | None
    deliveries: list[Delivery] = field(default_factory=list)


class Alerter:
    """Sends alerts to the configured webhooks, once per problem, and records them.

    ``store`` is the traffic store shared by every flow run (dedupe state lives there); with
    None, nothing is stored and the dedupe only remembers this process. ``webhooks`` says where
    and how to post (backoff, and the seams for tests); by default the settings' webhooks, with
    their timeout and retries.
    """

    def __init__(
        self,
        settings: Settings,
        store: TrafficStore | None = None,
        *,
        webhooks: Webhooks | None = None,
    ) -> None:
        if webhooks is None:
            webhooks = Webhooks(
                settings.alert_webhooks,
                timeout_s=settings.alert_timeout_s,
                retries=settings.alert_retries,
            )
        self.webhooks = webhooks
        self.cooldown = timedelta(seconds=settings.alert_cooldown_s)
        self.store = store
        # What this process stored: the dedupe's memory without a store, or while it is down.
        self._memory: list[tuple[str, str, PastAlert]] = []

    def __repr__(self) -> str:
        return f"Alerter(webhooks={self.webhooks!r}, store={self.store!r})"

    def notify(self, message: AlertMessage, *, now: datetime | None = None) -> AlertOutcome:
        """Tell on-call about ``message`` unless it was just said; never raises on outages."""
        now = _utc(now)
        past = self._past(message.specialist, message.kind)
        episode = open_episode(past)
        if message.verdict == OK:
            if not episode:
                return AlertOutcome(SKIPPED, 0, 0, False, message.fingerprint, None)
            message = resolved_message(
                message, verdict=episode[-1].verdict, since=episode[0].created_at
            )
        elif is_repeat(message, episode, now=now, cooldown=self.cooldown):
            log.info("alert %s suppressed: sent within the cooldown", message.title)
            return self._record(message, SUPPRESSED, [], now=now)
        deliveries = self.webhooks.deliver(slack_payload(message))
        if not self.webhooks.urls:
            status = NO_WEBHOOK
            log.info("alert %s stored only: no LIFECYCLE_ALERT_WEBHOOKS set", message.title)
        else:
            status = SENT if any(d.ok for d in deliveries) else FAILED
        return self._record(message, status, deliveries, now=now)

    def history(self, specialist: str, *, kind: str | None = None) -> pd.DataFrame:
        """Alerts stored for a specialist, oldest first (the store's frame; ``status`` added)."""
        import pandas as pd

        if self.store is None:
            rows = [
                {"specialist": s, "kind": k, **asdict(p)}
                for s, k, p in self._memory
                if s == specialist
            ]
            frame = pd.DataFrame(rows)
        else:
            frame = self.store.alerts(specialist)
            frame["status"] = [p.get("status") for p in frame["payload"]]
        if kind is not None and not frame.empty:
            frame = frame[frame["kind"] == kind].reset_index(drop=True)
        return frame

    def _past(self, specialist: str, kind: str) -> list[PastAlert]:
        """Stored alerts of (specialist, kind), oldest first; this process's memory if the
        store cannot be read (so an outage means at worst a repeated alert, never silence)."""
        remembered = [p for s, k, p in self._memory if (s, k) == (specialist, kind)]
        if self.store is None:
            return remembered
        try:
            frame = self.store.alerts(specialist)
        except Exception as exc:  # an outage must not stop the alert itself
            log.warning("alert history unreadable (%s); deduping from memory", oneline(exc))
            return remembered
        return [
            PastAlert(
                verdict=str(row.verdict),
                status=str(row.payload.get("status", SENT)),
                fingerprint=str(row.payload.get("fingerprint", "")),
                created_at=row.created_at.to_pydatetime(),
            )
            for row in frame.itertuples(index=False)
            if row.kind == kind
        ]

    def _record(
        self, message: AlertMessage, status: str, deliveries: list[Delivery], *, now: datetime
    ) -> AlertOutcome:
        """Store the alert with how it went, and sum it up as an ``AlertOutcome``."""
        fingerprint = message.fingerprint
        self._memory.append(
            (
                message.specialist,
                message.kind,
                PastAlert(message.verdict, status, fingerprint, now),
            )
        )
        record_id = self._store(message, status, deliveries, now=now)
        return AlertOutcome(
            status=status,
            delivered=sum(d.ok for d in deliveries),
            attempts=sum(d.attempts for d in deliveries),
            stored=record_id is not None,
            fingerprint=fingerprint,
            record_id=record_id,
            deliveries=deliveries,
        )

    def _store(
        self, message: AlertMessage, status: str, deliveries: list[Delivery], *, now: datetime
    ) -> str | None:
        if self.store is None:
            return None
        payload = message.model_dump(mode="json")
        payload |= {
            "fingerprint": message.fingerprint,
            "status": status,
            "delivery": [d.as_json() for d in deliveries],
        }
        try:
            from lifecycle.store.records import AlertRecord

            record = AlertRecord(
                specialist=message.specialist,
                kind=message.kind,
                verdict=message.verdict,
                payload=payload,
                created_at=now,
            )
            self.store.insert_alerts([record])
        except Exception as exc:  # the alert went out (or not) either way; say so, go on
            log.warning(
                "alert %s (%s) not stored in the traffic store: %s",
                message.title,
                status,
                oneline(exc),
            )
            return None
        return record.id


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return now.astimezone(UTC)
