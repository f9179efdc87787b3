"""audit events carry proof that the service wrote them (`proof`: key id, nonce, HMAC of the content); on
PostgreSQL the guard trigger keeps it as written

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 14:10:00

Issue #23, item 6 (app.audit.proof). The events already written get no proof: the migration has no audit
key. Those already sealed stay covered by the chain; those not yet sealed are sealed without one by the
first seal after the upgrade, as long as the chain's last event is itself one sealed without proof (the
first proven event sealed closes that door: docs/decisions.md, "Audit events proven as written").

On PostgreSQL the guard (migration 0015) now also refuses an UPDATE that changes the proof. No trigger
refuses INSERTs that do not come from the service: whoever holds its role could pass the same check; the
proof is what tells (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONTENT = ("id", "at", "principal_id", "agent_identifiant", "departement_code", "person_id", "action", "endpoint",
           "request_id", "found", "purpose", "source_address", "outcome", "detail")  # fmt: skip


def _guard(columns: Sequence[str]) -> str:
    """The guard function of migration 0015, comparing `columns` when an event is sealed."""
    new = ", ".join(f"NEW.{c}" for c in columns)
    old = ", ".join(f"OLD.{c}" for c in columns)
    return f"""
CREATE OR REPLACE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'audit events cannot be truncated' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.seq IS NOT NULL AND OLD.at < now() - interval '180 days' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit event % cannot be deleted: only sealed events older than 180 days, by the purge',
            OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.seq IS NULL AND NEW.seq IS NOT NULL AND ROW({new}) IS NOT DISTINCT FROM ROW({old}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit event % cannot be modified (only sealed, once)', OLD.id
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def _schema() -> str | None:
    return "audit" if op.get_bind().dialect.name == "sqlite" else None


def upgrade() -> None:
    schema = _schema()
    op.add_column("access_records", sa.Column("proof", sa.String(120), nullable=True), schema=schema)
    op.create_index("ux_access_records_proof", "access_records", ["proof"], unique=True, schema=schema)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_guard((*CONTENT, "proof")))


def downgrade() -> None:
    schema = _schema()
    table = f"{schema}.access_records" if schema else "access_records"
    proven = (
        op.get_bind()
        .execute(sa.text(f"SELECT 1 FROM {table} WHERE proof IS NOT NULL AND seq IS NOT NULL LIMIT 1"))
        .first()
    )
    if proven is not None:  # their seals cover the proof: without it, every one would read as modified
        raise RuntimeError(
            "downgrade below 0021 refused: audit events are sealed with their proof, and the code of before "
            "would report each of them as modified; restore a backup taken before the upgrade instead"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_guard(CONTENT))
    op.drop_index("ux_access_records_proof", "access_records", schema=schema)
    op.drop_column("access_records", "proof", schema=schema)
