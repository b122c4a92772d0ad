"""Alembic environment of the traffic store: online only, on a connection given by ``upgrade``.

Alembic executes this file; ``lifecycle.store.migrations.upgrade`` opens the transaction, takes
the cross-process lock and passes the connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from lifecycle.store.migrations import VERSION_TABLE
from lifecycle.store.schema import metadata


def run_migrations_online() -> None:
    """Run the pending revisions on the connection that ``upgrade`` holds."""
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError(
            "run traffic-store migrations with lifecycle.store.migrations.upgrade(url)"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
