"""a refused demand (Refus: DTREFURSA, MOTIREFURSA), an address abroad (PAYS, AdresseHorsFrance) and a date
of death (DTDC) in the dated states

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 06:10:00

Issue #9. Nullable columns; a state without them keeps its fingerprint (app.flux.derive.fingerprint
counts them only when set), so no stored row is rewritten and the next monthly file repeats no one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("person_states") as batch_op:
        batch_op.add_column(sa.Column("refusal_motif", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("refusal_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("pays", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("death_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("person_states") as batch_op:
        batch_op.drop_column("death_date")
        batch_op.drop_column("pays")
        batch_op.drop_column("refusal_date")
        batch_op.drop_column("refusal_motif")
