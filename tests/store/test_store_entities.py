"""The traffic store's extraction columns: an extractor's spans on requests, shadow predictions
and feedback, through records, the journal, the migration and the window reads.

Tests that take the ``store`` or ``make_database`` fixture run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.extraction.spans import Entity, from_json, summary, to_json
from lifecycle.store import (
    FeedbackRecord,
    Record,
    RequestRecord,
    ShadowRecord,
    TrafficStore,
    TrafficWriter,
    schema,
)
from lifecycle.store.migrations import current_revision, head_revision
from lifecycle.store.records import record_from_json, record_to_json
from tests.store.records import T0, assert_schema_matches, migrate_to, request

TEXT = "Refund order ORD-123456 placed on 2026-01-02 please"
ORDER = Entity("order_id", 13, 23, "ORD-123456", 0.97)
DATE = Entity("date", 34, 44, "2026-01-02", 0.41)
CHAMPION = to_json([ORDER, DATE])
CHALLENGER = to_json([ORDER])
CORRECTED = to_json(
    [Entity("order_id", 13, 23, "ORD-123456"), Entity("date", 34, 44, "2026-01-02")]
)


def extraction(i: int, entities: str | None = CHAMPION, **extra: Any) -> RequestRecord:
    """An extractor's request i seconds after T0."""
    spans = from_json(entities)
    return request(
        i, specialist="tickets", text=TEXT, label=summary(spans), entities=entities, **extra
    )


def shadow(of: RequestRecord, entities: str | None = CHALLENGER) -> ShadowRecord:
    return ShadowRecord(
        request_id=of.id,
        specialist=of.specialist,
        model_version=2,
        label=summary(from_json(entities)),
        confidence=0.8,
        latency_ms=2.0,
        created_at=of.created_at,
        entities=entities,
    )


def test_spans_fit_the_texts_they_index() -> None:
    assert TEXT[ORDER.start : ORDER.end] == ORDER.text and TEXT[DATE.start : DATE.end] == DATE.text


def test_records_with_entities_survive_the_journal_format_exactly() -> None:
    req = extraction(1)
    records: list[Record] = [
        req,
        extraction(2, entities="[]"),
        shadow(req),
        FeedbackRecord(request_id=req.id, specialist="tickets", label="date", entities=CORRECTED),
        FeedbackRecord(request_id=req.id, specialist="tickets", label="(none)", entities="[]"),
    ]
    for record in records:
        line = json.dumps(record_to_json(record))
        assert record_from_json(json.loads(line)) == record


@pytest.mark.parametrize("kind", ["requests", "shadow_predictions", "feedback"])
def test_journal_lines_written_before_entities_still_read(kind: str) -> None:
    """A WAL or journal line from before the entities field replays with entities None."""
    req = request(7)
    records: dict[str, Record] = {
        "requests": req,
        "shadow_predictions": ShadowRecord(
            request_id=req.id,
            specialist="billing",
            model_version=2,
            label="a",
            confidence=0.5,
            latency_ms=1.0,
        ),
        "feedback": FeedbackRecord(request_id=req.id, specialist="billing", label="refund"),
    }
    record = records[kind]
    line = record_to_json(record)
    assert line["table"] == kind
    del line["row"]["entities"]
    back = record_from_json(json.loads(json.dumps(line)))
    assert back == record and back.entities is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "problem"),
    [(123, "JSON string"), ("{not json", "not JSON"), ('{"label": "x"}', "list of objects")],
)
def test_entities_that_are_not_a_json_list_fail_where_they_are_made(
    value: object, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        RequestRecord(
            specialist="tickets",
            model_version=1,
            text=TEXT,
            label="x",
            confidence=0.5,
            latency_ms=1.0,
            entities=value,  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match=problem):
        FeedbackRecord(request_id="a" * 32, specialist="tickets", label="x", entities=value)  # type: ignore[arg-type]


def test_window_and_shadow_pairs_return_the_entity_columns(store: TrafficStore) -> None:
    labelled = extraction(1)
    unlabelled = extraction(2, entities="[]")
    classifier = request(3, specialist="tickets")  # a row with no spans at all
    human_later = FeedbackRecord(
        request_id=labelled.id,
        specialist="tickets",
        label=summary(from_json(CORRECTED)),
        entities=CORRECTED,
        created_at=T0 + timedelta(minutes=2),
    )
    # A fallback label, even a later one, never beats a person's.
    fallback = FeedbackRecord(
        request_id=labelled.id,
        specialist="tickets",
        label="order_id",
        source="fallback",
        entities=CHALLENGER,
        created_at=T0 + timedelta(minutes=3),
    )
    empty = FeedbackRecord(
        request_id=unlabelled.id,
        specialist="tickets",
        label="(none)",
        entities="[]",
    )
    batch: list[Record] = [
        labelled,
        unlabelled,
        classifier,
        shadow(labelled),
        shadow(unlabelled, None),
        human_later,
        fallback,
        empty,
    ]
    assert store.write(batch) == len(batch)

    frame = store.window("tickets", with_embeddings=False)
    assert list(frame["id"]) == [labelled.id, unlabelled.id, classifier.id]
    assert list(frame["entities"]) == [CHAMPION, "[]", None]
    assert list(frame["true_entities"]) == [CORRECTED, "[]", None]
    assert list(frame["true_label"][:2]) == ["date+order_id", "(none)"]
    assert from_json(frame["entities"][0]) == [ORDER, DATE]
    with_embeddings = store.window("tickets")
    assert list(with_embeddings["true_entities"]) == [CORRECTED, "[]", None]
    assert list(with_embeddings.columns)[-1] == "embedding"

    pairs = store.shadow_pairs("tickets", challenger_version=2)
    assert list(pairs["request_id"]) == [labelled.id, unlabelled.id]
    assert list(pairs["champion_entities"]) == [CHAMPION, "[]"]
    assert list(pairs["challenger_entities"]) == [CHALLENGER, None]
    assert list(pairs["true_entities"]) == [CORRECTED, "[]"]

    # Empty frames keep the columns.
    assert "true_entities" in store.window("nobody").columns
    assert {"champion_entities", "challenger_entities", "true_entities"} <= set(
        store.shadow_pairs("nobody", challenger_version=1).columns
    )


def test_a_store_at_0003_upgrades_in_place_with_null_entities(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    migrate_to(url, "0003")
    assert current_revision(url) == "0003"
    old = request(1, specialist="tickets")
    row = old.to_row()
    del row["entities"]  # the 0003 table has no such column
    store = TrafficStore(url)
    try:
        with store.engine.begin() as conn:
            conn.execute(schema.requests.insert(), [row])
        assert store.upgrade() == head_revision() == "0004"
        assert_schema_matches(store)
        new = extraction(2)
        store.write(
            [
                new,
                shadow(new),
                FeedbackRecord(request_id=old.id, specialist="tickets", label="refund"),
            ]
        )
        frame = store.window("tickets", with_embeddings=False)
        assert list(frame["id"]) == [old.id, new.id]
        assert list(frame["entities"]) == [None, CHAMPION]
        assert list(frame["true_entities"]) == [None, None]
        assert frame["true_label"][0] == "refund"
    finally:
        store.dispose()


def test_journal_replay_carries_entities_and_reads_older_lines(tmp_path: Path) -> None:
    """Records held in the journal while the database is away reach it with their spans; a
    journal line written before the field existed replays as a row without spans."""
    journal = tmp_path / "journal"
    blocked = tmp_path / "volume"
    blocked.write_text("not mounted")
    down = TrafficStore(f"sqlite:///{blocked / 'traffic.db'}", lock_timeout_ms=50)
    first = TrafficWriter(
        down, journal_dir=journal, memory_limit=1, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    req = extraction(1)
    label = FeedbackRecord(
        request_id=req.id, specialist="tickets", label="date+order_id", entities=CORRECTED
    )
    first.submit_many([req, shadow(req), label])
    assert first.flush(timeout=10) == "journal"
    assert first.close() == "journal"
    # A loose segment from an older release: no entities key on its lines.
    older = extraction(2, entities=None)
    line = record_to_json(older)
    del line["row"]["entities"]
    (journal / "000000000001.jsonl").write_text(json.dumps(line) + "\n")

    up = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    up.upgrade()
    after = TrafficWriter(up, journal_dir=journal)
    assert after.adopted == 4
    assert after.flush(timeout=30) == "database"
    frame = up.window("tickets", with_embeddings=False).set_index("id")
    assert frame.loc[req.id, "entities"] == CHAMPION
    assert frame.loc[req.id, "true_entities"] == CORRECTED
    assert frame.loc[older.id, "entities"] is None
    pairs = up.shadow_pairs("tickets", challenger_version=2)
    assert list(pairs["challenger_entities"]) == [CHALLENGER]
    after.close()
    up.dispose()
