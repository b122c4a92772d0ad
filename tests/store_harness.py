"""Traffic-store databases for tests, on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

PostgreSQL is the shared server that CI starts (trust auth, database ``test``). A test gets
databases of its own, created here and dropped after it; an outage is made by refusing
connections to that database only (``ALLOW_CONNECTIONS false`` and terminating its sessions),
so the server keeps serving everyone else. A server that is down fails these tests: it is
never a reason to skip them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from lifecycle.store import TrafficStore

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def admin_engine() -> Engine:
    """An autocommit pool to the shared ``test`` database, for DDL on databases.

    Connects once before it returns: an unreachable server raises here, so that a test that
    needs PostgreSQL fails instead of skipping.
    """
    engine = create_engine(
        ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
        pool_pre_ping=True,  # a test that restarts the server leaves dead pooled connections
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return engine


@contextmanager
def new_database(admin: Engine, *, prefix: str = "lifecycle_store") -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database; dropped on exit, even if refusing."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


@contextmanager
def outage(store: TrafficStore) -> Iterator[None]:
    """The store's database unavailable to writers for the block, the way each backend fails.

    SQLite: another connection holds ``BEGIN EXCLUSIVE`` (writers time out on the lock).
    PostgreSQL: connections to the database refused and its sessions killed.
    """
    if store.engine.dialect.name == "sqlite":
        lock = sqlite3.connect(str(store.url.database), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    admin = admin_engine()
    try:
        with refused_connections(admin, store.url.database):
            yield
    finally:
        admin.dispose()
