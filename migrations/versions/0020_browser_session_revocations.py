"""dashboard sessions ended by /deconnexion: a copied cookie opens nothing any more

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 14:10:00

Issue #23, item 11.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "browser_session_revocations",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_browser_session_revocations")),
    )


def downgrade() -> None:
    op.drop_table("browser_session_revocations")
