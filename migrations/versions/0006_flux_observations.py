"""every person record of every file (flux_observations) instead of the members of full files only, so an
earlier-dated file arriving late can re-examine what followed it

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 05:00:00

Issue #9 (order independence). An unchanged record gets no state row; to re-examine the facts dated after
a file that arrives late, the service must know what every later file said of each person, and which
foyers it carried. `flux_observations` keeps, for each person record, the fingerprint of its state, its
foyer, and the blocks it lacked.

Existing data: the observations that can be recovered are. Every record that gave a state row is one;
every member of a full file without a state row there said what was in force for them (its fingerprint
is that state's). The unchanged records of *daily* files before this migration left no trace and cannot
be recovered: a file dated before them that arrives after this migration cannot re-examine them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the rank given to recovered members of full files (records of a file are ranked 1, 2, ...)
RECOVERED_RANK = 1_000_000_000


def upgrade() -> None:
    op.create_table(
        "flux_observations",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("fonorg", sa.String(length=3), nullable=True),
        sa.Column("numorg", sa.String(length=3), nullable=True),
        sa.Column("matricule", sa.String(length=15), nullable=True),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("missing_blocks", sa.SmallInteger(), nullable=False),
        sa.Column("sdd_entrant", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("file_id", "seq", name=op.f("pk_flux_observations")),
    )
    op.execute(
        "INSERT INTO flux_observations "
        "(file_id, seq, person_id, fonorg, numorg, matricule, fingerprint, missing_blocks, sdd_entrant) "
        "SELECT file_id, seq, person_id, fonorg, numorg, matricule, fingerprint, 0, sdd_entrant "
        "FROM person_states WHERE absence_reason IS NULL"
    )
    # members of full files whose record changed nothing: the state in force for them at that file
    op.execute(
        f"""
        INSERT INTO flux_observations
            (file_id, seq, person_id, fonorg, numorg, matricule, fingerprint, missing_blocks, sdd_entrant)
        SELECT m.file_id, {RECOVERED_RANK} + ROW_NUMBER() OVER (PARTITION BY m.file_id ORDER BY m.person_id),
               m.person_id, s.fonorg, s.numorg, s.matricule, s.fingerprint, 0, s.sdd_entrant
        FROM flux_file_members m
        JOIN flux_files f ON f.id = m.file_id
        JOIN person_states s ON s.id = (
            SELECT s2.id FROM person_states s2
            WHERE s2.person_id = m.person_id
              AND (s2.received_on < f.received_on
                   OR (s2.received_on = f.received_on AND s2.file_created_at < f.created_at_caf)
                   OR (s2.received_on = f.received_on AND s2.file_created_at = f.created_at_caf
                       AND s2.file_id <= f.id))
            ORDER BY s2.received_on DESC, s2.file_created_at DESC, s2.file_id DESC, s2.seq DESC
            LIMIT 1)
        WHERE s.absence_reason IS NULL
          AND NOT EXISTS (SELECT 1 FROM person_states s3 WHERE s3.file_id = m.file_id AND s3.person_id = m.person_id)
        """
    )
    op.create_index("ix_flux_observations_person", "flux_observations", ["person_id"])
    op.drop_table("flux_file_members")


def downgrade() -> None:
    op.create_table(
        "flux_file_members",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "person_id", name=op.f("pk_flux_file_members")),
    )
    op.execute(
        "INSERT INTO flux_file_members (file_id, person_id) "
        "SELECT DISTINCT o.file_id, o.person_id FROM flux_observations o "
        "JOIN flux_files f ON f.id = o.file_id WHERE f.type_flux IN ('M', 'R')"
    )
    op.drop_index("ix_flux_observations_person", table_name="flux_observations")
    op.drop_table("flux_observations")
