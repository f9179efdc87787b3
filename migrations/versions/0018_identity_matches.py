"""identity_matches: the records joined to a known person by names and birth date alone, for review and split

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 11:00:00

Issue #22, item 1. New table only: each identity-only match an ingestion accepts, with the file, the foyer
and person positions and the foyer's key (never a name, a NIR or a birth date); `passerelle persons split`
marks one `split`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_matches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("foyer_position", sa.Integer(), nullable=False),
        sa.Column("person_position", sa.Integer(), nullable=False),
        sa.Column("fonorg", sa.String(length=3), nullable=True),
        sa.Column("numorg", sa.String(length=3), nullable=True),
        sa.Column("matricule", sa.String(length=15), nullable=True),
        sa.Column("role", sa.String(length=3), nullable=True),
        sa.Column("identity_key", sa.String(length=32), nullable=False),
        sa.Column("record_keys", sa.JSON(), nullable=False),
        sa.Column("brought_nir", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("split_person_id", sa.BigInteger(), nullable=True),
        sa.Column("split_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("split_by", sa.String(length=120), nullable=True),
        sa.Column("split_reason", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_matches")),
    )
    with op.batch_alter_table("identity_matches", schema=None) as batch_op:
        batch_op.create_index("ix_identity_matches_departement", ["departement_code", "status"], unique=False)
        batch_op.create_index("ix_identity_matches_file", ["file_id"], unique=False)
        batch_op.create_index("ix_identity_matches_person", ["person_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_identity_matches_person", table_name="identity_matches")
    op.drop_index("ix_identity_matches_file", table_name="identity_matches")
    op.drop_index("ix_identity_matches_departement", table_name="identity_matches")
    op.drop_table("identity_matches")
