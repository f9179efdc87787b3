"""entry episodes: the orientation RDV's presences as dates (first missed, first seen after it, first
excused) instead of the last RDV's flag; every contract and every later référent, dated, instead of the
first contract

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 11:30:00

Issue #22, items 5 and 6. Episodes are derived from the facts: every person with a stored episode is queued
(`episode_queue`) both ways, so the next refresh (`passerelle episodes refresh`, or the next ingestion)
recomputes them with the rules of the code in place. Until then the new columns say what the old ones can:
the first missed RDV is the first RDV of an episode flagged absent; contracts and référents are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_EVERY_EPISODE = (
    "INSERT INTO episode_queue (person_id, departement_code) "
    "SELECT DISTINCT person_id, departement_code FROM entry_episodes ORDER BY person_id"
)


def upgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rdv_orientation_missed_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("rdv_orientation_seen_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("rdv_orientation_excused_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("contrats", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("referents", sa.JSON(), nullable=True))
    op.execute("UPDATE entry_episodes SET rdv_orientation_missed_on = rdv_orientation_on WHERE rdv_orientation_absent")
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.drop_column("rdv_orientation_absent")
        batch_op.drop_column("contrat")
        batch_op.drop_column("contrat_on")
    op.execute(QUEUE_EVERY_EPISODE)


def downgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rdv_orientation_absent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("contrat", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("contrat_on", sa.Date(), nullable=True))
    op.execute(
        "UPDATE entry_episodes SET rdv_orientation_absent = "
        + ("1" if op.get_bind().dialect.name == "sqlite" else "true")
        + " WHERE rdv_orientation_missed_on IS NOT NULL"
    )
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.alter_column("rdv_orientation_absent", server_default=None)
        batch_op.drop_column("referents")
        batch_op.drop_column("contrats")
        batch_op.drop_column("rdv_orientation_excused_on")
        batch_op.drop_column("rdv_orientation_seen_on")
        batch_op.drop_column("rdv_orientation_missed_on")
    op.execute(QUEUE_EVERY_EPISODE)
