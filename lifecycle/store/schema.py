"""The traffic store's tables (SQLAlchemy Core), portable across SQLite and PostgreSQL.

The migrations in ``lifecycle/store/migrations/versions`` create exactly these tables; a test
compares the two, so a change here needs a new migration. Table and column names are a
contract with the monitors and the gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

#: Constraint and index names that are the same on every backend (and in migrations).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: Lengths of the short strings (PostgreSQL enforces them, SQLite does not).
ID_LEN = 64
NAME_LEN = 128
LABEL_LEN = 256


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no zone, so the value is stored as naive UTC
    (an ISO string, which sorts in time order) and read back as aware UTC. Naive values are
    refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetimes given to the traffic store must be timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: An autoincrementing 64-bit key; SQLite autoincrements only a plain INTEGER primary key.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

requests = Table(
    "requests",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("specialist", String(NAME_LEN), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("text", Text, nullable=True),
    Column("text_sha256", String(64), nullable=True),
    Column("label", String(LABEL_LEN), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("embedding", LargeBinary, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("escalated", Boolean, nullable=False, default=False),
    Column("fallback_label", String(LABEL_LEN), nullable=True),
    Column("fallback_source", String(32), nullable=True),
    Column("fallback_latency_ms", Float, nullable=True),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The champion's out-of-scope detector (migration 0003): its score, and whether the score
    # passed the version's threshold. NULL for a version without a detector, and for rows
    # stored before the detector existed.
    Column("ood_score", Float, nullable=True),
    Column("out_of_scope", Boolean, nullable=True),
    # An extractor's spans as JSON (``lifecycle.extraction.spans.to_json``, migration 0004);
    # NULL for a classifier, whose label is its whole answer.
    Column("entities", Text, nullable=True),
    Index(None, "specialist", "created_at"),
    Index(None, "created_at"),
)

shadow_predictions = Table(
    "shadow_predictions",
    metadata,
    # No foreign key: a shadow row may land before its request row (separate batches).
    # The primary key's leading column indexes request_id.
    Column("request_id", String(ID_LEN), nullable=False),
    Column("specialist", String(NAME_LEN), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("label", String(LABEL_LEN), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The challenger's spans, when it is an extractor (migration 0004).
    Column("entities", Text, nullable=True),
    PrimaryKeyConstraint("request_id", "model_version"),
    Index(None, "specialist", "model_version"),
)

shadow_failures = Table(
    "shadow_failures",
    metadata,
    # A challenger call that raised: the gate counts these against the challenger.
    Column("request_id", String(ID_LEN), nullable=False),
    Column("specialist", String(NAME_LEN), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("error", String(LABEL_LEN), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("request_id", "model_version"),
    Index(None, "specialist", "model_version"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("feedback_uid", String(ID_LEN), nullable=False),
    Column("request_id", String(ID_LEN), nullable=False),
    Column("specialist", String(NAME_LEN), nullable=False),
    Column("label", String(LABEL_LEN), nullable=False),
    Column("source", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # An extractor's corrected spans (migration 0004); ``label`` holds their summary.
    Column("entities", Text, nullable=True),
    UniqueConstraint("feedback_uid"),
    Index(None, "request_id"),
    Index(None, "specialist"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("specialist", String(NAME_LEN), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("verdict", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "specialist", "created_at"),
)

#: Each record table by name, as ``Record.table`` names them.
TABLES: dict[str, Table] = {
    t.name: t for t in (requests, shadow_predictions, shadow_failures, feedback, alerts)
}
