"""Alerts for on-call: what went wrong, the evidence, and the command that fixes it.

Monitors and flows describe a problem as plain data (``AlertMessage``); ``Alerter.notify``
decides whether a person needs to hear about it, posts Slack-compatible JSON to every
configured webhook, and records each alert in the traffic store. The store is also the
memory of what was already said, so that separately scheduled flow runs share one cooldown:

- the same problem (same specialist, kind, verdict and set of signals: its ``fingerprint``)
  is not sent again within ``alert_cooldown_s``; it is stored as ``suppressed``;
- an ``OK`` verdict closes an open problem with a ``RESOLVED`` message, and is silent otherwise;
- a webhook or store outage never raises out of ``notify``: the ``AlertOutcome`` says what
  happened and a warning is logged (webhook URLs carry tokens, so logs name the host only).

This module takes plain data and never imports ``monitors`` or ``flows``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.store import TrafficStore

log = logging.getLogger(__name__)

OK = "OK"
RESOLVED = "RESOLVED"
#: Outcome statuses. ``sent``: at least one webhook accepted; ``failed``: none did;
#: ``no_webhook``: none configured (stored only); ``skipped``: nothing to say (OK, nothing open).
SENT, SUPPRESSED, FAILED, NO_WEBHOOK, SKIPPED = (
    "sent",
    "suppressed",
    "failed",
    "no_webhook",
    "skipped",
)
#: Slack's limits (api.slack.com/reference/block-kit/blocks): longer text is refused.
_HEADER_MAX, _SECTION_MAX, _FIELD_MAX, _TEXT_MAX = 150, 3000, 2000, 3000
_ERROR_BODY_MAX = 200
_USER_AGENT = "lifecycle-alerts/1"


# -- the message ---------------------------------------------------------------------------


class AlertReason(BaseModel):
    """One piece of evidence: a signal, its value and the threshold it crossed."""

    model_config = ConfigDict(frozen=True)

    signal: str
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    @field_validator("value", "threshold")
    @classmethod
    def _finite(cls, number: float | None) -> float | None:
        # NaN/inf cannot be stored as JSON (the store refuses them); "unknown" is honest.
        return number if number is None or math.isfinite(number) else None


class AlertMessage(BaseModel):
    """What on-call reads: the problem, its evidence, where the report is, what to run."""

    specialist: str = Field(min_length=1)
    kind: str = Field(min_length=1, description="monitor, promotion, gate, rollback, retrain")
    verdict: str = Field(min_length=1, description="OK, WARN, DRIFT, QUALITY_DROP, ...")
    summary: str = Field(description="One line a person reads first.")
    reasons: list[AlertReason] = Field(default_factory=list)
    window: dict[str, Any] = Field(
        default_factory=dict, description="e.g. rows, labelled, since, until."
    )
    champion_version: int | None = None
    report_uri: str | None = Field(default=None, description="The Evidently report: URI or link.")
    actions: list[str] = Field(default_factory=list, description="Commands that act on it.")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("verdict", mode="before")
    @classmethod
    def _plain_verdict(cls, verdict: Any) -> Any:
        # Monitors may hand over an Enum; the store and the dedupe compare plain upper strings.
        if isinstance(verdict, enum.Enum):
            verdict = verdict.value
        return verdict.strip().upper() if isinstance(verdict, str) else verdict

    @property
    def fingerprint(self) -> str:
        """Identity of the problem, not of its numbers: a value that creeps does not re-alert.

        The champion's version is part of it: the same verdict about a new champion (a second
        promotion, a drift that outlived a retrain) is news, whatever the cooldown says.
        """
        signals = sorted({reason.signal for reason in self.reasons})
        key = json.dumps(
            [self.specialist, self.kind, self.verdict, signals, self.champion_version],
            ensure_ascii=False,
        )
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    @property
    def title(self) -> str:
        """``[DRIFT] support-router (monitor)``: the ascii-only lead of every rendering."""
        return f"[{self.verdict}] {self.specialist} ({self.kind})"


# -- Slack rendering ----------------------------------------------------------------------


def slack_payload(message: AlertMessage) -> dict[str, Any]:
    """Slack-compatible JSON for a message: a ``text`` fallback plus readable ``blocks``.

    Text from the message is escaped for Slack's mrkdwn (``&``, ``<``, ``>``) so that a
    reason cannot ping ``<!channel>`` or smuggle a link, and clipped to Slack's limits; the
    full message stays in the traffic store.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_clip(message.title, _HEADER_MAX))},
        _section(_escape(message.summary) or "_no summary_"),
    ]
    fields = _facts(message)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if message.reasons:
        blocks.append(_section("*Reasons*\n" + "\n".join(_reason_line(r) for r in message.reasons)))
    if message.report_uri:
        blocks.append(_section(f"*Report*: {_link(message.report_uri)}"))
    if message.actions:
        blocks.append(_section("*Actions*\n" + _code_block(message.actions)))
    context = f"fingerprint `{message.fingerprint}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    text = _clip(f"{message.title}: {_escape(message.summary)}", _TEXT_MAX)
    return {"text": text, "blocks": blocks}


def _facts(message: AlertMessage) -> list[dict[str, Any]]:
    facts: list[tuple[str, str]] = [("Specialist", message.specialist), ("Kind", message.kind)]
    if message.champion_version is not None:
        facts.append(("Champion", f"v{message.champion_version}"))
    if message.window:
        lines = (f"{key}: {_scalar(value)}" for key, value in message.window.items())
        facts.append(("Window", "\n".join(lines)))
    # Slack takes at most 10 fields.
    return [_mrkdwn(_clip(f"*{name}*\n{_escape(value)}", _FIELD_MAX)) for name, value in facts[:10]]


def _reason_line(reason: AlertReason) -> str:
    line = f"• {reason.signal}: {_number(reason.value)} (threshold {_number(reason.threshold)})"
    if reason.detail:
        line += f" - {reason.detail}"
    return _escape(line)


def _link(uri: str) -> str:
    # Only web links are clickable; an MLflow artifact URI (runs:/..., s3://...) is shown as code.
    if uri.startswith(("http://", "https://")) and not any(c in uri for c in " <>|\n"):
        return f"<{_escape(uri)}|open the report>"
    return _code_span(uri)


def _code_block(lines: Sequence[str]) -> str:
    # A ``` inside would close the block early; a zero-width space breaks it up.
    body = "\n".join(line.replace("```", "``\u200b`") for line in lines)
    return f"```{_escape(body)}```"


def _code_span(text: str) -> str:
    # A backtick inside would end the span early.
    inner = _escape(text.replace("`", "'"))
    return f"`{inner}`"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn_text(_clip(text, _SECTION_MAX))}


def _mrkdwn(text: str) -> dict[str, Any]:
    return _mrkdwn_text(text)


def _mrkdwn_text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": False}


def _escape(text: str) -> str:
    """Slack's three control characters (api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- delivery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """How one webhook took an alert. ``host`` is scheme://host[:port], never the token."""

    host: str
    ok: bool
    status: int | None
    attempts: int
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


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


@dataclass(frozen=True)
class _PastAlert:
    """One stored alert of a (specialist, kind), as the dedupe needs it."""

    verdict: str
    status: str
    fingerprint: str
    created_at: datetime


class Alerter:
    """Sends alerts to the configured webhooks, once per problem, and records them.

    ``store`` is the traffic store shared by every flow run (dedupe state lives there); with
    None, nothing is stored and the dedupe only remembers this process. ``backoff_base_s``
    doubles per retry up to ``backoff_max_s``; a 429's ``Retry-After`` is honoured up to
    ``retry_after_cap_s``. ``sleep`` and ``transport`` are seams for tests.
    """

    def __init__(
        self,
        settings: Settings,
        store: TrafficStore | None = None,
        *,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.webhooks = list(settings.alert_webhooks)
        self.cooldown = timedelta(seconds=settings.alert_cooldown_s)
        self.timeout_s = settings.alert_timeout_s
        self.retries = settings.alert_retries
        self.store = store
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_cap_s = retry_after_cap_s
        self._sleep = sleep
        self._transport = transport
        # What this process stored: the dedupe's memory without a store, or while it is down.
        self._memory: list[tuple[str, str, _PastAlert]] = []

    def __repr__(self) -> str:
        hosts = ", ".join(_host(url) for url in self.webhooks)
        return f"Alerter(webhooks=[{hosts}], store={self.store!r})"

    def notify(self, message: AlertMessage, *, now: datetime | None = None) -> AlertOutcome:
        """Tell on-call about ``message`` unless it was just said; never raises on outages."""
        now = _utc(now)
        past = self._past(message.specialist, message.kind)
        episode = _open_episode(past)
        if message.verdict == OK:
            if not episode:
                return AlertOutcome(SKIPPED, 0, 0, False, message.fingerprint, None)
            message = resolved_message(
                message, verdict=episode[-1].verdict, since=episode[0].created_at
            )
        elif _is_repeat(message, episode, now=now, cooldown=self.cooldown):
            log.info("alert %s suppressed: sent within the cooldown", message.title)
            return self._record(message, SUPPRESSED, [], now=now)
        deliveries = self._deliver(slack_payload(message))
        if not self.webhooks:
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

    # -- state --------------------------------------------------------------------------

    def _past(self, specialist: str, kind: str) -> list[_PastAlert]:
        """Stored alerts of (specialist, kind), oldest first; this process's memory if the
        store cannot be read (so an outage means at worst a repeated alert, never silence)."""
        remembered = [p for s, k, p in self._memory if (s, k) == (specialist, kind)]
        if self.store is None:
            return remembered
        try:
            frame = self.store.alerts(specialist)
        except Exception as exc:  # an outage must not stop the alert itself
            log.warning("alert history unreadable (%s); deduping from memory", _oneline(exc))
            return remembered
        past = [
            _PastAlert(
                verdict=str(row.verdict),
                status=str(row.payload.get("status", SENT)),
                fingerprint=str(row.payload.get("fingerprint", "")),
                created_at=row.created_at.to_pydatetime(),
            )
            for row in frame.itertuples(index=False)
            if row.kind == kind
        ]
        return past

    def _record(
        self, message: AlertMessage, status: str, deliveries: list[Delivery], *, now: datetime
    ) -> AlertOutcome:
        """Store the alert with how it went, and sum it up as an ``AlertOutcome``."""
        fingerprint = message.fingerprint
        self._memory.append(
            (
                message.specialist,
                message.kind,
                _PastAlert(message.verdict, status, fingerprint, now),
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
                _oneline(exc),
            )
            return None
        return record.id

    # -- HTTP ---------------------------------------------------------------------------

    def _deliver(self, payload: dict[str, Any]) -> list[Delivery]:
        if not self.webhooks:
            return []
        import httpx

        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": _USER_AGENT}
        with httpx.Client(
            timeout=self.timeout_s,
            transport=self._transport,
            follow_redirects=False,  # a redirect would carry the alert somewhere unconfigured
            headers=headers,
        ) as client:
            return [self._post(client, url, body) for url in self.webhooks]

    def _post(self, client: httpx.Client, url: str, body: bytes) -> Delivery:
        """POST with retries on transport errors, timeouts, 429 and 5xx; other 4xx are final."""
        import httpx

        host = _host(url)
        max_attempts = 1 + self.retries
        status: int | None = None
        error = ""
        for attempt in range(1, max_attempts + 1):
            wait = min(self.backoff_base_s * 2 ** (attempt - 1), self.backoff_max_s)
            try:
                response = client.post(url, content=body)
            except httpx.UnsupportedProtocol as exc:  # a bad URL will not heal by waiting
                status, error, retryable = None, _scrub(exc, url, host), False
            except httpx.TransportError as exc:  # connect errors, timeouts, resets
                status, error, retryable = None, _scrub(exc, url, host), True
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                status, error, retryable = None, _scrub(exc, url, host), False
            else:
                status = response.status_code
                if response.is_success:
                    return Delivery(host=host, ok=True, status=status, attempts=attempt)
                error = f"HTTP {status}: {_clip(response.text.strip(), _ERROR_BODY_MAX)}"
                retryable = status == 429 or status >= 500
                if status == 429:
                    wait = self._retry_after(response.headers.get("retry-after"), default=wait)
            if not retryable or attempt == max_attempts:
                break
            log.info(
                "webhook %s attempt %d failed (%s); retry in %.2fs", host, attempt, error, wait
            )
            self._sleep(wait)
        log.warning("alert webhook %s failed after %d attempt(s): %s", host, attempt, error)
        return Delivery(host=host, ok=False, status=status, attempts=attempt, error=error)

    def _retry_after(self, header: str | None, *, default: float) -> float:
        # Seconds only: Slack sends seconds; an HTTP-date falls back to our own backoff.
        try:
            seconds = float(header) if header is not None else default
        except ValueError:
            seconds = default
        if not math.isfinite(seconds):
            seconds = default
        return min(max(seconds, 0.0), self.retry_after_cap_s)


# -- pure helpers -------------------------------------------------------------------------


def resolved_message(ok: AlertMessage, *, verdict: str, since: datetime) -> AlertMessage:
    """The ``RESOLVED`` message that closes a ``verdict`` problem open since ``since``,
    built from the ``OK`` check that closed it (its window, champion and report)."""
    opened = since.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = (
        f"{verdict} on {ok.specialist} ({ok.kind}) is resolved; open since {opened}. "
        f"Now: {ok.summary}"
    ).strip()
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


def _open_episode(past: list[_PastAlert]) -> list[_PastAlert]:
    """The alerts since the last RESOLVED: a problem is open while this is not empty."""
    for i in range(len(past) - 1, -1, -1):
        if past[i].verdict == RESOLVED:
            return past[i + 1 :]
    return past


def _is_repeat(
    message: AlertMessage, episode: list[_PastAlert], *, now: datetime, cooldown: timedelta
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


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return now.astimezone(timezone.utc)


def _host(url: str) -> str:
    """scheme://host[:port] of a webhook URL: its path and query hold the secret token."""
    try:
        import httpx

        parsed = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    if not parsed.host:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _scrub(exc: BaseException, url: str, host: str) -> str:
    # Some transport errors quote the URL; keep the token out of logs and the store.
    return f"{type(exc).__name__}: {_oneline(exc)}".replace(url, host)


def _oneline(exc: BaseException) -> str:
    return _clip(" ".join(str(exc).split()) or type(exc).__name__, 300)
