"""Events posted while a flux file holds SQLite's writer: kept aside, then applied (issue #27, item 3)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06 20:45:00

`queued_events` lives in the audit journal on SQLite (schema `audit`, written while the main file's writer
is held); `queued_event_outcomes` in the main database, written with the event it applied. Two new tables,
nothing to rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _journal() -> str | None:
    return "audit" if op.get_bind().dialect.name == "sqlite" else None


def upgrade() -> None:
    op.create_table(
        "queued_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("principal_id", sa.String(length=120), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queued_events")),
        schema=_journal(),
        # an id is never given twice (a purged person's last event, then a new one): an old Location never
        # names another event
        sqlite_autoincrement=True,
    )
    op.create_index("ix_queued_events_status", "queued_events", ["status", "id"], schema=_journal())
    op.create_index("ix_queued_events_key", "queued_events", ["idempotency_key"], schema=_journal())
    op.create_table(
        "queued_event_outcomes",
        sa.Column("queued_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("resolved_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queued_id", name=op.f("pk_queued_event_outcomes")),
    )


def downgrade() -> None:
    op.drop_table("queued_event_outcomes")
    op.drop_index("ix_queued_events_key", table_name="queued_events", schema=_journal())
    op.drop_index("ix_queued_events_status", table_name="queued_events", schema=_journal())
    op.drop_table("queued_events", schema=_journal())
