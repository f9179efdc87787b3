"""entry episodes: why the person left (left_reason, left_file_id) and the orientation's own date
(orientation_on); every person whose episodes the issue-#22 rules change is queued for a refresh

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 11:00:00

Issue #22. The rules now keep a stock person whose right is suspended as followed (dormant), and an
orientation dated before T0 that belongs to the entry orients it at T0 instead of removing it
(docs/rules.md, "Settled in issue #22"). Stored episodes are recomputed from the facts: the persons with an
episode or an orientation or référent are queued (`episode_queue`); the next ingestion's refresh, or
`passerelle episodes refresh`, brings them up to date. Until then the new columns are empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("left_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("left_file_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("orientation_on", sa.Date(), nullable=True))
    op.execute(
        "INSERT INTO episode_queue (person_id, departement_code) "
        "SELECT id, departement_code FROM persons WHERE id IN ("
        "SELECT person_id FROM entry_episodes UNION "
        "SELECT person_id FROM orientation_events WHERE type IN ('orientation', 'referent')"
        ") ORDER BY id"
    )


def downgrade() -> None:
    with op.batch_alter_table("entry_episodes", schema=None) as batch_op:
        batch_op.drop_column("orientation_on")
        batch_op.drop_column("left_file_id")
        batch_op.drop_column("left_reason")
