"""Migrations with a role of their own (issue #23 item 13): on PostgreSQL the migrations' role owns the tables,
the service's role is granted rows to read and write and the audit events to write and seal, never the power
to truncate, alter, drop or disable the audit trigger."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from app import migrate as migrations
from app.audit.chain import record_action, seal, verify
from app.db import dispose_engines, session_scope
from app.models import AccessRecord
from app.settings import ConfigurationError
from tests.support.cli import run_cli
from tests.support.database import PG_ENV, make_settings


def _url(base: str, user: str, schema: str) -> str:
    url = make_url(base).set(username=user, password=None)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture
def two_roles(tmp_path):
    """A schema owned by a migrations' role, a service role with nothing granted; all dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip("roles and grants are PostgreSQL's (SQLite has none)")
    tag = uuid.uuid4().hex[:8]
    owner, service, schema = f"mig_owner_{tag}", f"mig_app_{tag}", f"t_migrole_{tag}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{owner}" LOGIN'))
        conn.execute(text(f'CREATE ROLE "{service}" LOGIN'))
        conn.execute(text(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{owner}"'))
    try:
        yield (
            make_settings(_url(base, service, schema), tmp_path, migration_database_url=_url(base, owner, schema)),
            service,
        )
    finally:
        dispose_engines()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            for role in (service, owner):
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_the_service_role_writes_rows_and_seals_events_but_cannot_touch_the_audit_guard(two_roles, monkeypatch):
    settings, service = two_roles
    monkeypatch.setenv("PASSERELLE_MIGRATION_DATABASE_URL", settings.migration_database_url)
    result = run_cli(settings, monkeypatch, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"role {service}" in result.output  # granted by the upgrade itself: the two URLs name two users

    as_service = create_engine(settings.database_url)
    try:
        with as_service.connect() as conn:
            owners = set(conn.scalars(text("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()")))
            assert owners == {make_url(settings.migration_database_url).username}
            assert migrations.at_head(as_service, settings)  # /ready reads the schema's version
        # a normal write, then the sealer's and a reader's
        with session_scope(settings) as s:
            for i in range(3):
                record_action(s, "job:test", "flux.ingest", "055", detail={"file_id": i}, person_id=i + 1)
        assert seal(as_service, settings) == 3
        with session_scope(settings) as s:
            assert list(s.scalars(select(AccessRecord.seq).order_by(AccessRecord.seq))) == [1, 2, 3]
        assert verify(as_service, settings).intact
        for statement in (
            "ALTER TABLE access_records DISABLE TRIGGER access_records_guard",
            "ALTER TABLE access_records DISABLE TRIGGER ALL",
            "DROP TRIGGER access_records_guard ON access_records",
            "DROP TABLE access_records",
            "TRUNCATE access_records",
            "TRUNCATE persons CASCADE",
            "UPDATE access_records SET principal_id = 'x'",
            "UPDATE alembic_version SET version_num = 'x'",
            "CREATE TABLE intruder (id int)",
        ):
            with as_service.connect() as conn, pytest.raises(Exception) as refused:
                conn.execute(text(statement))
            assert refused.value.orig.sqlstate == "42501", statement  # insufficient_privilege (or not the owner)
        with as_service.begin() as conn:
            conn.execute(text("ANALYZE persons"))  # an ingestion's ANALYZE: skipped with a warning, never an error
    finally:
        as_service.dispose()

    # run again (after a later upgrade): the same grants, nothing more
    assert run_cli(settings, monkeypatch, "db", "grant").exit_code == 0
    refused = run_cli(
        settings, monkeypatch, "db", "grant", "--role", make_url(settings.migration_database_url).username
    )
    assert refused.exit_code == 3 and "a role of its own" in refused.output


def test_the_migration_url_names_the_same_database(tmp_path):
    base = "postgresql+psycopg://app@db.example:5432/passerelle"
    make_settings(base, tmp_path, migration_database_url="postgresql+psycopg://owner:pw@db.example:5432/passerelle")
    with pytest.raises(ConfigurationError, match="another database"):
        make_settings(base, tmp_path, migration_database_url="postgresql+psycopg://owner@db.example:5432/other")
    assert make_settings(base, tmp_path).migrations_url == base
