"""The traffic store: records, reads for monitors, migrations, and the loss-free writer.

Tests that take the ``store`` or ``make_database`` fixture run on SQLite and on the real
PostgreSQL (see ``tests/store_harness.py``); the journal's and the log's tests run on SQLite,
since what they test is on local disk. The outage tests count: N records submitted while the
database is away must be exactly N rows once it is back, with nothing left in memory or in the
journal.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event, func, select

from lifecycle.config.errors import StoreError
from lifecycle.store import (
    AlertRecord,
    FeedbackRecord,
    Record,
    RequestRecord,
    ShadowFailureRecord,
    ShadowRecord,
    TrafficStore,
    TrafficWriter,
    decode_embedding,
    encode_embedding,
    schema,
)
from lifecycle.store.migrations import current_revision, head_revision, upgrade
from lifecycle.store.records import record_from_json, record_to_json
from tests.store.records import T0, assert_schema_matches, migrate_to, request
from tests.store_harness import outage
from tests.waits import wait_until

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------


def mixed_records(n: int, *, specialist: str = "billing") -> list[Record]:
    """n records of all kinds: per 4, a request, its shadow, a feedback label, and an alert
    every 20th (else a second request)."""
    out: list[Record] = []
    i = 0
    while len(out) < n:
        kind = len(out) % 4
        if kind == 0:
            last = request(i, specialist=specialist)
            out.append(last)
        elif kind == 1:
            out.append(
                ShadowRecord(
                    request_id=last.id,
                    specialist=specialist,
                    model_version=2,
                    label="refund",
                    confidence=0.7,
                    latency_ms=2.0,
                )
            )
        elif kind == 2:
            out.append(FeedbackRecord(request_id=last.id, specialist=specialist, label="refund"))
        elif i % 20 == 3:
            out.append(
                AlertRecord(specialist=specialist, kind="drift", verdict="ok", payload={"i": i})
            )
        else:
            out.append(request(i, specialist=specialist))
        i += 1
    return out


def expected_rows(records: Sequence[Record]) -> dict[str, int]:
    counts = dict.fromkeys(schema.TABLES, 0)
    for record in records:
        counts[record.table] += 1
    return counts


def table_rows(store: TrafficStore) -> dict[str, int]:
    """Rows per table, counted straight from the database."""
    with store.engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in schema.TABLES.items()
        }


def submit_from_threads(
    writer: TrafficWriter, records: Sequence[Record], *, threads: int = 4
) -> None:
    """Submit records from several threads at once (each thread keeps its share in order)."""
    start = threading.Barrier(threads)

    def run(share: Sequence[Record]) -> None:
        start.wait()
        for record in share:
            writer.submit(record)

    workers = [threading.Thread(target=run, args=(records[k::threads],)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def fast_writer(store: TrafficStore, journal: Path, **overrides: Any) -> TrafficWriter:
    """A writer with small bounds and short backoff, so outages show up in milliseconds."""
    options: dict[str, Any] = {
        "batch_size": 50,
        "max_wait_s": 0.02,
        "memory_limit": 100,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.1,
        "segment_records": 300,
    }
    options.update(overrides)
    return TrafficWriter(store, journal_dir=journal, **options)


def run_concurrent_upgrades(url: str, *, processes: int = 2) -> None:
    """Migrate one database from several fresh processes at the same instant."""
    code = textwrap.dedent(
        """
        import sys, time
        from lifecycle.store.migrations import upgrade
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        print(upgrade(sys.argv[1]))
        """
    )
    start_at = time.time() + 2.0  # past the imports of both
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == head_revision()


# -- records ------------------------------------------------------------------------------


def test_embedding_codec_is_float16_little_endian() -> None:
    assert encode_embedding([1.0, -2.0]) == b"\x00\x3c\x00\xc0"
    vector = np.random.default_rng(0).normal(size=384).astype(np.float32)
    data = encode_embedding(vector)
    assert len(data) == 2 * 384
    back = decode_embedding(data)
    assert back.dtype == np.float32 and back.shape == (384,)
    np.testing.assert_allclose(back, vector, rtol=1e-3, atol=1e-3)
    back[0] = 42.0  # a fresh, writable array
    assert encode_embedding(data) == data  # bytes pass through
    with pytest.raises(ValueError, match="1-D"):
        encode_embedding(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="even"):
        decode_embedding(b"\x00\x3c\x00")


def test_records_validate_where_they_are_made() -> None:
    record = request(
        0, embedding=[0.5, 0.25], model_version=np.int64(3), confidence=np.float32(0.5)
    )
    assert record.embedding == encode_embedding([0.5, 0.25])
    assert type(record.model_version) is int and type(record.confidence) is float
    hashed = RequestRecord(
        specialist="s", model_version=1, text="héllo", label="a", confidence=1.0, latency_ms=1.0
    )
    assert hashed.text_sha256 == hashlib.sha256("héllo".encode()).hexdigest()
    assert len(hashed.id) == 32 and hashed.created_at.tzinfo == UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        request(0, created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="source"):
        FeedbackRecord(request_id="r", specialist="s", label="a", source="oracle")
    with pytest.raises(ValueError, match="model_version"):
        request(0, model_version="three")
    with pytest.raises(ValueError):
        AlertRecord(specialist="s", kind="k", verdict="v", payload={"x": float("nan")})
    with pytest.raises(ValueError, match="label"):
        ShadowRecord(
            request_id="r", specialist="s", model_version=1, label="", confidence=1, latency_ms=1
        )
    # Created in another timezone, stored as the same instant in UTC.
    local = request(0, created_at=datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert local.created_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert local.created_at.tzinfo == UTC


def test_every_record_kind_survives_the_journal_format_exactly() -> None:
    records: list[Record] = [
        request(1, escalated=True, fallback_label="a", fallback_source="review", flagged=True),
        request(2, text=None, embedding=None, fallback_latency_ms=3.25),
        request(3, ood_score=0.125, out_of_scope=False),
        request(4, ood_score=7.5, out_of_scope=True, escalated=True, fallback_source="review"),
        *mixed_records(4)[1:3],
        AlertRecord(specialist=None, kind="rollback", verdict="done", payload={"v": [1, 2]}),
    ]
    for record in records:
        line = json.dumps(record_to_json(record))
        assert record_from_json(json.loads(line)) == record


# -- store --------------------------------------------------------------------------------


def test_round_trip_of_each_record_kind(store: TrafficStore) -> None:
    """Each record kind written and read back field by field; replay adds nothing."""
    full = request(
        1,
        specialist="billing",
        escalated=True,
        fallback_label="refund",
        fallback_source="openai",
        fallback_latency_ms=812.5,
        flagged=True,
        ood_score=np.float32(1.75),
        out_of_scope=np.bool_(True),
    )
    redacted = request(2, specialist="billing", text=None, text_sha256="ab" * 32, embedding=None)
    shadow = ShadowRecord(
        request_id=full.id,
        specialist="billing",
        model_version=2,
        label="invoice",
        confidence=0.61,
        latency_ms=4.5,
        created_at=T0 + timedelta(seconds=5),
    )
    failure = ShadowFailureRecord(
        request_id=redacted.id,
        specialist="billing",
        model_version=2,
        error="RuntimeError: " + "x" * 400,  # cut to the column's 256 characters
    )
    label = FeedbackRecord(
        request_id=full.id, specialist="billing", label="refund", source="fallback"
    )
    alert = AlertRecord(
        specialist="billing",
        kind="drift",
        verdict="retrain",
        payload={"share": 0.4, "columns": ["text", "embedding"]},
        created_at=T0 + timedelta(hours=1, microseconds=123),
    )
    batch: list[Record] = [full, redacted, shadow, failure, label, alert]
    assert store.write(batch) == 6
    assert len(failure.error) == 256
    assert store.shadow_failure_count("billing", challenger_version=2) == 1
    assert store.shadow_failure_count("billing", challenger_version=3) == 0

    frame = store.window("billing")
    assert list(frame["id"]) == [full.id, redacted.id]
    row = frame.iloc[0]
    assert row["created_at"] == full.created_at
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert row["text"] == full.text and row["text_sha256"] == full.text_sha256
    assert row["label"] == full.label and row["confidence"] == pytest.approx(full.confidence)
    assert row["model_version"] == 1 and row["latency_ms"] == pytest.approx(full.latency_ms)
    assert bool(row["escalated"]) and bool(row["flagged"])
    assert row["fallback_label"] == "refund" and row["fallback_source"] == "openai"
    assert row["fallback_latency_ms"] == pytest.approx(812.5)
    assert row["ood_score"] == pytest.approx(1.75)
    assert row["true_label"] == "refund" and row["true_label_source"] == "fallback"
    assert isinstance(full.embedding, bytes)
    np.testing.assert_array_equal(row["embedding"], decode_embedding(full.embedding))
    other = frame.iloc[1]
    assert other["text"] is None and other["text_sha256"] == "ab" * 32
    assert other["embedding"] is None
    assert math.isnan(other["true_label"]) and math.isnan(other["fallback_label"])
    assert not bool(other["escalated"])
    # No detector: no score and no verdict (neither True nor False).
    assert math.isnan(other["ood_score"])
    assert str(frame["out_of_scope"].dtype) == "boolean"
    assert list(frame["out_of_scope"]) == [True, pd.NA]

    pairs = store.shadow_pairs("billing", challenger_version=2)
    assert len(pairs) == 1
    pair = pairs.iloc[0]
    assert pair["request_id"] == full.id and pair["challenger_label"] == "invoice"
    assert pair["champion_label"] == full.label and pair["champion_version"] == 1
    assert pair["challenger_confidence"] == pytest.approx(0.61)
    assert pair["challenger_latency_ms"] == pytest.approx(4.5)
    assert pair["champion_latency_ms"] == pytest.approx(full.latency_ms)

    alerts = store.alerts("billing")
    assert list(alerts["id"]) == [alert.id]
    assert alerts.iloc[0]["payload"] == {"share": 0.4, "columns": ["text", "embedding"]}
    assert alerts.iloc[0]["created_at"] == alert.created_at
    assert alerts.iloc[0]["verdict"] == "retrain"
    assert store.alerts("billing", since=T0 + timedelta(hours=2)).empty

    assert store.request_specialist(full.id) == "billing"
    assert store.request_specialist("no-such-id") is None
    expected = {
        "requests": 2,
        "escalations": 1,
        "flagged": 1,
        "feedback": 1,
        "shadow": 1,
        "shadow_failures": 1,
    }
    assert store.counts("billing") == expected

    # Replaying the same records (a journal replayed twice) adds nothing and does not fail.
    store.write(batch)
    store.write(batch[::-1])
    assert store.counts("billing") == expected
    assert len(store.alerts("billing")) == 1
    # The same label given again by a new call is a new feedback row (every label is kept).
    store.write([FeedbackRecord(request_id=full.id, specialist="billing", label="refund")])
    assert store.counts("billing")["feedback"] == 2
    assert store.ping()


def test_window_filters_and_effective_true_labels(store: TrafficStore) -> None:
    """window(): last / since / until / version filters; last label wins, human beats fallback."""
    specialist = "billing"
    reqs = [request(i, specialist=specialist, version=1 if i < 4 else 2) for i in range(6)]
    store.write(reqs[::-1])  # insertion order must not matter: created_at orders
    at = T0 + timedelta(minutes=10)

    def label(i: int, value: str, source: str, minutes: int) -> FeedbackRecord:
        return FeedbackRecord(
            request_id=reqs[i].id,
            specialist=specialist,
            label=value,
            source=source,
            created_at=at + timedelta(minutes=minutes),
        )

    store.write(
        [
            # 0: a human label beats a later fallback label.
            label(0, "human-early", "human", 1),
            label(0, "fallback-late", "fallback", 5),
            # 1: two human labels: the last one wins, whatever the insertion order.
            label(1, "second", "human", 3),
            label(1, "first", "human", 2),
            # 2: fallback only.
            label(2, "fb", "fallback", 1),
            # 4: two fallback labels: the last one wins.
            label(4, "fb-old", "fallback", 1),
            label(4, "fb-new", "fallback", 2),
            # 3 and 5: no label.
        ]
    )
    frame = store.window(specialist)
    assert list(frame["id"]) == [r.id for r in reqs]
    truth = dict(zip(frame["id"], frame["true_label"], strict=True))
    source = dict(zip(frame["id"], frame["true_label_source"], strict=True))
    assert truth[reqs[0].id] == "human-early" and source[reqs[0].id] == "human"
    assert truth[reqs[1].id] == "second"
    assert truth[reqs[2].id] == "fb" and source[reqs[2].id] == "fallback"
    assert truth[reqs[4].id] == "fb-new"
    assert math.isnan(truth[reqs[3].id]) and math.isnan(truth[reqs[5].id])
    assert frame["true_label"].isna().sum() == 2

    last = store.window(specialist, last=2, with_embeddings=False)
    assert list(last["id"]) == [reqs[4].id, reqs[5].id]
    assert "embedding" not in last.columns
    since = store.window(specialist, since=T0 + timedelta(seconds=3))
    assert list(since["id"]) == [r.id for r in reqs[3:]]
    until = store.window(specialist, until=T0 + timedelta(seconds=2))
    assert list(until["id"]) == [reqs[0].id, reqs[1].id]
    v2 = store.window(specialist, model_version=2)
    assert list(v2["id"]) == [reqs[4].id, reqs[5].id]
    v1_last = store.window(specialist, model_version=1, last=1, since=T0)
    assert list(v1_last["id"]) == [reqs[3].id]
    # Another timezone means the same instant.
    tz = timezone(timedelta(hours=5))
    assert len(store.window(specialist, since=(T0 + timedelta(seconds=4)).astimezone(tz))) == 2
    assert store.window(specialist, last=0).empty
    assert store.window("nobody").empty
    with pytest.raises(ValueError, match="timezone-aware"):
        store.window(specialist, since=datetime(2026, 1, 1))


def test_shadow_pairs_join_champion_and_challenger(store: TrafficStore) -> None:
    reqs = [request(i) for i in range(4)]
    shadows = [
        ShadowRecord(
            request_id=r.id,
            specialist="billing",
            model_version=v,
            label="refund",
            confidence=0.9,
            latency_ms=1.0,
        )
        for r, v in [(reqs[0], 3), (reqs[2], 3), (reqs[3], 4)]
    ]
    orphan = ShadowRecord(
        request_id="not-stored-yet",
        specialist="billing",
        model_version=3,
        label="refund",
        confidence=0.9,
        latency_ms=1.0,
    )
    store.write([*reqs, *shadows, orphan])
    store.write([FeedbackRecord(request_id=reqs[2].id, specialist="billing", label="invoice")])
    pairs = store.shadow_pairs("billing", challenger_version=3)
    assert list(pairs["request_id"]) == [reqs[0].id, reqs[2].id]
    assert set(pairs["challenger_version"]) == {3}
    assert list(pairs["champion_label"]) == [reqs[0].label, reqs[2].label]
    assert math.isnan(pairs.iloc[0]["true_label"]) and pairs.iloc[1]["true_label"] == "invoice"
    assert list(
        store.shadow_pairs("billing", challenger_version=3, since=T0 + timedelta(seconds=1))[
            "request_id"
        ]
    ) == [reqs[2].id]
    assert len(store.shadow_pairs("billing", challenger_version=4)) == 1
    assert store.shadow_pairs("other", challenger_version=3).empty


def test_unsupported_url_and_unreachable_reads_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="supports"):
        TrafficStore("mysql://nobody@localhost/x")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    broken = TrafficStore(f"sqlite:///{blocker / 'traffic.db'}")
    assert broken.ping() is False
    with pytest.raises(StoreError, match="cannot be read"):
        broken.window("billing")
    with pytest.raises(StoreError, match="cannot migrate"):
        broken.upgrade()


# -- migrations ---------------------------------------------------------------------------


def test_migrations_are_idempotent_concurrent_and_match_the_schema(
    make_database: Callable[[], str],
) -> None:
    # Two processes at the same instant on a fresh database.
    url = make_database()
    assert current_revision(url) is None
    run_concurrent_upgrades(url)
    assert current_revision(url) == head_revision()
    # Two threads at once on another fresh database, then once more (a no-op).
    url2 = make_database()
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(url2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=migrate) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert upgrade(url2) == head_revision()
    for migrated in (url, url2):
        store = TrafficStore(migrated)
        assert_schema_matches(store)
        store.dispose()


def test_sqlite_connections_use_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    store = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    store.upgrade()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    store.dispose()


def test_a_store_made_by_an_older_release_upgrades_in_place(
    make_database: Callable[[], str],
) -> None:
    """A store made by revision 0002 with a row in it upgrades in place: the row reads back
    with no out-of-scope verdict, and new rows carry one."""
    url = make_database()
    migrate_to(url, "0002")
    assert current_revision(url) == "0002"
    old = request(1)
    row = old.to_row()
    del row["ood_score"], row["out_of_scope"], row["entities"]  # not in the 0002 table
    store = TrafficStore(url)
    try:
        with store.engine.begin() as conn:
            conn.execute(schema.requests.insert(), [row])
        assert store.upgrade() == head_revision()
        assert current_revision(url) == head_revision()
        assert_schema_matches(store)
        new = request(2, ood_score=3.5, out_of_scope=True)
        store.write([new])
        frame = store.window("billing", with_embeddings=False)
        assert list(frame["id"]) == [old.id, new.id]
        before, after = frame.iloc[0], frame.iloc[1]
        assert before["label"] == old.label and before["text"] == old.text
        assert math.isnan(before["ood_score"]) and after["ood_score"] == pytest.approx(3.5)
        assert list(frame["out_of_scope"]) == [pd.NA, True]
    finally:
        store.dispose()


def test_journal_lines_written_before_out_of_scope_still_read() -> None:
    """A WAL or journal line from before the out-of-scope fields replays as a row without them."""
    record = request(7, escalated=True, fallback_source="review")
    line = record_to_json(record)
    del line["row"]["ood_score"], line["row"]["out_of_scope"]
    back = record_from_json(json.loads(json.dumps(line)))
    assert isinstance(back, RequestRecord)
    assert back.ood_score is None and back.out_of_scope is None
    assert back == record


# -- writer -------------------------------------------------------------------------------


def test_writer_batches_many_submits_into_few_transactions(
    store: TrafficStore, tmp_path: Path
) -> None:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    records = mixed_records(2000)
    writer = TrafficWriter(store, journal_dir=tmp_path / "journal", batch_size=256, max_wait_s=0.05)
    submit_from_threads(writer, records)
    assert writer.flush(timeout=30) == "database"
    assert table_rows(store) == expected_rows(records)
    assert writer.submitted == writer.written == 2000
    assert writer.pending_memory == writer.pending_journal == writer.failures == 0
    assert writer.healthy
    # At most 256 rows a transaction, and far fewer transactions than records.
    assert math.ceil(2000 / 256) <= len(commits) <= 40
    assert writer.close() == "database"
    assert writer.journal_files() == []
    with pytest.raises(StoreError, match="closed"):
        writer.submit(request(0))


def test_an_outage_loses_nothing(store: TrafficStore, tmp_path: Path) -> None:
    """The database away while 1,000 records arrive from 4 threads: SQLite locked by another
    connection, PostgreSQL refusing connections with its sessions killed."""
    writer = fast_writer(store, tmp_path / "journal")
    warm = request(0, specialist="warm")
    writer.submit(warm)
    assert writer.flush(timeout=20) == "database"  # the pool holds a live connection now
    first = [request(i) for i in range(40)]
    rest = mixed_records(960)
    with outage(store):
        writer.submit_many(first)
        wait_until(lambda: writer.failures >= 1, what="a failed write")
        # Below the memory bound: held in memory, nothing in the journal yet.
        assert writer.pending_memory == 40 and writer.pending_journal == 0
        assert writer.healthy is False
        assert writer.known_request(first[0].id) == "billing"
        submit_from_threads(writer, rest)
        wait_until(lambda: writer.pending_memory <= 100, what="memory back under its bound")
        assert writer.pending_journal >= 1000 - 100
        assert writer.journal_files()
        assert writer.flush(timeout=10) == "journal"
        assert writer.pending_memory == 0 and writer.pending_journal == 1000
        assert writer.known_request(first[0].id) == "billing"  # still answered from the index
    assert writer.flush(timeout=30) == "database"
    assert table_rows(store) == expected_rows([warm, *first, *rest])
    assert writer.written == writer.submitted == 1001
    assert writer.pending_memory == writer.pending_journal == 0
    assert writer.journal_files() == []
    assert writer.healthy
    assert writer.known_request(first[0].id) is None
    assert store.request_specialist(first[0].id) == "billing"
    writer.close()


def test_unreachable_database_path_loses_nothing(tmp_path: Path) -> None:
    """The database's folder is a file until the outage ends; the writer then creates and
    migrates the database itself and writes everything."""
    blocked = tmp_path / "volume"
    blocked.write_text("not mounted")
    store = TrafficStore(f"sqlite:///{blocked / 'traffic.db'}", lock_timeout_ms=50)
    writer = fast_writer(store, tmp_path / "journal")
    records = mixed_records(600)
    submit_from_threads(writer, records, threads=3)
    wait_until(lambda: writer.failures >= 1, what="a failed write")
    wait_until(lambda: writer.pending_memory <= 100, what="memory back under its bound")
    assert writer.pending_journal >= 500
    assert writer.flush(timeout=10) == "journal"
    assert writer.healthy is False
    blocked.unlink()
    assert writer.flush(timeout=30) == "database"
    assert table_rows(store) == expected_rows(records)
    assert writer.written == 600 and writer.pending_journal == 0
    assert writer.journal_files() == []
    writer.close()
    store.dispose()


def test_a_live_writers_journal_is_left_alone_and_replayed_after_it_stops(tmp_path: Path) -> None:
    blocked = tmp_path / "volume"
    blocked.write_text("not mounted")
    down = TrafficStore(f"sqlite:///{blocked / 'traffic.db'}", lock_timeout_ms=50)
    up = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    journal = tmp_path / "journal"
    first = fast_writer(down, journal)
    records = mixed_records(150)
    first.submit_many(records)
    assert first.flush(timeout=10) == "journal"
    other = fast_writer(up, journal)  # a second live process on the same folder
    assert other.adopted == 0
    assert other.close() == "database"
    assert first.pending_journal == 150
    assert first.close() == "journal"  # database still down: kept for the next start
    assert first.journal_files()  # left on disk, unlocked
    after = fast_writer(up, journal)
    assert after.adopted == 150
    assert after.flush(timeout=30) == "database"
    assert table_rows(up) == expected_rows(records)
    assert after.journal_files() == []
    after.close()
    assert sorted(p.name for p in journal.iterdir()) == [".adopt.lock"]


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from lifecycle.store import RequestRecord, TrafficStore, TrafficWriter
    store = TrafficStore(sys.argv[1], lock_timeout_ms=50)
    writer = TrafficWriter(store, journal_dir=sys.argv[2], memory_limit=40, batch_size=20,
                           backoff_initial_s=0.01, backoff_max_s=0.05)
    ids = []
    for i in range(int(sys.argv[3])):
        record = RequestRecord(specialist="crashed", model_version=1, text=f"t{i}", label="a",
                               confidence=0.5, latency_ms=1.0)
        writer.submit(record)
        ids.append(record.id)
    print(writer.flush(timeout=20))
    print(",".join(ids), flush=True)
    os._exit(3)  # a crash: no close(), no atexit
    """
)


def test_journal_of_a_crashed_process_is_replayed_at_start(tmp_path: Path) -> None:
    blocked = tmp_path / "volume"
    blocked.write_text("not mounted")
    journal = tmp_path / "journal"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_WRITER,
            f"sqlite:///{blocked / 'x.db'}",
            str(journal),
            "120",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    where, ids = proc.stdout.split()
    assert where == "journal"
    segments = sorted(journal.glob("*/*.jsonl"))
    assert segments
    with open(segments[-1], "ab") as handle:
        handle.write(b'{"table": "requests", "row": {"id": "torn')  # killed mid-write

    store = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    store.upgrade()
    writer = fast_writer(store, journal)
    new = request(0, specialist="crashed", text="new")
    writer.submit(new)
    assert writer.adopted == 120
    assert writer.flush(timeout=30) == "database"
    frame = store.window("crashed", with_embeddings=False)
    assert set(frame["id"]) == {*ids.split(","), new.id}
    with sqlite3.connect(tmp_path / "traffic.db") as conn:  # insertion order: journal first
        texts = [t for (t,) in conn.execute("SELECT text FROM requests ORDER BY rowid")]
    assert texts == [f"t{i}" for i in range(120)] + ["new"]
    assert writer.written == 121 and writer.submitted == 1
    assert writer.journal_files() == []
    writer.close()
    store.dispose()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from lifecycle.store import FeedbackRecord, RequestRecord, TrafficStore, TrafficWriter
    store = TrafficStore(sys.argv[1])
    # The database is up, but the batch never fills nor times out before the kill.
    writer = TrafficWriter(store, journal_dir=sys.argv[2], batch_size=10_000, max_wait_s=60,
                           durability=sys.argv[3])
    ids = []
    for i in range(200):
        record = RequestRecord(specialist="killed", model_version=1, text=f"t{i}", label="a",
                               confidence=0.5, latency_ms=1.0)
        seq = writer.submit(record)
        if i % 3 == 0:
            seq = writer.submit(FeedbackRecord(request_id=record.id, specialist="killed",
                                               label="b"))
        writer.commit(seq)  # what the gateway does before it answers
        ids.append(record.id)
    print(",".join(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("durability", ["write", "fsync", "memory"])
def test_acknowledged_records_survive_sigkill_with_a_write_ahead_log(
    tmp_path: Path, durability: str
) -> None:
    url = f"sqlite:///{tmp_path / 'traffic.db'}"
    store = TrafficStore(url)
    store.upgrade()
    journal = tmp_path / "journal"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, url, str(journal), durability],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    ids = set(proc.stdout.split()[0].split(","))
    assert len(ids) == 200

    writer = fast_writer(store, journal)
    assert writer.flush(timeout=30) == "database"
    stored = set(store.window("killed", with_embeddings=False)["id"])
    labels = table_rows(store)["feedback"]
    writer.close()
    store.dispose()
    if durability == "memory":
        # The control: without the log, answered records die with the process.
        assert stored == set() and labels == 0
    else:
        assert stored == ids and labels == 67
        assert writer.adopted >= 267
        assert sorted(p.name for p in journal.iterdir()) == [".adopt.lock"]


def test_the_write_ahead_log_is_emptied_as_the_database_catches_up(
    store: TrafficStore, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    writer = TrafficWriter(store, journal_dir=journal, durability="write", segment_records=50)
    records = mixed_records(400)
    for start in range(0, 400, 40):
        writer.commit(writer.submit_many(records[start : start + 40]))
    assert writer.flush(timeout=30) == "database"
    wait_until(lambda: not list(journal.glob("*/wal-*.jsonl")), what="log segments deleted")
    assert table_rows(store) == expected_rows(records)
    writer.close()
    assert sorted(p.name for p in journal.iterdir()) == [".adopt.lock"]


def test_a_log_that_cannot_be_written_refuses_the_acknowledgement(
    store: TrafficStore, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    writer = TrafficWriter(
        store, journal_dir=journal, durability="write", max_wait_s=60, batch_size=10_000
    )
    folder = next(p for p in journal.iterdir() if p.is_dir())
    aside = folder.with_name("aside")
    folder.rename(aside)
    folder.write_text("a file where the folder was")  # works as root too, unlike chmod
    try:
        record = request(1)
        seq = writer.submit(record)
        with pytest.raises(StoreError, match="cannot be written"):
            writer.commit(seq)
    finally:
        folder.unlink()
        aside.rename(folder)
    writer.commit(seq)  # writable again: the same records are logged now
    assert writer.close() == "database"
    assert table_rows(store)["requests"] == 1


def test_rows_the_database_refuses_are_set_aside_not_retried(
    store: TrafficStore, tmp_path: Path
) -> None:
    good = [request(i) for i in range(9)]
    bad = request(99)
    object.__setattr__(bad, "label", None)  # NOT NULL: the database refuses it
    writer = fast_writer(store, tmp_path / "journal")
    writer.submit_many([*good[:4], bad, *good[4:]])
    assert writer.flush(timeout=10) == "database"
    assert table_rows(store)["requests"] == 9
    assert writer.rejected == 1 and writer.written == 10
    rejected = (tmp_path / "journal" / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and bad.id in rejected[0]
    # SQLite says "NOT NULL constraint failed", PostgreSQL "violates not-null constraint".
    assert "not null" in rejected[0].lower().replace("-", " ")
    writer.close()


# SQLite does not enforce VARCHAR lengths: it stores the long label.
@pytest.mark.parametrize("make_database", ["postgresql"], indirect=True)
@pytest.mark.integration
def test_a_value_longer_than_its_column_is_set_aside(store: TrafficStore, tmp_path: Path) -> None:
    good = [request(i) for i in range(5)]
    bad = request(9, label="x" * 300)  # VARCHAR(256)
    with fast_writer(store, tmp_path / "journal") as writer:
        writer.submit_many([*good[:2], bad, *good[2:]])
        assert writer.flush(timeout=20) == "database"
        assert writer.rejected == 1
    assert store.counts("billing")["requests"] == 5
    assert bad.id in (tmp_path / "journal" / "rejected.jsonl").read_text()


def test_writer_refuses_what_is_not_a_record(store: TrafficStore, tmp_path: Path) -> None:
    with TrafficWriter(store, journal_dir=tmp_path / "journal") as writer:
        with pytest.raises(TypeError):
            writer.submit({"id": "x"})  # type: ignore[arg-type]
        assert writer.known_request("unknown") is None
        assert writer.stats().submitted == 0
