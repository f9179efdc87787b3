"""lighter bulk tables: identity keys keyed by themselves, the NIR found through persons.nir_hash, no file
index on person_states, no foreign keys on the tables the ingestion fills in bulk

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:20:00

Measured on the benchmark's monthly file (bench/BENCHMARKS.md, run 8): the surrogate id of person_keys
(its sequence and its index) was a third of the cost of writing keys; a NIR key row duplicated
persons.nir_hash, already indexed; the file_id index of person_states served no query. On PostgreSQL
each foreign-key check is a trigger run per row, costing as much as the row's own write (~9 µs): the
seven on these tables made half of the database's work. The ingestion is these tables' only writer and
checks its references itself (app/flux/loader.py, `ReferenceIntegrityError`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# (table, constraint, local columns, referenced table, referenced columns, ondelete)
BULK_FOREIGN_KEYS = [
    ("persons", "fk_persons_departement_code_departements", ["departement_code"], "departements", ["code"], None),
    ("persons", "fk_persons_first_file_id_flux_files", ["first_file_id"], "flux_files", ["id"], None),
    ("persons", "fk_persons_updated_file_id_flux_files", ["updated_file_id"], "flux_files", ["id"], None),
    ("person_states", "fk_person_states_person_id_persons", ["person_id"], "persons", ["id"], "CASCADE"),
    ("person_states", "fk_person_states_file_id_flux_files", ["file_id"], "flux_files", ["id"], None),
    ("flux_file_members", "fk_flux_file_members_file_id_flux_files", ["file_id"], "flux_files", ["id"], "CASCADE"),
]


def upgrade() -> None:
    for table, name, *_ in BULK_FOREIGN_KEYS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(name, type_="foreignkey")
    # The NIR is looked up through persons.nir_hash (indexed with the département) from now on.
    op.execute("DELETE FROM person_keys WHERE kind = 'nir'")
    with op.batch_alter_table("person_keys", table_kwargs={"sqlite_with_rowid": False}) as batch_op:
        batch_op.drop_constraint("fk_person_keys_person_id_persons", type_="foreignkey")
        batch_op.drop_constraint("uq_person_keys_departement_code_value", type_="unique")
        batch_op.drop_constraint("pk_person_keys", type_="primary")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_person_keys", ["departement_code", "value"])
    with op.batch_alter_table("person_states") as batch_op:
        batch_op.drop_index("ix_person_states_file_id")


def downgrade() -> None:
    with op.batch_alter_table("person_states") as batch_op:
        batch_op.create_index("ix_person_states_file_id", ["file_id"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("pk_person_keys", "person_keys", type_="primary")
        op.execute("ALTER TABLE person_keys ADD COLUMN id BIGSERIAL")
        op.create_primary_key("pk_person_keys", "person_keys", ["id"])
        op.create_unique_constraint(
            "uq_person_keys_departement_code_value", "person_keys", ["departement_code", "value"]
        )
    else:
        # SQLite: rebuild the table as revision 0003 had it (a rowid table, id assigned on copy).
        op.create_table(
            "person_keys_0003",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("departement_code", sa.String(length=3), nullable=False),
            sa.Column("kind", sa.String(length=12), nullable=False),
            sa.Column("value", sa.String(length=32), nullable=False),
            sa.Column("person_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["person_id"], ["persons.id"], name="fk_person_keys_person_id_persons", ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name="pk_person_keys"),
            sa.UniqueConstraint("departement_code", "value", name="uq_person_keys_departement_code_value"),
        )
        op.execute(
            "INSERT INTO person_keys_0003 (departement_code, kind, value, person_id) "
            "SELECT departement_code, kind, value, person_id FROM person_keys"
        )
        op.drop_index("ix_person_keys_person_id", "person_keys")
        op.drop_table("person_keys")
        op.rename_table("person_keys_0003", "person_keys")
        op.create_index("ix_person_keys_person_id", "person_keys", ["person_id"], unique=False)
    if bind.dialect.name == "postgresql":
        op.create_foreign_key(
            "fk_person_keys_person_id_persons", "person_keys", "persons", ["person_id"], ["id"], ondelete="CASCADE"
        )
    for table, name, local, referred, remote, ondelete in BULK_FOREIGN_KEYS:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(name, referred, local, remote, ondelete=ondelete)
    # NIR keys are not rebuilt: revision 0003's code derived them from the NIR, which is stored encrypted;
    # re-ingesting is the way back (this downgrade exists for tests and emergencies, before any release).
