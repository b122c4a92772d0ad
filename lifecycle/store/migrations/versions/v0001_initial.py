"""Initial traffic store: requests, shadow predictions, feedback, alerts.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ID = 64
_NAME = 128
_LABEL = 256


def _when() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(_ID), nullable=False),
        sa.Column("specialist", sa.String(_NAME), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_sha256", sa.String(64), nullable=True),
        sa.Column("label", sa.String(_LABEL), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("fallback_label", sa.String(_LABEL), nullable=True),
        sa.Column("fallback_source", sa.String(32), nullable=True),
        sa.Column("fallback_latency_ms", sa.Float(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        _when(),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    op.create_index("ix_requests_specialist_created_at", "requests", ["specialist", "created_at"])
    op.create_index("ix_requests_created_at", "requests", ["created_at"])

    op.create_table(
        "shadow_predictions",
        sa.Column("request_id", sa.String(_ID), nullable=False),
        sa.Column("specialist", sa.String(_NAME), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(_LABEL), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        _when(),
        sa.PrimaryKeyConstraint("request_id", "model_version", name="pk_shadow_predictions"),
    )
    op.create_index(
        "ix_shadow_predictions_specialist_model_version",
        "shadow_predictions",
        ["specialist", "model_version"],
    )

    op.create_table(
        "feedback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("feedback_uid", sa.String(_ID), nullable=False),
        sa.Column("request_id", sa.String(_ID), nullable=False),
        sa.Column("specialist", sa.String(_NAME), nullable=False),
        sa.Column("label", sa.String(_LABEL), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        _when(),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("feedback_uid", name="uq_feedback_feedback_uid"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_index("ix_feedback_specialist", "feedback", ["specialist"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.String(_ID), nullable=False),
        sa.Column("specialist", sa.String(_NAME), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _when(),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_specialist_created_at", "alerts", ["specialist", "created_at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("feedback")
    op.drop_table("shadow_predictions")
    op.drop_table("requests")
