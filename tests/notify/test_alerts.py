"""Alerts to on-call, over real HTTP (a fake Slack webhook) into a real traffic store.

What matters to the person paged: the message carries the evidence and the command to run,
the same problem is not repeated within the cooldown (even across separate flow runs), an
OK closes an open problem, and no webhook or store outage ever breaks the flow that alerts.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.config.settings import Settings
from lifecycle.notify.alerter import Alerter, AlertOutcome
from lifecycle.notify.delivery import Webhooks
from lifecycle.notify.message import AlertMessage, AlertReason
from lifecycle.notify.slack import slack_payload
from lifecycle.store import TrafficStore
from tests.fakes.slack_server import TOKEN_PATH, FakeSlack

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPECIALIST = "support-router"
BASE_S = 0.25  # backoff base; sleeps are recorded, not slept, except where a test says


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[FakeSlack, FakeSlack]]:
    with FakeSlack() as first, FakeSlack() as second:
        yield first, second


@pytest.fixture
def slack(_servers: tuple[FakeSlack, FakeSlack]) -> FakeSlack:
    _servers[0].reset()
    return _servers[0]


@pytest.fixture
def slack2(_servers: tuple[FakeSlack, FakeSlack]) -> FakeSlack:
    _servers[1].reset()
    return _servers[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrafficStore]:
    traffic = TrafficStore(f"sqlite:///{tmp_path / 'db' / 'traffic.db'}", lock_timeout_ms=50)
    traffic.upgrade()
    yield traffic
    traffic.dispose()


class Sleeps(list[float]):
    """A sleep that records how long it was asked to wait, and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def alerter(
    urls: list[str],
    store: TrafficStore | None,
    *,
    cooldown_s: float = 3600.0,
    timeout_s: float = 2.0,
    retries: int = 3,
    sleep: Sleeps | None = None,
    retry_after_cap_s: float = 60.0,
) -> Alerter:
    settings = Settings(alert_webhooks=urls, alert_cooldown_s=cooldown_s)
    webhooks = Webhooks(
        urls,
        timeout_s=timeout_s,
        retries=retries,
        backoff_base_s=BASE_S,
        retry_after_cap_s=retry_after_cap_s,
        sleep=sleep if sleep is not None else Sleeps(),
    )
    return Alerter(settings, store, webhooks=webhooks)


def drift(
    *signals: tuple[str, float, float], verdict: str = "DRIFT", kind: str = "monitor"
) -> AlertMessage:
    """A monitor verdict on SPECIALIST with the given (signal, value, threshold) reasons."""
    reasons = [AlertReason(signal=s, value=v, threshold=t) for s, v, t in signals]
    return AlertMessage(
        specialist=SPECIALIST,
        kind=kind,
        verdict=verdict,
        summary=f"{verdict}: {', '.join(s for s, _, _ in signals)} over threshold",
        reasons=reasons,
        window={
            "rows": 500,
            "labelled": 40,
            "since": "2026-03-01T11:00:00+00:00",
            "until": "2026-03-01T12:00:00+00:00",
        },
        champion_version=3,
        report_uri="http://mlflow.internal:5000/#/experiments/1/runs/abc123",
        actions=[
            f"lifecycle retrain --specialist {SPECIALIST}",
            "label more: 60 more labels needed",
        ],
    )


def ok_check() -> AlertMessage:
    return AlertMessage(
        specialist=SPECIALIST,
        kind="monitor",
        verdict="OK",
        summary="all signals under threshold",
        window={"rows": 480},
        champion_version=3,
    )


def stored(store: TrafficStore) -> list[tuple[str, str]]:
    """(verdict, status) of every stored alert of SPECIALIST, oldest first."""
    frame = store.alerts(SPECIALIST)
    return [(v, p["status"]) for v, p in zip(frame["verdict"], frame["payload"], strict=True)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slack_texts(body: dict[str, Any]) -> list[str]:
    """Every text Slack would render from a payload (block texts and fields)."""
    texts = [body["text"]]
    for block in body["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [f["text"] for f in block.get("fields", [])]
        texts += [e["text"] for e in block.get("elements", [])]
    return texts


# -- what the message says -------------------------------------------------------------------


def test_delivery_carries_the_evidence_and_the_commands(
    slack: FakeSlack, store: TrafficStore
) -> None:
    message = drift(("prediction_psi", 0.31, 0.2), ("text_drift_share", 0.125, 0.1))
    outcome = alerter([slack.url], store).notify(message, now=T0)

    assert (outcome.status, outcome.delivered, outcome.attempts) == ("sent", 1, 1)
    assert outcome.stored and outcome.record_id is not None
    assert len(slack.requests) == 1
    received = slack.requests[0]
    assert received.path == TOKEN_PATH
    assert received.headers["content-type"].startswith("application/json")
    body = received.body
    assert body["text"].startswith(f"[DRIFT] {SPECIALIST} (monitor): DRIFT")
    rendered = "\n".join(slack_texts(body))
    for expected in (
        SPECIALIST,
        "DRIFT",
        "prediction_psi: 0.31 (threshold 0.2)",
        "text_drift_share: 0.125 (threshold 0.1)",
        "rows: 500",
        "labelled: 40",
        "since: 2026-03-01T11:00:00+00:00",
        "until: 2026-03-01T12:00:00+00:00",
        "v3",
        "<http://mlflow.internal:5000/#/experiments/1/runs/abc123|open the report>",
        f"lifecycle retrain --specialist {SPECIALIST}",
        "label more: 60 more labels needed",
        message.fingerprint,
    ):
        assert expected in rendered, expected

    frame = store.alerts(SPECIALIST)
    assert list(frame["id"]) == [outcome.record_id]
    payload = frame.iloc[0]["payload"]
    assert frame.iloc[0]["verdict"] == "DRIFT" and frame.iloc[0]["kind"] == "monitor"
    assert payload["status"] == "sent" and payload["fingerprint"] == message.fingerprint
    assert payload["reasons"][0] == {
        "signal": "prediction_psi",
        "value": 0.31,
        "threshold": 0.2,
        "detail": "",
    }
    assert payload["delivery"] == [
        {
            "host": f"http://127.0.0.1:{slack.port}",
            "ok": True,
            "status": 200,
            "attempts": 1,
            "error": None,
        }
    ]
    # The webhook token is a secret: it is not kept in the store.
    assert "s3cr3t" not in json.dumps(payload)


def test_every_configured_webhook_gets_the_alert(
    slack: FakeSlack, slack2: FakeSlack, store: TrafficStore
) -> None:
    outcome = alerter([slack.url, slack2.url], store).notify(drift(("psi", 0.4, 0.2)), now=T0)

    assert (outcome.status, outcome.delivered, outcome.attempts) == ("sent", 2, 2)
    assert len(slack.requests) == len(slack2.requests) == 1
    assert slack.requests[0].body == slack2.requests[0].body
    assert [d.host for d in outcome.deliveries] == [
        f"http://127.0.0.1:{slack.port}",
        f"http://127.0.0.1:{slack2.port}",
    ]


def test_report_uri_that_is_not_a_web_link_is_shown_as_code() -> None:
    message = drift(("psi", 0.4, 0.2)).model_copy(
        update={"report_uri": "runs:/abc123/evidently/report.html"}
    )
    rendered = "\n".join(slack_texts(slack_payload(message)))
    assert "`runs:/abc123/evidently/report.html`" in rendered
    assert "open the report" not in rendered


def test_fingerprint_ignores_values_and_order_but_not_signals_or_verdict() -> None:
    base = drift(("psi", 0.31, 0.2), ("text", 0.2, 0.1))
    assert drift(("text", 0.9, 0.1), ("psi", 0.5, 0.3)).fingerprint == base.fingerprint
    assert drift(("psi", 0.31, 0.2)).fingerprint != base.fingerprint
    assert drift(("psi", 0.31, 0.2), ("text", 0.2, 0.1), verdict="WARN").fingerprint != (
        base.fingerprint
    )
    assert drift(("psi", 0.31, 0.2), ("text", 0.2, 0.1), kind="gate").fingerprint != (
        base.fingerprint
    )


# -- dedupe and resolution ----------------------------------------------------------------------


def test_same_problem_is_suppressed_within_the_cooldown_and_sent_again_after(
    slack: FakeSlack, store: TrafficStore
) -> None:
    alerts = alerter([slack.url], store, cooldown_s=3600)
    first = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0)
    # The value creeps up: still the same problem.
    again = alerts.notify(drift(("psi", 0.33, 0.2)), now=T0 + timedelta(minutes=10))
    later = alerts.notify(drift(("psi", 0.35, 0.2)), now=T0 + timedelta(minutes=50))
    # 61 min after the last sent, 11 min after the last suppressed: suppressed rows must not
    # push the cooldown forward.
    after = alerts.notify(drift(("psi", 0.36, 0.2)), now=T0 + timedelta(minutes=61))

    assert [o.status for o in (first, again, later, after)] == [
        "sent",
        "suppressed",
        "suppressed",
        "sent",
    ]
    assert again.attempts == 0 and again.delivered == 0 and again.stored
    assert len(slack.requests) == 2
    assert slack.requests[1].body["blocks"] != slack.requests[0].body["blocks"]  # new value
    assert stored(store) == [
        ("DRIFT", "sent"),
        ("DRIFT", "suppressed"),
        ("DRIFT", "suppressed"),
        ("DRIFT", "sent"),
    ]


def test_dedupe_state_is_shared_by_separate_runs_through_the_store(
    slack: FakeSlack, store: TrafficStore
) -> None:
    alerter([slack.url], store).notify(drift(("psi", 0.31, 0.2)), now=T0)
    # A later scheduled flow run builds its own Alerter: it must see what the first one sent.
    next_run = alerter([slack.url], store).notify(
        drift(("psi", 0.32, 0.2)), now=T0 + timedelta(minutes=5)
    )
    assert next_run.status == "suppressed"
    assert len(slack.requests) == 1


def test_a_changed_set_of_signals_or_verdict_is_not_deduped(
    slack: FakeSlack, store: TrafficStore
) -> None:
    alerts = alerter([slack.url], store)
    outcomes = [
        alerts.notify(drift(("psi", 0.31, 0.2)), now=T0),
        alerts.notify(drift(("psi", 0.31, 0.2), ("text", 0.3, 0.1)), now=T0 + timedelta(minutes=1)),
        alerts.notify(
            drift(("psi", 0.31, 0.2), ("text", 0.3, 0.1), verdict="QUALITY_DROP"),
            now=T0 + timedelta(minutes=2),
        ),
        # Another kind of alert on the same specialist has its own state.
        alerts.notify(drift(("psi", 0.31, 0.2), kind="gate"), now=T0 + timedelta(minutes=3)),
    ]
    assert [o.status for o in outcomes] == ["sent"] * 4
    assert len({o.fingerprint for o in outcomes}) == 4
    assert len(slack.requests) == 4


def test_ok_after_a_problem_sends_resolved_once(slack: FakeSlack, store: TrafficStore) -> None:
    alerts = alerter([slack.url], store, cooldown_s=3600)
    alerts.notify(drift(("psi", 0.31, 0.2)), now=T0)
    alerts.notify(drift(("psi", 0.32, 0.2)), now=T0 + timedelta(minutes=5))  # suppressed
    resolved = alerts.notify(ok_check(), now=T0 + timedelta(minutes=20))
    quiet = alerts.notify(ok_check(), now=T0 + timedelta(minutes=25))

    assert (resolved.status, resolved.delivered) == ("sent", 1)
    assert (quiet.status, quiet.stored, quiet.attempts) == ("skipped", False, 0)
    assert len(slack.requests) == 2
    body = slack.requests[1].body
    assert body["text"].startswith(f"[RESOLVED] {SPECIALIST} (monitor)")
    assert "DRIFT" in body["text"] and "open since 2026-03-01 12:00 UTC" in body["text"]
    assert stored(store) == [("DRIFT", "sent"), ("DRIFT", "suppressed"), ("RESOLVED", "sent")]
    payload = store.alerts(SPECIALIST).iloc[-1]["payload"]
    assert payload["extra"]["resolved_verdict"] == "DRIFT"
    assert payload["extra"]["open_since"] == T0.isoformat()

    # Drift again within the first alert's cooldown: a new problem after a resolution is news.
    relapse = alerts.notify(drift(("psi", 0.4, 0.2)), now=T0 + timedelta(minutes=30))
    assert relapse.status == "sent"
    assert len(slack.requests) == 3


def test_ok_with_nothing_open_sends_and_stores_nothing(
    slack: FakeSlack, store: TrafficStore
) -> None:
    outcome = alerter([slack.url], store).notify(ok_check(), now=T0)
    assert (outcome.status, outcome.stored, outcome.record_id) == ("skipped", False, None)
    assert slack.requests == []
    assert store.alerts(SPECIALIST).empty


def test_without_a_store_dedupe_remembers_this_process(slack: FakeSlack) -> None:
    alerts = alerter([slack.url], None)
    first = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0)
    second = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0 + timedelta(minutes=1))
    resolved = alerts.notify(ok_check(), now=T0 + timedelta(minutes=2))
    assert [o.status for o in (first, second, resolved)] == ["sent", "suppressed", "sent"]
    assert not first.stored and first.record_id is None
    assert len(slack.requests) == 2
    assert list(alerts.history(SPECIALIST)["status"]) == ["sent", "suppressed", "sent"]


def test_without_webhooks_alerts_are_stored_and_deduped(store: TrafficStore) -> None:
    alerts = alerter([], store)
    first = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0)
    second = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0 + timedelta(minutes=1))
    assert (first.status, first.delivered, first.stored) == ("no_webhook", 0, True)
    assert second.status == "suppressed"
    assert stored(store) == [("DRIFT", "no_webhook"), ("DRIFT", "suppressed")]


def test_by_default_the_settings_say_where_and_how_to_post() -> None:
    url = "http://127.0.0.1:9/services/T0/B0/s3cr3t"
    settings = Settings(alert_webhooks=[url], alert_timeout_s=1.5, alert_retries=4)
    alerts = Alerter(settings)
    assert (alerts.webhooks.urls, alerts.webhooks.timeout_s, alerts.webhooks.retries) == (
        [url],
        1.5,
        4,
    )
    assert "s3cr3t" not in repr(alerts)  # the token stays out of reprs (and so of logs)


# -- delivery failures ------------------------------------------------------------------------


def test_retries_a_500_with_exponential_backoff_then_succeeds(
    slack: FakeSlack, store: TrafficStore
) -> None:
    slack.mode, slack.fail_count = "fail_then_ok", 2
    sleeps = Sleeps()
    outcome = alerter([slack.url], store, retries=3, sleep=sleeps).notify(
        drift(("psi", 0.31, 0.2)), now=T0
    )
    assert (outcome.status, outcome.delivered, outcome.attempts) == ("sent", 1, 3)
    assert len(slack.requests) == 3
    assert sleeps == [BASE_S, 2 * BASE_S]
    delivery = store.alerts(SPECIALIST).iloc[0]["payload"]["delivery"][0]
    assert (delivery["ok"], delivery["status"], delivery["attempts"]) == (True, 200, 3)


def test_a_webhook_that_keeps_failing_is_recorded_and_retried_next_run(
    slack: FakeSlack, store: TrafficStore, caplog: pytest.LogCaptureFixture
) -> None:
    slack.mode = "always_500"
    alerts = alerter([slack.url], store, retries=2)
    with caplog.at_level(logging.WARNING, logger="lifecycle.notify"):
        outcome = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0)

    assert (outcome.status, outcome.delivered, outcome.attempts) == ("failed", 0, 3)
    assert outcome.stored
    assert outcome.deliveries[0].error == "HTTP 500: internal_error"
    assert f"127.0.0.1:{slack.port}" in caplog.text
    assert "s3cr3t" not in caplog.text  # the token stays out of logs

    # Nobody was told: the next run within the cooldown tries again instead of suppressing.
    slack.mode = "ok"
    retry = alerts.notify(drift(("psi", 0.31, 0.2)), now=T0 + timedelta(minutes=1))
    assert retry.status == "sent"
    assert stored(store) == [("DRIFT", "failed"), ("DRIFT", "sent")]


def test_429_waits_as_long_as_retry_after_says(slack: FakeSlack, store: TrafficStore) -> None:
    slack.mode, slack.fail_count, slack.retry_after = "rate_limited", 2, "0"
    sleeps = Sleeps()
    outcome = alerter([slack.url], store, sleep=sleeps).notify(drift(("psi", 0.3, 0.2)), now=T0)
    assert (outcome.status, outcome.attempts) == ("sent", 3)
    assert sleeps == [0.0, 0.0]  # Retry-After, not the backoff


def test_429_retry_after_is_capped(slack: FakeSlack, store: TrafficStore) -> None:
    slack.mode, slack.fail_count, slack.retry_after = "rate_limited", 1, "120"
    sleeps = Sleeps()
    outcome = alerter([slack.url], store, sleep=sleeps, retry_after_cap_s=0.05).notify(
        drift(("psi", 0.3, 0.2)), now=T0
    )
    assert (outcome.status, outcome.attempts) == ("sent", 2)
    assert sleeps == [0.05]


def test_400_is_not_retried(slack: FakeSlack, store: TrafficStore) -> None:
    slack.mode = "bad_request"
    sleeps = Sleeps()
    outcome = alerter([slack.url], store, retries=5, sleep=sleeps).notify(
        drift(("psi", 0.3, 0.2)), now=T0
    )
    assert (outcome.status, outcome.attempts, sleeps) == ("failed", 1, [])
    assert len(slack.requests) == 1
    delivery = outcome.deliveries[0]
    assert (delivery.status, delivery.error) == (400, "HTTP 400: invalid_payload")


def test_a_slow_webhook_times_out_and_notify_returns(slack: FakeSlack, store: TrafficStore) -> None:
    slack.mode, slack.delay_s = "slow", 5.0
    started = time.monotonic()
    outcome = alerter([slack.url], store, timeout_s=0.2, retries=1).notify(
        drift(("psi", 0.3, 0.2)), now=T0
    )
    elapsed = time.monotonic() - started
    assert (outcome.status, outcome.attempts) == ("failed", 2)
    assert "Timeout" in (outcome.deliveries[0].error or "")
    assert elapsed < 2.0
    assert stored(store) == [("DRIFT", "failed")]


def test_an_unreachable_webhook_does_not_stop_the_others(
    slack: FakeSlack, store: TrafficStore, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/services/T0/B0/deadT0k3n"
    with caplog.at_level(logging.WARNING, logger="lifecycle.notify"):
        outcome = alerter([dead, slack.url], store, retries=2).notify(
            drift(("psi", 0.3, 0.2)), now=T0
        )
    assert (outcome.status, outcome.delivered, outcome.attempts) == ("sent", 1, 4)
    refused, accepted = outcome.deliveries
    assert (refused.ok, refused.status, refused.attempts) == (False, None, 3)
    assert "ConnectError" in (refused.error or "")
    assert accepted.ok and len(slack.requests) == 1
    assert "deadT0k3n" not in caplog.text
    assert "deadT0k3n" not in json.dumps(store.alerts(SPECIALIST).iloc[0]["payload"])


def test_a_store_outage_still_delivers_and_says_stored_false(
    slack: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    broken = TrafficStore(f"sqlite:///{blocker / 'traffic.db'}", lock_timeout_ms=50)
    alerts = alerter([slack.url], broken)
    with caplog.at_level(logging.WARNING, logger="lifecycle.notify"):
        outcome = alerts.notify(drift(("psi", 0.3, 0.2)), now=T0)
        again = alerts.notify(drift(("psi", 0.3, 0.2)), now=T0 + timedelta(minutes=1))
    broken.dispose()

    assert (outcome.status, outcome.delivered, outcome.stored) == ("sent", 1, False)
    assert outcome.record_id is None
    assert "not stored" in caplog.text and "history unreadable" in caplog.text
    # While the store is down, this process still remembers what it sent.
    assert again.status == "suppressed"
    assert len(slack.requests) == 1


# -- hostile content and the audit trail ----------------------------------------------------------


def test_hostile_content_arrives_as_valid_json_and_cannot_ping_or_link(
    slack: FakeSlack, store: TrafficStore
) -> None:
    unicode_text = "drift ü 漢字 🚨 \u202eevil\u202c"
    huge = "S" * 100_000
    message = AlertMessage(
        specialist=SPECIALIST,
        kind="monitor",
        verdict="DRIFT",
        summary=huge,
        reasons=[
            AlertReason(signal="<!channel> *bold* <http://evil.example|click>", value=1.0),
            AlertReason(signal=unicode_text, value=math.nan, threshold=math.inf),
            AlertReason(signal="html", detail="</script><img src=x onerror=alert(1)>&amp;"),
        ],
        window={"rows": 10, "note": "```\n@here"},
        actions=["lifecycle rollback --specialist x ``` <!here>"],
        report_uri="javascript:alert(1)",
    )
    outcome = alerter([slack.url], store).notify(message, now=T0)

    assert (outcome.status, outcome.stored) == ("sent", True)
    body = slack.requests[0].body
    assert isinstance(body, dict)  # the server parsed it as JSON
    rendered = "\n".join(slack_texts(body))
    assert unicode_text in rendered
    assert "<!channel>" not in rendered and "<!here>" not in rendered
    assert "<http://evil.example|click>" not in rendered
    assert "&lt;!channel&gt;" in rendered
    assert "<img" not in rendered and "&lt;img src=x onerror=alert(1)&gt;&amp;amp;" in rendered
    assert "n/a (threshold n/a)" in rendered  # NaN and inf are unknowns, not crashes
    assert "<javascript:" not in rendered  # not a web link: shown as code, not clickable
    # Within Slack's limits, or Slack would refuse the whole message.
    assert len(body["text"]) <= 3000
    for block in body["blocks"]:
        limit = 150 if block["type"] == "header" else 3000
        if "text" in block:
            assert len(block["text"]["text"]) <= limit
        assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))

    # The store keeps the message as it was given, in full.
    payload = store.alerts(SPECIALIST).iloc[0]["payload"]
    assert payload["summary"] == huge
    assert [r["signal"] for r in payload["reasons"]] == [r.signal for r in message.reasons]
    assert payload["reasons"][1]["value"] is None


def test_every_alert_is_counted_in_the_store(slack: FakeSlack, store: TrafficStore) -> None:
    alerts = alerter([slack.url], store, retries=0)
    steps: list[tuple[str, AlertMessage, timedelta]] = [
        ("ok", drift(("psi", 0.3, 0.2)), timedelta(0)),
        ("ok", drift(("psi", 0.3, 0.2)), timedelta(minutes=1)),
        ("always_500", drift(("psi", 0.3, 0.2), ("text", 0.2, 0.1)), timedelta(minutes=2)),
        ("ok", ok_check(), timedelta(minutes=3)),
        ("ok", ok_check(), timedelta(minutes=4)),
        (
            "ok",
            drift(("accuracy", 0.7, 0.8), verdict="QUALITY_DROP", kind="rollback"),
            timedelta(minutes=5),
        ),
    ]
    outcomes: list[AlertOutcome] = []
    for mode, message, offset in steps:
        slack.mode = mode
        outcomes.append(alerts.notify(message, now=T0 + offset))

    assert [o.status for o in outcomes] == [
        "sent",
        "suppressed",
        "failed",
        "sent",
        "skipped",
        "sent",
    ]
    assert stored(store) == [
        ("DRIFT", "sent"),
        ("DRIFT", "suppressed"),
        ("DRIFT", "failed"),
        ("RESOLVED", "sent"),
        ("QUALITY_DROP", "sent"),
    ]
    stored_ids = set(store.alerts(SPECIALIST)["id"])
    assert stored_ids == {o.record_id for o in outcomes if o.stored}
    history = alerts.history(SPECIALIST, kind="rollback")
    assert list(history["status"]) == ["sent"] and list(history["verdict"]) == ["QUALITY_DROP"]
