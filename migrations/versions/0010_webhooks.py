"""partners' webhooks (RDV-Insertion): deliveries as received (encrypted) and what each says of a person

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 06:10:00

Issue #11.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("received_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("body_encrypted", sa.Text(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature_valid", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=20), nullable=True),
        sa.Column("event", sa.String(length=20), nullable=True),
        sa.Column("meta_timestamp", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_body", "webhook_deliveries", ["departement_code", "body_sha256"])
    op.create_table(
        "webhook_items",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("record_key", sa.String(length=60), nullable=False),
        sa.Column("meta_timestamp", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_items")),
    )
    op.create_index("ix_webhook_items_record", "webhook_items", ["departement_code", "record_key", "meta_timestamp"])
    op.create_index("ix_webhook_items_unmatched", "webhook_items", ["departement_code", "status"])


def downgrade() -> None:
    op.drop_index("ix_webhook_items_unmatched", table_name="webhook_items")
    op.drop_index("ix_webhook_items_record", table_name="webhook_items")
    op.drop_table("webhook_items")
    op.drop_index("ix_webhook_deliveries_body", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
