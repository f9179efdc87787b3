"""New persons' ids from a sequence on PostgreSQL: ingestions of different départements side by side

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 00:00:00

An ingestion allocated its new persons' ids as `max(persons.id) + n`, which held only because one ingestion
ran at a time on the whole database. They now come from `persons_id_seq` (app.flux.bulk.PersonIds) and an
ingestion locks its département only (app.db.INGESTION_LOCK_NS). The sequence is owned by `persons.id` (it
goes with the table) and starts after the largest id.

On a live database: the upgrade first takes the former database-wide ingestion lock, so an ingestion of the
former code in progress commits its persons before the largest id is read. Stop the ingestion jobs for the
upgrade all the same (docs/operations.md): one of the former code started after this transaction still
allocates `max(id) + n`, ids the sequence then gives again; the next file of the new code then fails on
the duplicate key (nothing is corrupted; it applies when run again). SQLite: nothing (one writer at a time:
`max(id)` + n stays right).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FORMER_INGESTION_LOCK_ID = 0x5A55E11E  # the one-key advisory lock every ingestion took until this revision


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"SELECT pg_advisory_xact_lock({_FORMER_INGESTION_LOCK_ID})")
    op.execute("CREATE SEQUENCE persons_id_seq AS bigint OWNED BY persons.id")
    op.execute("SELECT setval('persons_id_seq', coalesce((SELECT max(id) FROM persons), 0) + 1, false)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # the former code allocates after max(id) again
    op.execute("DROP SEQUENCE IF EXISTS persons_id_seq")
