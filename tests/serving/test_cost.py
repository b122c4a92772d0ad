"""Cost estimates: per 1,000 requests and per correct answer (pure), and the store's counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.serving.cost import estimate_cost


def test_cost_grows_with_escalations() -> None:
    none = estimate_cost(
        requests=1000, escalations=0, specialist_price_per_1k=0.01, fallback_price_per_1k=1.0
    )
    some = estimate_cost(
        requests=1000, escalations=100, specialist_price_per_1k=0.01, fallback_price_per_1k=1.0
    )
    assert none.per_1k == pytest.approx(0.01)
    assert some.per_1k == pytest.approx(0.11)
    assert some.escalation_rate == pytest.approx(0.1)
    assert some.saving == pytest.approx(0.89)


def test_no_traffic_costs_the_base_price() -> None:
    empty = estimate_cost(
        requests=0, escalations=0, specialist_price_per_1k=0.5, fallback_price_per_1k=0.0
    )
    assert empty.per_1k == 0.5 and empty.escalation_rate == 0.0 and empty.saving == 0.0


def test_cost_per_correct_counts_labels_and_expects_the_rest() -> None:
    from lifecycle.serving.cost import OutcomeCounts, cost_per_correct

    counts = OutcomeCounts(
        requests=1000,
        escalations=100,
        fallback_answered=80,  # 20 escalations left the champion's answer (review, failure)
        champion_confidence=800.0,  # over the 920 answers the champion gave
        labelled_champion=100,
        correct_champion=85,
        labelled_champion_confidence=90.0,
        labelled_fallback=10,  # too few to measure the fallback: the assumed 0.9 holds
        correct_fallback=5,
    )
    got = cost_per_correct(
        counts, specialist_price_per_1k=0.01, fallback_price_per_1k=1.0, fallback_accuracy=0.9
    )
    # 85 + 5 counted; 800 - 90 expected from confidences; 70 unlabelled fallback answers x 0.9.
    assert got.correct == pytest.approx(85 + 5 + 710 + 63)
    assert got.correct_measured_on == 110
    assert got.fallback_accuracy == 0.9 and got.fallback_accuracy_measured_on == 0
    assert got.spend == pytest.approx((1000 * 0.01 + 100 * 1.0) / 1000)
    assert got.per_correct == pytest.approx(got.spend / 863)
    assert got.fallback_only_per_correct == pytest.approx(0.001 / 0.9)
    assert got.accuracy == pytest.approx(0.863)
    assert got.per_correct < got.fallback_only_per_correct  # the specialist pays off here


def test_labelled_escalations_measure_the_fallback_once_there_are_enough() -> None:
    from lifecycle.serving.cost import MIN_FALLBACK_LABELS, OutcomeCounts, cost_per_correct

    n = MIN_FALLBACK_LABELS
    counts = OutcomeCounts(
        requests=n, escalations=n, fallback_answered=n, labelled_fallback=n, correct_fallback=n // 2
    )
    got = cost_per_correct(
        counts, specialist_price_per_1k=0.0, fallback_price_per_1k=2.0, fallback_accuracy=0.9
    )
    assert got.fallback_accuracy == pytest.approx(0.5)
    assert got.fallback_accuracy_measured_on == n
    assert got.correct == pytest.approx(n / 2) and got.correct_measured_on == n
    # The specialist escalated everything: it costs what the fallback alone costs.
    assert got.per_correct == pytest.approx(got.fallback_only_per_correct)


def test_no_traffic_has_no_cost_per_correct_but_the_fallback_figure_stands() -> None:
    from lifecycle.serving.cost import OutcomeCounts, cost_per_correct

    got = cost_per_correct(
        OutcomeCounts(),
        specialist_price_per_1k=0.5,
        fallback_price_per_1k=1.0,
        fallback_accuracy=0.8,
    )
    assert got.per_correct is None and got.accuracy is None and got.correct == 0
    assert got.fallback_only_per_correct == pytest.approx(0.00125)


def test_the_store_counts_the_answer_the_client_got(tmp_path: Path) -> None:
    from lifecycle.serving.cost import OutcomeCounts
    from lifecycle.store import AlertRecord, FeedbackRecord, RequestRecord, TrafficStore

    store = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    store.upgrade()
    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def request(i: int, label: str, confidence: float, **kw: Any) -> RequestRecord:
        return RequestRecord(
            specialist="s",
            model_version=1,
            text=f"t{i}",
            label=label,
            confidence=confidence,
            latency_ms=1.0,
            created_at=t0 + timedelta(seconds=i),
            **kw,
        )

    rows = [
        request(0, "a", 0.9),  # right, labelled
        request(1, "a", 0.8),  # wrong, labelled twice: the person's latest label wins
        request(2, "b", 0.7),  # unlabelled
        request(3, "a", 0.3, escalated=True, fallback_label="b", fallback_source="openai"),
        request(4, "a", 0.2, escalated=True, fallback_source="review"),  # champion's answer
        request(5, "c", 0.6),  # only the fallback's label: not truth
    ]
    other = RequestRecord(
        specialist="x", model_version=1, text="t", label="a", confidence=0.5, latency_ms=1.0
    )
    store.write([*rows, other])
    ids = [r.id for r in rows]
    store.write(
        [
            FeedbackRecord(request_id=ids[0], specialist="s", label="a", created_at=t0),
            FeedbackRecord(request_id=ids[1], specialist="s", label="a", created_at=t0),
            FeedbackRecord(
                request_id=ids[1], specialist="s", label="z", created_at=t0 + timedelta(1)
            ),
            FeedbackRecord(request_id=ids[3], specialist="s", label="b", created_at=t0),
            FeedbackRecord(request_id=ids[4], specialist="s", label="a", created_at=t0),
            FeedbackRecord(request_id=ids[5], specialist="s", label="c", source="fallback"),
        ]
    )
    counts = OutcomeCounts(**store.outcome_counts("s"))
    assert counts == OutcomeCounts(
        requests=6,
        escalations=2,
        fallback_answered=1,
        champion_confidence=pytest.approx(0.9 + 0.8 + 0.7 + 0.2 + 0.6),
        labelled_champion=3,
        correct_champion=2,  # requests 0 and 4; request 1's latest label is z
        labelled_champion_confidence=pytest.approx(0.9 + 0.8 + 0.2),
        labelled_fallback=1,
        correct_fallback=1,
    )
    newest = store.outcome_counts("s", last=2)
    assert newest["requests"] == 2 and newest["labelled_champion"] == 1
    assert store.outcome_counts("nobody")["requests"] == 0

    assert store.latest_alert_verdict("s") is None
    store.write(
        [
            AlertRecord(specialist="s", kind="monitor", verdict="DRIFT", created_at=t0),
            AlertRecord(
                specialist="s", kind="gate", verdict="PROMOTED", created_at=t0 + timedelta(2)
            ),
            AlertRecord(
                specialist="s", kind="monitor", verdict="RESOLVED", created_at=t0 + timedelta(1)
            ),
        ]
    )
    assert store.latest_alert_verdict("s") == "RESOLVED"
    assert store.latest_alert_verdict("s", kind="gate") == "PROMOTED"
    store.dispose()
