"""France Travail's return files (Annexe 4 "en retour") and their rows

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 08:20:00

Issue #13. New tables only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ft_return_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_by", sa.String(length=120), nullable=True),
        sa.Column("encoding", sa.String(length=20), nullable=False),
        sa.Column("separator", sa.String(length=1), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("ambiguous", sa.Integer(), nullable=False),
        sa.Column("unmatched", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_return_files")),
    )
    with op.batch_alter_table("ft_return_files", schema=None) as batch_op:
        batch_op.create_index("uq_ft_return_files_content", ["departement_code", "content_sha256"], unique=True)

    op.create_table(
        "ft_return_rows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ft_return_rows")),
    )
    with op.batch_alter_table("ft_return_rows", schema=None) as batch_op:
        batch_op.create_index("ix_ft_return_rows_file", ["file_id", "line"], unique=False)
        batch_op.create_index("ix_ft_return_rows_person", ["person_id", "file_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ft_return_rows_person", table_name="ft_return_rows")
    op.drop_index("ix_ft_return_rows_file", table_name="ft_return_rows")
    op.drop_table("ft_return_rows")
    op.drop_index("uq_ft_return_files_content", table_name="ft_return_files")
    op.drop_table("ft_return_files")
