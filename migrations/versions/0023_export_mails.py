"""the weekly e-mail kept from before it is sent until the mail server took it: sent once, retried until sent

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 14:40:00

Issue #24, item 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "export_mails",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("week", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("message_encrypted", sa.Text(), nullable=False),
        sa.Column("export_ids", sa.JSON(), nullable=False),
        sa.Column("link_ids", sa.JSON(), nullable=False),
        sa.Column("expires_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_mails")),
    )
    op.create_index("uq_export_mails_message_id", "export_mails", ["message_id"], unique=True)
    op.create_index("ix_export_mails_week", "export_mails", ["departement_code", "week", "status"])


def downgrade() -> None:
    op.drop_index("ix_export_mails_week", table_name="export_mails")
    op.drop_index("uq_export_mails_message_id", table_name="export_mails")
    op.drop_table("export_mails")
