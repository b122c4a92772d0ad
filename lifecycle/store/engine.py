"""The traffic store's connection to SQL: one engine per URL, tuned for SQLite or PostgreSQL.

``create_store_engine`` is what both the store and its migrations connect with, so that a
migration waits on the same locks, with the same timeouts, as the writes it serialises with.
``StoreEngine`` is the part of ``TrafficStore`` that its read mixins build on: the engine, a
password-free URL for messages, and reads that fail as ``StoreError``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from lifecycle.config.errors import StoreError

log = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
#: How long a statement waits for another transaction's lock before it fails (SQLite
#: busy_timeout, PostgreSQL lock_timeout). Short: the writer retries and keeps rows meanwhile,
#: and a failed attempt is what marks the store unhealthy.
DEFAULT_LOCK_TIMEOUT_MS = 500


def create_store_engine(
    url: str | URL, *, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS, pooled: bool = True
) -> Engine:
    """An engine configured for the traffic store.

    SQLite: WAL journal, ``synchronous=NORMAL``, ``busy_timeout``, parent folders made on
    connect, and explicit ``BEGIN`` (``BEGIN IMMEDIATE`` for writes, via the execution option
    ``sqlite_begin="immediate"``) so that DDL is transactional and writers queue on the lock
    instead of deadlocking. PostgreSQL: ``lock_timeout``, a connect timeout and TCP keepalives.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise StoreError(
            f"the traffic store supports {', '.join(SUPPORTED_BACKENDS)}, not {backend!r}: "
            "set LIFECYCLE_TRAFFIC_DB_URL to a sqlite:/// or postgresql:// URL"
        )
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if not pooled:
        kwargs["poolclass"] = NullPool
    lock_timeout_ms = max(int(lock_timeout_ms), 1)
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": lock_timeout_ms / 1000.0}
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine, path=_sqlite_path(parsed), lock_timeout_ms=lock_timeout_ms)
    else:
        if parsed.get_driver_name() == "psycopg2":
            # Bounded waits when the server or the network is gone (URL query wins).
            defaults = {
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            }
            kwargs["connect_args"] = {k: v for k, v in defaults.items() if k not in parsed.query}
        engine = create_engine(parsed, **kwargs)
        _configure_postgresql(engine, lock_timeout_ms=lock_timeout_ms)
    return engine


def _sqlite_path(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite(engine: Engine, *, path: Path | None, lock_timeout_ms: int) -> None:
    @event.listens_for(engine, "do_connect")
    def _make_parent(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if path is not None:
            # On failure sqlite's own "unable to open database file" follows (and is retried).
            with suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, record: Any) -> None:
        # pysqlite's own transaction handling is off: SQLAlchemy's "begin" event below
        # emits BEGIN, so that DDL runs in transactions too (migrations rely on it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {lock_timeout_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_begin") == "immediate"
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _configure_postgresql(engine: Engine, *, lock_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _timeouts(dbapi_connection: Any, record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {lock_timeout_ms}")
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


class StoreEngine:
    """The traffic store at one SQLAlchemy URL: its pooled engine, and reads that fail clearly.

    Thread-safe (one pooled engine). Reads raise ``StoreError`` when the database cannot be
    read, with the URL (password hidden) in the message.
    """

    def __init__(self, url: str | URL, *, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS) -> None:
        self.url = make_url(url)
        self.engine = create_store_engine(self.url, lock_timeout_ms=lock_timeout_ms)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except (SQLAlchemyError, OSError) as exc:
            log.debug("traffic store %s did not answer: %s", self.safe_url, exc)
            return False

    def dispose(self) -> None:
        """Close pooled connections (the store stays usable: new ones open on demand)."""
        self.engine.dispose()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or exc
            raise StoreError(f"the traffic store {self.safe_url} cannot be read: {detail}") from exc
