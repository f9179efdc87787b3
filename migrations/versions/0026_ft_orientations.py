"""France Travail's own orientations (lectureOrientation) kept as orientation events; an episode oriented by one

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 17:30:00

Issue #25, item 2: orientation_events.source takes "france_travail" (widened to 20), France Travail's codes
and decision date in columns of their own; entry_episodes.oriented_by takes "france_travail" (0024 widened it).
No data to rewrite: existing events are the platform's (the new columns stay NULL, which is what they mean
for them), existing episodes keep "orientation" or "referent".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = (
    ("ft_statut", sa.String(length=10)),
    ("ft_parcours", sa.String(length=3)),
    ("ft_organisme", sa.String(length=3)),
    ("ft_etat", sa.String(length=12)),
    ("ft_etat_decision", sa.String(length=30)),
    ("ft_decision_on", sa.Date()),
    ("ft_entree_parcours_on", sa.Date()),
    ("ft_code_safir", sa.String(length=20)),
    ("ft_code_aurore", sa.String(length=20)),
)


def upgrade() -> None:
    with op.batch_alter_table("orientation_events") as batch:
        batch.alter_column("source", existing_type=sa.String(length=10), type_=sa.String(length=20))
        for name, kind in NEW_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    # entry_episodes.oriented_by was widened to 20 by 0024 (it takes "france_travail")


def downgrade() -> None:
    # France Travail's orientations go with their columns: the persons they oriented are queued, so that the
    # next refresh computes their episodes without them (still waiting, or oriented by the platform)
    op.execute(
        "INSERT INTO episode_queue (person_id, departement_code) SELECT DISTINCT person_id, departement_code "
        "FROM entry_episodes WHERE oriented_by = 'france_travail'"
    )
    op.execute("DELETE FROM orientation_events WHERE source = 'france_travail'")
    with op.batch_alter_table("orientation_events") as batch:
        for name, _kind in reversed(NEW_COLUMNS):
            batch.drop_column(name)
        batch.alter_column("source", existing_type=sa.String(length=20), type_=sa.String(length=10))
