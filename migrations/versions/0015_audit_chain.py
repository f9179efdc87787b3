"""audit events: outcome and detail, the seal (gapless number, key id, chained HMAC), the chain's state; on
PostgreSQL a trigger that refuses to modify or delete audit events

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-25 10:45:00

Issue #14. The events written before are unsealed: the first `passerelle audit seal` (or the server's sealer)
seals them in their order. On SQLite both tables live in the attached audit journal (schema `audit`).

On PostgreSQL the trigger applies to every role that is not a superuser bypassing triggers: an event may be
sealed once (seq, key_id and mac set from empty, nothing else changed) and deleted only once sealed and older
than 180 days (the CNIL's shortest retention: `passerelle purge`); any other UPDATE, DELETE or TRUNCATE is
refused. A superuser can still disable the trigger: `passerelle audit verify` then names what changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONTENT = "id, at, principal_id, agent_identifiant, departement_code, person_id, action, endpoint, request_id, " \
    "found, purpose, source_address, outcome, detail"  # fmt: skip

GUARD = f"""
CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND ROW({", ".join("NEW." + c.strip() for c in CONTENT.split(","))})
           IS NOT DISTINCT FROM ROW({", ".join("OLD." + c.strip() for c in CONTENT.split(","))}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit event % cannot be modified (only sealed, once)', OLD.id
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER access_records_guard BEFORE UPDATE OR DELETE ON access_records
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();
CREATE TRIGGER access_records_no_truncate BEFORE TRUNCATE ON access_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_guard();
"""


def _schema() -> str | None:
    return "audit" if op.get_bind().dialect.name == "sqlite" else None


def upgrade() -> None:
    schema = _schema()
    for name, kind in (("outcome", sa.String(20)), ("detail", sa.String(500)), ("seq", sa.BigInteger()),
                       ("key_id", sa.String(20)), ("mac", sa.String(64))):  # fmt: skip
        op.add_column("access_records", sa.Column(name, kind, nullable=True), schema=schema)
    op.create_index("ux_access_records_seq", "access_records", ["seq"], unique=True, schema=schema)
    op.create_index(
        "ix_access_records_unsealed",
        "access_records",
        ["id"],
        schema=schema,
        sqlite_where=sa.text("seq IS NULL"),
        postgresql_where=sa.text("seq IS NULL"),
    )
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_mac", sa.String(64), nullable=False),
        sa.Column("base_seq", sa.BigInteger(), nullable=False),
        sa.Column("base_mac", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
        schema=schema,
    )
    op.execute(
        f"INSERT INTO {schema + '.' if schema else ''}audit_chain (id, head_seq, head_mac, base_seq, base_mac) "
        "VALUES (1, 0, '', 0, '')"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(GUARD)


def downgrade() -> None:
    schema = _schema()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER access_records_no_truncate ON access_records")
        op.execute("DROP TRIGGER access_records_guard ON access_records")
        op.execute("DROP FUNCTION audit_events_guard()")
    op.drop_table("audit_chain", schema=schema)
    op.drop_index("ix_access_records_unsealed", "access_records", schema=schema)
    op.drop_index("ux_access_records_seq", "access_records", schema=schema)
    for name in ("mac", "key_id", "seq", "detail", "outcome"):
        op.drop_column("access_records", name, schema=schema)
