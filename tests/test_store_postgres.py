"""The traffic store on the real PostgreSQL server at 127.0.0.1:5432 (CI starts it).

Each run creates its own database and drops it at the end; the outage is made by refusing
connections to that database only (``ALLOW_CONNECTIONS false`` and terminating its backends),
so the shared server keeps serving everyone else. A server that is down fails these tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from lifecycle.store import RequestRecord, TrafficStore, TrafficWriter
from lifecycle.store.migrations import current_revision, head_revision
from tests.test_store import (
    assert_schema_matches,
    check_effective_labels,
    check_round_trip,
    check_upgrade_from_0002,
    expected_rows,
    fast_writer,
    mixed_records,
    request,
    run_concurrent_upgrades,
    submit_from_threads,
    table_rows,
    wait_for,
)

pytestmark = pytest.mark.integration

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@contextmanager
def refused_connections(admin: Engine, database: str | None) -> Iterator[None]:
    """An outage of one database: new connections refused, live ones killed; then restored."""
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        )
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))


@pytest.fixture(scope="module")
def admin() -> Iterator[Engine]:
    """An autocommit connection pool to the shared ``test`` database, for DDL on databases."""
    engine = create_engine(
        ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
        pool_pre_ping=True,  # a test that restarts the server leaves dead pooled connections
    )
    with engine.connect() as conn:  # fails (not skips) when the server is down
        conn.execute(text("SELECT 1"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_url(admin: Engine) -> Iterator[str]:
    """A fresh database for this run, migrated by two processes at once; dropped at the end."""
    name = f"lifecycle_store_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def pg_store(pg_url: str) -> Iterator[TrafficStore]:
    assert current_revision(pg_url) is None
    run_concurrent_upgrades(pg_url)
    store = TrafficStore(pg_url)
    assert store.upgrade() == head_revision()  # again: a no-op
    yield store
    store.dispose()


def test_postgres_schema_round_trip_and_labels(pg_store: TrafficStore) -> None:
    assert current_revision(pg_store.url) == head_revision()
    assert_schema_matches(pg_store)
    check_round_trip(pg_store, specialist="pg-round-trip")
    check_effective_labels(pg_store, specialist="pg-labels")
    assert pg_store.ping()


def test_postgres_store_made_by_an_older_release_upgrades_in_place(admin: Engine) -> None:
    name = f"lifecycle_old_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        check_upgrade_from_0002(url, specialist="pg-old")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_postgres_rejects_a_too_long_label_and_keeps_the_rest(
    pg_store: TrafficStore, tmp_path: Path
) -> None:
    good = [request(i, specialist="pg-reject") for i in range(5)]
    bad = request(9, specialist="pg-reject", label="x" * 300)  # VARCHAR(256)
    with fast_writer(pg_store, tmp_path / "journal") as writer:
        writer.submit_many([*good[:2], bad, *good[2:]])
        assert writer.flush(timeout=20) == "database"
        assert writer.rejected == 1
    assert pg_store.counts("pg-reject")["requests"] == 5
    assert bad.id in (tmp_path / "journal" / "rejected.jsonl").read_text()


def test_postgres_outage_loses_nothing(
    admin: Engine, pg_url: str, pg_store: TrafficStore, tmp_path: Path
) -> None:
    """Connections to the database refused and its sessions killed while 600 records arrive."""
    name = make_url(pg_url).database
    store = TrafficStore(pg_url, lock_timeout_ms=200)
    before = table_rows(store)
    writer: TrafficWriter = fast_writer(store, tmp_path / "journal")
    writer.submit(request(0, specialist="pg-outage"))
    assert writer.flush(timeout=20) == "database"  # the pool holds a live connection now
    records = mixed_records(600, specialist="pg-outage")
    first = records[0]
    assert isinstance(first, RequestRecord)
    with refused_connections(admin, name):
        submit_from_threads(writer, records, threads=3)
        wait_for(lambda: writer.failures >= 1, what="a failed write")
        wait_for(lambda: writer.pending_memory <= 100, what="memory back under its bound")
        assert writer.pending_journal >= 500
        assert writer.flush(timeout=20) == "journal"
        assert writer.healthy is False
        assert writer.known_request(first.id) == "pg-outage"
    assert writer.flush(timeout=30) == "database"
    after = table_rows(store)
    added = {table: after[table] - before[table] for table in after}
    expected = expected_rows(records)
    expected["requests"] += 1
    assert added == expected
    assert writer.written == writer.submitted == 601
    assert writer.pending_memory == writer.pending_journal == 0
    assert writer.journal_files() == []
    assert writer.known_request(first.id) is None
    writer.close()
    store.dispose()
