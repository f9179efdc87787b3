"""entry episodes: the legal deadline of CASF art. D.262-65-2 (décret n° 2024-1244): legal_clock,
legal_clock_reason, legal_deadline; every person with a stored episode is queued for a refresh

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 17:30:00

Issue #25, item 1. The columns are derived from the facts (the T0 file and the file before it), like those
of 0016 and 0017: every person with a stored episode is queued (`episode_queue`); the next ingestion's
refresh, or `passerelle episodes refresh`, recomputes them. Until then they are NULL, and a NULL
`legal_clock_reason` says "not computed yet" (a computed episode always has a reason, clock or not).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_EVERY_EPISODE = (
    "INSERT INTO episode_queue (person_id, departement_code) "
    "SELECT DISTINCT person_id, departement_code FROM entry_episodes ORDER BY person_id"
)


def upgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("legal_clock", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("legal_clock_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("legal_deadline", sa.Date(), nullable=True))
        # "france_travail" (issue #25 item 2, interfaces agreed): the same widening as the FTORIENT migration's,
        # harmless if both run
        batch_op.alter_column("oriented_by", existing_type=sa.String(length=12), type_=sa.String(length=20))
    op.execute(QUEUE_EVERY_EPISODE)


def downgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.drop_column("legal_deadline")
        batch_op.drop_column("legal_clock_reason")
        batch_op.drop_column("legal_clock")
    # oriented_by stays String(20): narrowing it could fail on stored "france_travail" values (FTORIENT's)
