"""Every migration goes up to head and back down to base, on SQLite and on PostgreSQL; models match them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect

from app import migrate as migrations
from app.db import AUDIT_SCHEMA, dispose_engines, get_engine
from app.models.base import Base
from tests.conftest import Database, make_settings


def _all_tables(engine):
    found = set(inspect(engine).get_table_names())
    if engine.dialect.name == "sqlite":
        found |= set(inspect(engine).get_table_names(schema=AUDIT_SCHEMA))
    return found


def _expected_metadata(engine) -> MetaData:
    """The models, with the access records in the audit journal on SQLite."""
    if engine.dialect.name != "sqlite":
        return Base.metadata
    expected = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(expected, schema=AUDIT_SCHEMA if table.name == "access_records" else None)
    return expected


def test_upgrade_to_head_then_downgrade_to_base_step_by_step(tmp_path):
    db = Database(tmp_path, "migr")
    try:
        settings = make_settings(db.url, tmp_path)
        script = ScriptDirectory.from_config(migrations.alembic_config(settings))
        revisions = [r.revision for r in script.walk_revisions("base", "heads")]
        assert revisions, "there is at least one migration"
        migrations.upgrade(settings)
        engine = get_engine(settings)
        assert migrations.at_head(engine, settings)
        tables = _all_tables(engine)
        assert set(Base.metadata.tables) <= tables
        if engine.dialect.name == "sqlite":
            # Access records live in the attached audit journal, never in the main file (issue #8).
            assert "access_records" in inspect(engine).get_table_names(schema=AUDIT_SCHEMA)
            assert "access_records" not in inspect(engine).get_table_names()

        with engine.connect() as conn:
            diffs = compare_metadata(
                MigrationContext.configure(conn, opts={"include_schemas": engine.dialect.name == "sqlite"}),
                _expected_metadata(engine),
            )
        assert diffs == [], f"models and migrations differ: {diffs}"

        # Down one step at a time, then up again: every downgrade works and is reversible.
        for _ in revisions:
            migrations.downgrade(settings, "-1")
        assert migrations.current_revisions(engine) == set()
        assert _all_tables(engine) - {"alembic_version"} == set()
        migrations.upgrade(settings)
        assert migrations.at_head(engine, settings)
        migrations.downgrade(settings, "base")
        assert _all_tables(engine) - {"alembic_version"} == set()
    finally:
        dispose_engines()
        db.drop()


def test_ready_reports_pending_migrations(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    db = Database(tmp_path, "pending")
    try:
        settings = make_settings(db.url, tmp_path)
        with TestClient(create_app(settings)) as c:
            r = c.get("/ready")
            assert r.status_code == 503
            assert r.json()["database"] == "migrations pending"
            migrations.upgrade(settings)
            assert c.get("/ready").status_code == 200
    finally:
        dispose_engines()
        db.drop()
