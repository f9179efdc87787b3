"""orientation events kept aside until a flux brings their person (CSV rows, POST /api/v1/events)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 11:00:00

Issue #22, items 3 and 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pending_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("person_key", sa.String(length=80), nullable=False),
        sa.Column("payload_encrypted", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("event_type", sa.String(length=24), nullable=False),
        sa.Column("event_date", sa.Date(), nullable=False),
        sa.Column("received_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("resolved_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=120), nullable=True),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_events")),
    )
    op.create_index("ix_pending_events_status", "pending_events", ["departement_code", "status"])
    op.create_index("ix_pending_events_content", "pending_events", ["departement_code", "content_hash"])
    op.create_index("ix_pending_events_external_id", "pending_events", ["departement_code", "external_id"])


def downgrade() -> None:
    op.drop_index("ix_pending_events_external_id", table_name="pending_events")
    op.drop_index("ix_pending_events_content", table_name="pending_events")
    op.drop_index("ix_pending_events_status", table_name="pending_events")
    op.drop_table("pending_events")
