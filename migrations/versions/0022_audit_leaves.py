"""the leaf hashes of purged audit events, so that signed checkpoints still verify after a purge

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 14:00:00

Issue #23, item 7 (app.audit.checkpoint, docs/audit.md). On SQLite the table lives in the attached audit
journal (schema `audit`). On PostgreSQL a trigger refuses any UPDATE, DELETE or TRUNCATE of it: the purge
only inserts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARD = """
CREATE FUNCTION audit_leaves_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the leaf hashes of purged audit events are kept: no update, delete or truncate'
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_leaves_guard BEFORE UPDATE OR DELETE ON audit_leaves
    FOR EACH ROW EXECUTE FUNCTION audit_leaves_guard();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION audit_leaves_guard();
"""


def _schema() -> str | None:
    return "audit" if op.get_bind().dialect.name == "sqlite" else None


def upgrade() -> None:
    op.create_table(
        "audit_leaves",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("leaf", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_leaves"),
        schema=_schema(),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(GUARD)
    # Events purged before this migration left no leaf hash: the tree gives them a public placeholder leaf
    # (app.audit.checkpoint.legacy_leaf) up to the base the chain has now.
    op.add_column(
        "audit_chain", sa.Column("leaves_from", sa.BigInteger(), nullable=False, server_default="0"), schema=_schema()
    )
    # the size of the last checkpoint the servers published: one worker of several publishes each size
    op.add_column(
        "audit_chain",
        sa.Column("published_size", sa.BigInteger(), nullable=False, server_default="0"),
        schema=_schema(),
    )
    table = "audit.audit_chain" if _schema() else "audit_chain"
    op.execute(f"UPDATE {table} SET leaves_from = base_seq")


def downgrade() -> None:
    table = "audit.audit_leaves" if _schema() else "audit_leaves"
    if op.get_bind().execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
        raise RuntimeError(
            "downgrade below 0022 refused: a purge kept the leaf hashes of deleted audit events, without which "
            "no checkpoint signed before it verifies; restore a backup taken before the upgrade instead"
        )
    op.drop_column("audit_chain", "published_size", schema=_schema())
    op.drop_column("audit_chain", "leaves_from", schema=_schema())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_leaves_no_truncate ON audit_leaves")
        op.execute("DROP TRIGGER audit_leaves_guard ON audit_leaves")
        op.execute("DROP FUNCTION audit_leaves_guard()")
    op.drop_table("audit_leaves", schema=_schema())
