"""Writes and point reads of the traffic store, on SQLite or PostgreSQL.

``TrafficStore`` is the one place that speaks SQL. Writes are batched, idempotent inserts
(``write``), used by the background ``TrafficWriter``; the reads are split by what they serve:
point reads and counts here, windows of traffic for the monitors and the gate in
``windows.py``, what on-call watches in ``outcomes.py``. The connection itself (engine, URL,
read errors) is ``engine.py``'s, which the migrations share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.sql.dml import Insert

from lifecycle.store import schema
from lifecycle.store.engine import DEFAULT_LOCK_TIMEOUT_MS
from lifecycle.store.migrations import upgrade as upgrade_to_head
from lifecycle.store.outcomes import OutcomeReads
from lifecycle.store.records import Record
from lifecycle.store.windows import WindowReads

#: Order of tables inside one write transaction.
_WRITE_ORDER = ("requests", "shadow_predictions", "shadow_failures", "feedback", "alerts")


def _insert_ignoring_duplicates(dialect: str, table: Any) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``: replaying a row already written is a no-op."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing()


class TrafficStore(WindowReads, OutcomeReads):
    """The traffic store at one SQLAlchemy URL: idempotent batch writes and monitor reads.

    Thread-safe (one pooled engine). Reads raise ``StoreError`` when the database cannot be
    read; ``write`` raises SQLAlchemy's errors unchanged, so that the writer can tell an outage
    (retry) from a bad row (set aside).
    """

    def __init__(self, url: str | URL, *, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS) -> None:
        super().__init__(url, lock_timeout_ms=lock_timeout_ms)
        self._writes = self.engine.execution_options(sqlite_begin="immediate")
        dialect = self.engine.dialect.name
        self._inserts = {
            name: _insert_ignoring_duplicates(dialect, table)
            for name, table in schema.TABLES.items()
        }

    def upgrade(self, *, timeout_s: float = 60.0) -> str:
        """Bring the database to the latest schema (idempotent, safe from several processes).

        Returns the head revision. Raises ``StoreError`` when the database cannot be reached.
        """
        return upgrade_to_head(self.url, timeout_s=timeout_s)

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

    def request_texts(self, request_ids: Sequence[str]) -> dict[str, str | None]:
        """The stored text of each stored request among ``request_ids`` (absent: not stored;
        None: stored without its text, LIFECYCLE_STORE_TEXT hash or none). For checking an
        extractor's corrected spans against the text they index."""
        r = schema.requests
        ids = list(dict.fromkeys(request_ids))
        found: dict[str, str | None] = {}
        with self._reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stmt = select(r.c.id, r.c.text).where(r.c.id.in_(chunk))
                found.update({str(i): t for i, t in conn.execute(stmt)})
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
