"""Extraction: the spans of an extractor's answer, its challenger's and a person's correction.

One nullable text column (JSON, ``lifecycle.extraction.spans.to_json``) on ``requests``,
``shadow_predictions`` and ``feedback``. A classifier's rows, and every row stored before this
revision, hold NULL. As in 0003, adding a nullable column without a default rewrites nothing:
a large traffic table upgrades in place.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TABLES = ("requests", "shadow_predictions", "feedback")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("entities", sa.Text(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 cannot drop a column in place.
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("entities")
