"""many callers at once: an insert-only queue of persons whose episodes need recomputing (instead of
persons.episodes_stale), and, on SQLite, the access records in the audit journal (a second file)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 03:00:00

Issue #8. `UPDATE persons SET episodes_stale` by the ingestion and by refreshes took row locks in two
orders (deadlocks on PostgreSQL); writers now insert into `episode_queue` and the refresh deletes what it
took into account. On SQLite a read request wrote its access record to the main file, which an ingestion
holds for the length of a file: access records now live in the attached `audit` database (app.db), which
no ingestion ever locks. PostgreSQL keeps them where they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCESS_COLUMNS = (
    "id, at, principal_id, agent_identifiant, departement_code, person_id, action, endpoint, request_id, found"
)


def _access_table(schema: str | None) -> None:
    op.create_table(
        "access_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("principal_id", sa.String(length=120), nullable=False),
        sa.Column("agent_identifiant", sa.String(length=100), nullable=True),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("found", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_records"),
        schema=schema,
    )
    op.create_index("ix_access_records_person", "access_records", ["person_id", "at"], schema=schema)


def _move_access_records(source: str, target: str) -> None:
    _access_table(target)
    op.execute(
        f"INSERT INTO {target}.access_records ({ACCESS_COLUMNS}) SELECT {ACCESS_COLUMNS} FROM {source}.access_records"
    )
    op.execute(f"DROP INDEX {source}.ix_access_records_person")
    op.execute(f"DROP TABLE {source}.access_records")


def upgrade() -> None:
    op.create_table(
        "episode_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("departement_code", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_episode_queue")),
    )
    op.create_index("ix_episode_queue_person", "episode_queue", ["person_id", "id"])
    op.execute(
        "INSERT INTO episode_queue (person_id, departement_code) "
        "SELECT id, departement_code FROM persons WHERE episodes_stale ORDER BY id"
    )
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_persons_stale", postgresql_where=sa.text("episodes_stale"), sqlite_where=sa.text("episodes_stale")
        )
        batch_op.drop_column("episodes_stale")
    if op.get_bind().dialect.name == "sqlite":
        _move_access_records("main", "audit")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _move_access_records("audit", "main")
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("episodes_stale", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(
            "ix_persons_stale",
            ["departement_code"],
            unique=False,
            postgresql_where=sa.text("episodes_stale"),
            sqlite_where=sa.text("episodes_stale"),
        )
    op.execute(
        "UPDATE persons SET episodes_stale = "
        + ("1" if op.get_bind().dialect.name == "sqlite" else "true")
        + " WHERE id IN (SELECT person_id FROM episode_queue)"
    )
    op.drop_index("ix_episode_queue_person", table_name="episode_queue")
    op.drop_table("episode_queue")
