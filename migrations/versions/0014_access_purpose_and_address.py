"""access records: the purpose the caller gave (X-Purpose) and the source address

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 09:15:00

Issue #14. Two nullable columns; the records written before have neither. On SQLite the table lives in the
attached audit journal (schema `audit`, migration 0005).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    return "audit" if op.get_bind().dialect.name == "sqlite" else None


def upgrade() -> None:
    schema = _schema()
    op.add_column("access_records", sa.Column("purpose", sa.String(length=200), nullable=True), schema=schema)
    op.add_column("access_records", sa.Column("source_address", sa.String(length=64), nullable=True), schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_column("access_records", "source_address", schema=schema)
    op.drop_column("access_records", "purpose", schema=schema)
