"""Alembic, driven from the code: upgrade, downgrade, current revision, and "is the schema at head?"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported by the functions that run it: "is the schema at head?", which every command that touches
# the database asks first, reads the revisions of the scripts and the table `alembic_version` itself, without
# importing alembic and every migration script (~0.2 s of a daily file's 2 s, issue #27 item 2).
# tests/ops/test_migrations.py pins that both ways give the same revisions.
_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*[\"']([^\"']+)[\"']\s*$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:\s*[^=]+)?\s*=\s*(?:None|[\"']([^\"']+)[\"'])\s*$", re.MULTILINE)


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "_migrations"  # inside a built wheel (see pyproject force-include)
    if installed.is_dir():
        return installed
    return here.parent / "migrations"


def alembic_config(settings: Settings | None = None) -> Config:
    from alembic.config import Config

    settings = settings or get_settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = settings.migrations_url  # the migrations' own role when one is set
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings | None = None, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(settings), revision)


def alembic_head_revisions(settings: Settings | None = None) -> set[str]:
    """The heads as alembic finds them (importing every migration script)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())


def head_revisions(settings: Settings | None = None) -> set[str]:
    """The revisions no script revises, read from the scripts' `revision` and `down_revision` lines. A script
    whose lines say anything else (a merge's tuple, a computed value) sends the question to alembic."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in sorted((migrations_dir() / "versions").glob("*.py")):
        if script.name == "__init__.py":
            continue
        source = script.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(rev) != 1 or len(down) != 1:
            return alembic_head_revisions(settings)
        revisions.add(rev[0])
        if down[0]:
            revised.add(down[0])
    if not revisions or not revised <= revisions:
        return alembic_head_revisions(settings)
    return revisions - revised


def current_revisions(engine: Engine) -> set[str]:
    """The revisions in `alembic_version` (none when the table is absent), as alembic's
    `MigrationContext.get_current_heads` reads them."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}


def at_head(engine: Engine, settings: Settings | None = None) -> bool:
    return current_revisions(engine) == head_revisions(settings)


# What the service's role may do on PostgreSQL once the migrations' role owns the tables (`grant_service_role`).
# Every table: read and write rows, never TRUNCATE, ALTER, DROP or disable a trigger (the owner's alone).
# The audit events: written, sealed once (their seal's columns only), deleted by the purge (the trigger of
# migration 0015 still decides which); the chain's state: created once, moved on; the schema's version: read.
SERVICE_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SERVICE_NARROWER = {
    "access_records": ("SELECT, INSERT, DELETE", "UPDATE (seq, key_id, mac)"),
    "audit_chain": ("SELECT, INSERT, UPDATE",),
    "alembic_version": ("SELECT",),
}


def service_role(settings: Settings) -> str | None:
    """The role the service connects as on PostgreSQL when migrations have a role of their own (else None)."""
    from sqlalchemy.engine import make_url

    if settings.is_sqlite or settings.migrations_url == settings.database_url:
        return None
    service, owner = make_url(settings.database_url).username, make_url(settings.migrations_url).username
    return service if service and service != owner else None


def grant_service_role(engine: Engine, role: str) -> list[str]:
    """Grant `role` what the service needs on the tables of the connection's schema, and nothing more
    (idempotent: run after every upgrade, a new table included). Run as the migrations' role, which owns the
    tables. Refused (ValueError, saying why) for the owner itself, a superuser, or a role that owns a table
    (it could then alter it: `REASSIGN OWNED` first). Returns the statements run."""
    from sqlalchemy import text

    if engine.dialect.name != "postgresql":
        raise ValueError("roles and grants are PostgreSQL's: SQLite has none")
    with engine.begin() as conn:
        me, schema = conn.execute(text("SELECT current_user, current_schema()")).one()
        found = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if found is None:
            raise ValueError(f"no role {role!r} in this PostgreSQL")
        if role == me:
            raise ValueError(f"{role!r} is the role that runs the migrations: the service needs a role of its own")
        if found[0]:
            raise ValueError(f"{role!r} is a superuser: it could disable the audit trigger whatever is granted")
        owned = conn.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tableowner = :r ORDER BY 1"),
            {"s": schema, "r": role},
        ).all()
        if owned:
            raise ValueError(
                f"{role!r} owns {len(owned)} table(s) ({', '.join(owned[:3])}...): a superuser first runs "
                f'REASSIGN OWNED BY "{role}" TO "{me}"'
            )
        tables = set(conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}))
        r, s = f'"{role}"', f'"{schema}"'
        usage, create = conn.execute(
            text("SELECT has_schema_privilege(:r, :s, 'USAGE'), has_schema_privilege(:r, :s, 'CREATE')"),
            {"r": role, "s": schema},
        ).one()
        statements = [f"GRANT USAGE ON SCHEMA {s} TO {r}"] if not usage else []
        statements += [f"REVOKE CREATE ON SCHEMA {s} FROM {r}"] if create else []
        statements += [
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
            f"GRANT {SERVICE_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {s} TO {r}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        ]
        for table, privileges in SERVICE_NARROWER.items():
            if table in tables:
                statements.append(f'REVOKE ALL ON {s}."{table}" FROM {r}')
                statements += [f'GRANT {p} ON {s}."{table}" TO {r}' for p in privileges]
        for statement in statements:
            conn.execute(text(statement))
    return statements
