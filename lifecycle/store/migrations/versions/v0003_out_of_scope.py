"""Out of scope: each request's detector score and whether it passed the version's threshold.

Both columns are nullable: rows stored before this revision, and rows answered by a version
trained without a detector, hold NULL. Adding a nullable column without a default is a
metadata-only change on PostgreSQL and a plain ``ALTER TABLE ... ADD COLUMN`` on SQLite, so a
large traffic table upgrades in place without being rewritten.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("ood_score", sa.Float(), nullable=True))
    op.add_column("requests", sa.Column("out_of_scope", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("out_of_scope")
        batch.drop_column("ood_score")
