"""Rate limits shared through PostgreSQL (issue #27, item 4)

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 20:40:00

Two new tables, UNLOGGED on PostgreSQL (counters: a crash empties them, which only refills the buckets; no
WAL written per request); plain and unused on SQLite. Nothing to rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    prefixes = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "rate_limit_buckets",
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", sa.Double(), nullable=False),
        sa.Column("taken", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("principal", name=op.f("pk_rate_limit_buckets")),
        prefixes=prefixes,
    )
    op.create_table(
        "refusal_windows",
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("times", sa.ARRAY(sa.Double()).with_variant(sa.String(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_refusal_windows")),
        prefixes=prefixes,
    )


def downgrade() -> None:
    op.drop_table("refusal_windows")
    op.drop_table("rate_limit_buckets")
