"""Shadow failures: challenger calls that raised, counted by the promotion gate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_failures",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("specialist", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "model_version", name="pk_shadow_failures"),
    )
    op.create_index(
        "ix_shadow_failures_specialist_model_version",
        "shadow_failures",
        ["specialist", "model_version"],
    )


def downgrade() -> None:
    op.drop_table("shadow_failures")
