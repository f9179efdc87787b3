"""keys two persons carried (ambiguous_keys): they identify neither, durably

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 05:10:00

Issue #9. A matricule + role, a NUMDEMRSA + role or names + birth date seen on two persons told apart by
NIR (or names and birth date), in one file or across files, is recorded here and removed from
`person_keys`: from then on it matches nobody.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ambiguous_keys",
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("value", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("departement_code", "value", name=op.f("pk_ambiguous_keys")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("ambiguous_keys")
