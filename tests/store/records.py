"""Records and schema steps shared by the store's tests: a request at a known time, a
database brought to an older revision, the migrated schema against the declared one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from lifecycle.store import RequestRecord, TrafficStore, schema
from lifecycle.store.migrations import VERSION_TABLE

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def request(
    i: int, *, specialist: str = "billing", version: int = 1, **extra: Any
) -> RequestRecord:
    """A request i seconds after T0 with a small deterministic embedding."""
    fields: dict[str, Any] = {
        "specialist": specialist,
        "model_version": version,
        "text": f"text number {i}",
        "label": "refund" if i % 2 else "invoice",
        "confidence": 0.5 + (i % 10) / 100,
        "embedding": np.linspace(-1.0, 1.0, 8, dtype=np.float32) * ((i % 5) + 1) / 5,
        "latency_ms": 3.0 + i,
        "created_at": T0 + timedelta(seconds=i),
    }
    fields.update(extra)
    return RequestRecord(**fields)


def assert_schema_matches(store: TrafficStore) -> None:
    """The migrated database is exactly what schema.py declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, schema.metadata) == []


def migrate_to(url: str, revision: str) -> None:
    """Bring a database to one given revision (an older release's schema), as ``upgrade`` would
    to head: one transaction on a connection handed to alembic."""
    from alembic import command

    from lifecycle.store import create_store_engine
    from lifecycle.store.migrations import alembic_config

    engine = create_store_engine(url, pooled=False)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()
