"""the instruction flux (VIRS0901): flux_files.nature, and what its records say of each person

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 06:00:00

Issue #10. NATFLUX tells a beneficiary flux (D) from an instruction flux (I); the latter's records (the
demand's contacts and consents, SuiviAppuiOrientation, parcours, DSP codes) go to `instruction_records`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("flux_files") as batch_op:
        batch_op.add_column(sa.Column("nature", sa.String(length=1), server_default="D", nullable=False))
    op.create_table(
        "instruction_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("file_created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("role", sa.String(length=3), nullable=True),
        sa.Column("statut_demande", sa.String(length=2), nullable=True),
        sa.Column("telephone", sa.String(length=40), nullable=True),
        sa.Column("telephone_nature", sa.String(length=3), nullable=True),
        sa.Column("telephone_materiel", sa.String(length=3), nullable=True),
        sa.Column("telephone_consent", sa.String(length=1), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_consent", sa.String(length=1), nullable=True),
        sa.Column("contact_problems", sa.String(length=100), nullable=True),
        sa.Column("suivi", sa.JSON(), nullable=False),
        sa.Column("parcours_calcule", sa.String(length=10), nullable=True),
        sa.Column("parcours_modifie", sa.String(length=10), nullable=True),
        sa.Column("parcours_refuse", sa.Boolean(), nullable=True),
        sa.Column("parcours_motif", sa.String(length=10), nullable=True),
        sa.Column("dsp", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruction_records")),
    )
    op.create_index("ix_instruction_records_person", "instruction_records", ["person_id"])
    op.create_index("ix_instruction_records_departement", "instruction_records", ["departement_code", "person_id"])


def downgrade() -> None:
    op.drop_index("ix_instruction_records_departement", table_name="instruction_records")
    op.drop_index("ix_instruction_records_person", table_name="instruction_records")
    op.drop_table("instruction_records")
    with op.batch_alter_table("flux_files") as batch_op:
        batch_op.drop_column("nature")
