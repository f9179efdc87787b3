"""entry episodes: the contrats d'engagement (with their organisme) and every orientation from the one that
ended the episode on (re-orientations restart the contract's one-month clock)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 17:30:00

Issue #25, item 3. Both columns are derived from the orientation events: every person with an episode or a
contract or an orientation is queued (`episode_queue`); the next refresh (an ingestion, or `passerelle
episodes refresh`) fills them. Until then `orientations` is NULL and the rules read the episode's own
orientation (`end_on`, `type_parcours`: app.rules.episodes.orientations_of), and `contrats_engagement` is
NULL (no contrat d'engagement could be recorded before this revision).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contrats_engagement", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("orientations", sa.JSON(), nullable=True))
    op.execute(
        "INSERT INTO episode_queue (person_id, departement_code) "
        "SELECT id, departement_code FROM persons WHERE id IN ("
        "SELECT person_id FROM entry_episodes WHERE outcome = 'oriente' UNION "
        "SELECT person_id FROM orientation_events WHERE type IN ('orientation', 'contrat')"
        ") ORDER BY id"
    )


def downgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.drop_column("orientations")
        batch_op.drop_column("contrats_engagement")
