"""weekly exports for France Travail: built files, download links, downloads, job leases; nationality

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 08:30:00

Issue #13. New tables, and `instruction_records.nationalite` (empty for records read before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "export_downloads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("link_id", sa.BigInteger(), nullable=True),
        sa.Column("export_id", sa.BigInteger(), nullable=True),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_downloads")),
    )
    with op.batch_alter_table("export_downloads", schema=None) as batch_op:
        batch_op.create_index("ix_export_downloads_export", ["export_id", "at"], unique=False)

    op.create_table(
        "export_links",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("export_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("single_use", sa.Boolean(), nullable=False),
        sa.Column("used_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recipients", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_links")),
    )
    with op.batch_alter_table("export_links", schema=None) as batch_op:
        batch_op.create_index("uq_export_links_token", ["token_hash"], unique=True)

    op.create_table(
        "exports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("week", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("filename", sa.String(length=120), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("built_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index("uq_exports_week_kind", ["departement_code", "week", "kind"], unique=True)

    op.create_table(
        "job_leases",
        sa.Column("job", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("acquired_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", "scope", name=op.f("pk_job_leases")),
    )
    with op.batch_alter_table("instruction_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nationalite", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instruction_records", schema=None) as batch_op:
        batch_op.drop_column("nationalite")
    op.drop_table("job_leases")
    op.drop_index("uq_exports_week_kind", table_name="exports")
    op.drop_table("exports")
    op.drop_index("uq_export_links_token", table_name="export_links")
    op.drop_table("export_links")
    op.drop_index("ix_export_downloads_export", table_name="export_downloads")
    op.drop_table("export_downloads")
