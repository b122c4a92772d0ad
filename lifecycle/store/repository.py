"""Reads and writes of the traffic store, on SQLite or PostgreSQL.

``TrafficStore`` is the one place that speaks SQL. Writes are batched, idempotent inserts
(``write``), used by the background ``TrafficWriter``; reads return pandas frames shaped for
the monitors (``window``, ``shadow_pairs``, ``alerts``). The effective true label of a request
is decided here, in SQL, once: a human label beats a fallback label; among labels of the same
rank the latest wins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    case,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.dml import Insert

from lifecycle.config.errors import StoreError
from lifecycle.store import schema
from lifecycle.store.outcomes import OutcomeReads
from lifecycle.store.records import Record, as_utc, decode_embedding

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
#: How long a statement waits for another transaction's lock before it fails (SQLite
#: busy_timeout, PostgreSQL lock_timeout). Short: the writer retries and keeps rows meanwhile,
#: and a failed attempt is what marks the store unhealthy.
DEFAULT_LOCK_TIMEOUT_MS = 500
#: Order of tables inside one write transaction.
_WRITE_ORDER = ("requests", "shadow_predictions", "shadow_failures", "feedback", "alerts")


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


def _insert_ignoring_duplicates(dialect: str, table: Any) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``: replaying a row already written is a no-op."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing()


class TrafficStore(OutcomeReads):
    """The traffic store at one SQLAlchemy URL: idempotent batch writes and monitor reads.

    Thread-safe (one pooled engine). Reads raise ``StoreError`` when the database cannot be
    read; ``write`` raises SQLAlchemy's errors unchanged, so that the writer can tell an outage
    (retry) from a bad row (set aside).
    """

    def __init__(self, url: str | URL, *, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS) -> None:
        self.url = make_url(url)
        self.engine = create_store_engine(self.url, lock_timeout_ms=lock_timeout_ms)
        self._writes = self.engine.execution_options(sqlite_begin="immediate")
        dialect = self.engine.dialect.name
        self._inserts = {
            name: _insert_ignoring_duplicates(dialect, table)
            for name, table in schema.TABLES.items()
        }

    def __repr__(self) -> str:
        return f"TrafficStore({self.url.render_as_string(hide_password=True)!r})"

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    # -- lifecycle ---------------------------------------------------------------------

    def upgrade(self, *, timeout_s: float = 60.0) -> str:
        """Bring the database to the latest schema (idempotent, safe from several processes).

        Returns the head revision. Raises ``StoreError`` when the database cannot be reached.
        """
        from lifecycle.store.migrations import upgrade

        return upgrade(self.url, timeout_s=timeout_s)

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

    # -- writes --------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> int:
        """Insert records of any kinds in one transaction, skipping rows already present.

        Returns how many records were given. Raises SQLAlchemy's errors unchanged.
        """
        if not records:
            return 0
        rows: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            rows.setdefault(record.table, []).append(record.to_row())
        with self._writes.begin() as conn:
            for name in _WRITE_ORDER:
                if name in rows:
                    conn.execute(self._inserts[name], rows[name])
        return len(records)

    def insert_requests(self, records: Sequence[Record]) -> int:
        """Insert request records (idempotent by ``id``)."""
        return self.write(records)

    def insert_shadow(self, records: Sequence[Record]) -> int:
        """Insert shadow predictions (idempotent by ``(request_id, model_version)``)."""
        return self.write(records)

    def insert_feedback(self, records: Sequence[Record]) -> int:
        """Insert feedback labels (idempotent by ``feedback_uid``)."""
        return self.write(records)

    def insert_alerts(self, records: Sequence[Record]) -> int:
        """Insert alerts (idempotent by ``id``)."""
        return self.write(records)

    # -- point reads ---------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or exc
            raise StoreError(f"the traffic store {self.safe_url} cannot be read: {detail}") from exc

    def request_specialist(self, request_id: str) -> str | None:
        """The specialist that answered a request, or None when no such request is stored."""
        r = schema.requests
        with self._reading() as conn:
            value = conn.execute(select(r.c.specialist).where(r.c.id == request_id)).scalar()
        return None if value is None else str(value)

    def request_specialists(self, request_ids: Sequence[str]) -> dict[str, str]:
        """The specialist of each stored request among ``request_ids`` (absent: not stored).

        One query per 500 ids: bulk feedback checks thousands of ids without a round trip
        each, under every backend's limit on bound parameters.
        """
        r = schema.requests
        ids = list(dict.fromkeys(request_ids))
        found: dict[str, str] = {}
        with self._reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stmt = select(r.c.id, r.c.specialist).where(r.c.id.in_(chunk))
                found.update({str(i): str(s) for i, s in conn.execute(stmt)})
        return found

    def label_counts(self, specialist: str, *, source: str | None = "human") -> dict[str, int]:
        """Per feedback label, how many distinct requests of ``specialist`` were given it.

        ``source`` "human" (the default) counts people's labels only; None counts every
        source. A request relabelled counts under each label it was given: this is how often a
        label was asked for, the figure proposed labels are shown and capped by. One grouped
        query on the feedback table's specialist index: cheap enough for a periodic refresh.
        """
        f = schema.feedback
        stmt = select(f.c.label, func.count(func.distinct(f.c.request_id))).where(
            f.c.specialist == specialist
        )
        if source is not None:
            stmt = stmt.where(f.c.source == source)
        with self._reading() as conn:
            rows = conn.execute(stmt.group_by(f.c.label)).all()
        return {str(label): int(n) for label, n in rows}

    def counts(self, specialist: str) -> dict[str, int]:
        """Rows stored for a specialist: requests, escalations, flagged, feedback, shadow and
        shadow failures."""
        r, f, s = schema.requests, schema.feedback, schema.shadow_predictions
        sf = schema.shadow_failures

        def count(table: Any, *where: Any) -> Any:
            return select(func.count()).select_from(table).where(*where).scalar_subquery()

        stmt = select(
            count(r, r.c.specialist == specialist).label("requests"),
            count(r, r.c.specialist == specialist, r.c.escalated.is_(True)).label("escalations"),
            count(r, r.c.specialist == specialist, r.c.flagged.is_(True)).label("flagged"),
            count(f, f.c.specialist == specialist).label("feedback"),
            count(s, s.c.specialist == specialist).label("shadow"),
            count(sf, sf.c.specialist == specialist).label("shadow_failures"),
        )
        with self._reading() as conn:
            row = conn.execute(stmt).one()
        return {key: int(value) for key, value in row._mapping.items()}

    # -- monitor reads -------------------------------------------------------------------

    def window(
        self,
        specialist: str,
        *,
        last: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: int | None = None,
        with_embeddings: bool = True,
    ) -> pd.DataFrame:
        """A specialist's requests with their effective true labels, oldest first.

        ``since`` is inclusive and ``until`` exclusive; ``last`` keeps the newest N rows that
        pass the other filters. Columns: id, created_at (UTC), text, text_sha256, label (the
        answer), confidence, model_version, latency_ms, escalated, fallback_label,
        fallback_source, fallback_latency_ms, flagged, ood_score (float; NaN without a
        detector), out_of_scope (pandas' nullable ``boolean``: <NA> without a detector, so
        ``.fillna(False)`` before numpy), true_label and true_label_source (NaN without
        feedback) and, when asked, embedding (a float32 array per row, None if absent).
        """
        if last is not None and last < 0:
            raise ValueError("last must be >= 0")
        r = schema.requests
        columns = [
            r.c.id,
            r.c.created_at,
            r.c.text,
            r.c.text_sha256,
            r.c.label,
            r.c.confidence,
            r.c.model_version,
            r.c.latency_ms,
            r.c.escalated,
            r.c.fallback_label,
            r.c.fallback_source,
            r.c.fallback_latency_ms,
            r.c.flagged,
            r.c.ood_score,
            r.c.out_of_scope,
        ]
        if with_embeddings:
            columns.append(r.c.embedding)
        inner = select(*columns).where(r.c.specialist == specialist)
        inner = _time_filter(inner, r.c.created_at, since=since, until=until)
        if model_version is not None:
            inner = inner.where(r.c.model_version == model_version)
        if last is not None:
            inner = inner.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(last)
        win = inner.cte("win")
        truth, best = _effective_feedback(win.c.id)
        stmt = (
            select(
                *[c for c in win.c if c.name != "embedding"],
                truth.c.label.label("true_label"),
                truth.c.source.label("true_label_source"),
                *([win.c.embedding] if with_embeddings else []),
            )
            .select_from(win.outerjoin(truth, best))
            .order_by(win.c.created_at, win.c.id)
        )
        frame = self._frame(stmt)
        _cast(frame, bool, ("escalated", "flagged"))
        _cast(frame, "int64", ("model_version",))
        _cast(frame, float, ("confidence", "latency_ms", "fallback_latency_ms", "ood_score"))
        # Nullable: a version without a detector says nothing, which is neither True nor False.
        _cast(frame, "boolean", ("out_of_scope",))
        _nan_for_missing(
            frame, ("fallback_label", "fallback_source", "true_label", "true_label_source")
        )
        if with_embeddings:
            frame["embedding"] = _decoded(frame["embedding"])
        return frame

    def shadow_pairs(
        self,
        specialist: str,
        *,
        challenger_version: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Champion and challenger answers side by side, one row per shadowed request.

        Columns: request_id, created_at (the request's), champion_version, champion_label,
        champion_confidence, champion_latency_ms (the request's, end to end),
        challenger_version, challenger_label, challenger_confidence, challenger_latency_ms
        (queueing included: shadow work waits for idle turns), escalated, true_label,
        true_label_source (NaN without feedback). Oldest first. A shadow prediction whose
        request row is not stored yet is left out.
        """
        r, s = schema.requests, schema.shadow_predictions
        truth, best = _effective_feedback(r.c.id)
        stmt = (
            select(
                r.c.id.label("request_id"),
                r.c.created_at,
                r.c.model_version.label("champion_version"),
                r.c.label.label("champion_label"),
                r.c.confidence.label("champion_confidence"),
                r.c.latency_ms.label("champion_latency_ms"),
                s.c.model_version.label("challenger_version"),
                s.c.label.label("challenger_label"),
                s.c.confidence.label("challenger_confidence"),
                s.c.latency_ms.label("challenger_latency_ms"),
                r.c.escalated,
                truth.c.label.label("true_label"),
                truth.c.source.label("true_label_source"),
            )
            .select_from(s.join(r, r.c.id == s.c.request_id).outerjoin(truth, best))
            .where(s.c.specialist == specialist, s.c.model_version == challenger_version)
            .order_by(r.c.created_at, r.c.id)
        )
        stmt = _time_filter(stmt, r.c.created_at, since=since, until=until)
        frame = self._frame(stmt)
        _cast(frame, bool, ("escalated",))
        _cast(frame, "int64", ("champion_version", "challenger_version"))
        _cast(
            frame,
            float,
            (
                "champion_confidence",
                "challenger_confidence",
                "champion_latency_ms",
                "challenger_latency_ms",
            ),
        )
        _nan_for_missing(frame, ("true_label", "true_label_source"))
        return frame

    def shadow_failure_count(
        self,
        specialist: str,
        *,
        challenger_version: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many shadow calls of this challenger raised (each request counted once)."""
        sf = schema.shadow_failures
        stmt = (
            select(func.count())
            .select_from(sf)
            .where(sf.c.specialist == specialist, sf.c.model_version == challenger_version)
        )
        stmt = _time_filter(stmt, sf.c.created_at, since=since, until=until)
        with self._reading() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def labels_since(
        self, specialist: str, *, since: datetime | None = None, source: str = "human"
    ) -> int:
        """Requests of a specialist that got a ``source`` label at or after ``since`` (by the
        label's time, each request once): one count over the feedback table, for the gate's
        supersede rule."""
        f = schema.feedback
        stmt = select(func.count(func.distinct(f.c.request_id))).where(
            f.c.specialist == specialist, f.c.source == source
        )
        stmt = _time_filter(stmt, f.c.created_at, since=since, until=None)
        with self._reading() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def alerts(
        self,
        specialist: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Alerts, oldest first: id, specialist, kind, verdict, payload (a dict), created_at."""
        a = schema.alerts
        stmt = select(a.c.id, a.c.specialist, a.c.kind, a.c.verdict, a.c.payload, a.c.created_at)
        if specialist is not None:
            stmt = stmt.where(a.c.specialist == specialist)
        stmt = _time_filter(stmt, a.c.created_at, since=since, until=until)
        frame = self._frame(stmt.order_by(a.c.created_at, a.c.id))
        frame["payload"] = [json.loads(p) for p in frame["payload"]]
        return frame

    def _frame(self, stmt: Select[Any]) -> pd.DataFrame:
        import pandas as pd

        with self._reading() as conn:
            result = conn.execute(stmt)
            keys = list(result.keys())
            rows = result.all()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=keys)
        if "created_at" in frame:
            frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame


def _time_filter(
    stmt: Select[Any], column: Any, *, since: datetime | None, until: datetime | None
) -> Select[Any]:
    if since is not None:
        stmt = stmt.where(column >= as_utc(since, name="since"))
    if until is not None:
        stmt = stmt.where(column < as_utc(until, name="until"))
    return stmt


def _effective_feedback(request_id: Any) -> tuple[Any, Any]:
    """The feedback row holding a request's effective label, to LEFT JOIN on (alias, ON clause).

    A human label beats a fallback label whenever given; within a source the latest wins (by
    ``created_at``, then by insertion order). A correlated ``LIMIT 1`` on the request_id index
    per request: a ranked subquery joined back cannot use an index and was quadratic on SQLite.
    """
    f = schema.feedback
    best = (
        select(f.c.id)
        .where(f.c.request_id == request_id)
        .order_by(
            case((f.c.source == "human", 0), else_=1),
            f.c.created_at.desc(),
            f.c.id.desc(),
        )
        .limit(1)
        .scalar_subquery()
    )
    truth = f.alias("truth")
    return truth, truth.c.id == best


def _cast(frame: pd.DataFrame, dtype: Any, columns: Sequence[str]) -> None:
    for name in columns:
        frame[name] = frame[name].astype(dtype)


def _nan_for_missing(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    import numpy as np

    for name in columns:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)


def _decoded(values: pd.Series) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for i, raw in enumerate(values):
        out[i] = None if raw is None else decode_embedding(bytes(raw))
    return out
