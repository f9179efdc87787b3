"""France Travail facts: identity searches (jeton encrypted), snapshots, calls, sync runs, orientation outbox

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 07:05:31

Issue #12. New tables only: nothing to recover, the downgrade drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ft_calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("api", sa.String(length=30), nullable=False),
        sa.Column("operation", sa.String(length=40), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_calls")),
    )
    with op.batch_alter_table("ft_calls", schema=None) as batch_op:
        batch_op.create_index("ix_ft_calls_at", ["at"], unique=False)
        batch_op.create_index("ix_ft_calls_person", ["person_id", "at"], unique=False)

    op.create_table(
        "ft_identities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("searched_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("certified", sa.Boolean(), nullable=True),
        sa.Column("jeton_encrypted", sa.Text(), nullable=True),
        sa.Column("jeton_expires_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_identities")),
    )
    with op.batch_alter_table("ft_identities", schema=None) as batch_op:
        batch_op.create_index("ix_ft_identities_person", ["person_id", "searched_at"], unique=False)

    op.create_table(
        "ft_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("sent_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_outbox")),
    )
    with op.batch_alter_table("ft_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_ft_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("uq_ft_outbox_event", ["event_id"], unique=True)

    op.create_table(
        "ft_snapshots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("fetched_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("no_data", sa.Boolean(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("identity_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_snapshots")),
    )
    with op.batch_alter_table("ft_snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_ft_snapshots_person", ["person_id", "kind", "fetched_at"], unique=False)

    op.create_table(
        "ft_sync_items",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "person_id", name=op.f("pk_ft_sync_items")),
    )
    op.create_table(
        "ft_sync_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("options_key", sa.String(length=200), nullable=False),
        sa.Column("started_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("holder", sa.String(length=120), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_sync_runs")),
    )
    with op.batch_alter_table("ft_sync_runs", schema=None) as batch_op:
        batch_op.create_index("ix_ft_sync_runs_open", ["departement_code", "finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ft_sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_ft_sync_runs_open")

    op.drop_table("ft_sync_runs")
    op.drop_table("ft_sync_items")
    with op.batch_alter_table("ft_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_ft_snapshots_person")

    op.drop_table("ft_snapshots")
    with op.batch_alter_table("ft_outbox", schema=None) as batch_op:
        batch_op.drop_index("uq_ft_outbox_event")
        batch_op.drop_index("ix_ft_outbox_due")

    op.drop_table("ft_outbox")
    with op.batch_alter_table("ft_identities", schema=None) as batch_op:
        batch_op.drop_index("ix_ft_identities_person")

    op.drop_table("ft_identities")
    with op.batch_alter_table("ft_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_ft_calls_person")
        batch_op.drop_index("ix_ft_calls_at")

    op.drop_table("ft_calls")
