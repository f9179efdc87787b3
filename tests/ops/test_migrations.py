"""Every migration goes up to head and back down to base, on SQLite and on PostgreSQL; models match them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect

from app import migrate as migrations
from app.db import AUDIT_SCHEMA, AUDIT_TABLES, dispose_engines, get_engine
from app.models.base import Base
from tests.support.database import Database, make_settings


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
        table.to_metadata(expected, schema=AUDIT_SCHEMA if table.name in AUDIT_TABLES else None)
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
            with engine.connect() as conn:  # the version read without alembic is alembic's
                assert migrations.current_revisions(engine) == set(MigrationContext.configure(conn).get_current_heads())
        assert migrations.current_revisions(engine) == set()
        assert _all_tables(engine) - {"alembic_version"} == set()
        migrations.upgrade(settings)
        assert migrations.at_head(engine, settings)
        migrations.downgrade(settings, "base")
        assert _all_tables(engine) - {"alembic_version"} == set()
    finally:
        dispose_engines()
        db.drop()


def test_the_heads_read_from_the_scripts_are_alembics(tmp_path, monkeypatch):
    """`head_revisions` reads the scripts' `revision`/`down_revision` lines without importing alembic (issue #27
    item 2); alembic's answer is the reference, and a script it cannot read so (a merge) sends it to alembic."""
    settings = make_settings(f"sqlite:///{tmp_path / 'heads.db'}", tmp_path)
    assert migrations.head_revisions(settings) == migrations.alembic_head_revisions(settings) != set()

    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "script.py.mako").write_text((migrations.migrations_dir() / "script.py.mako").read_text())
    (scripts / "env.py").write_text("")
    for rev, down in (("a1", "None"), ("b1", '"a1"'), ("b2", '"a1"'), ("c1", '("b1", "b2")')):
        (scripts / "versions" / f"{rev}.py").write_text(
            f'revision: str = "{rev}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n'
        )
    monkeypatch.setattr(migrations, "migrations_dir", lambda: scripts)
    assert migrations.head_revisions(settings) == migrations.alembic_head_revisions(settings) == {"c1"}
    (scripts / "versions" / "c1.py").unlink()
    assert migrations.head_revisions(settings) == migrations.alembic_head_revisions(settings) == {"b1", "b2"}


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


def test_0006_recovers_the_observations_of_full_files_and_of_stored_states(tmp_path):
    """Going down to 0005 keeps only the members of full files; coming back up to 0006 recovers, for each
    of them, what their record said (the state in force for them there), and every record that gave a
    state row. Only the unchanged records of daily files are lost (they left no trace before 0006)."""
    from datetime import date

    from sqlalchemy import select

    from app.flux.loader import IngestOptions, ingest_file
    from app.models import FluxFile, FluxObservation
    from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux

    db = Database(tmp_path, "obs")
    try:
        settings = make_settings(db.url, tmp_path)
        migrations.upgrade(settings)
        engine = get_engine(settings)
        files = []
        for i, (day, kind, foyers) in enumerate(
            [
                (
                    date(2024, 3, 1),
                    "M",
                    [foyer(person(NIR_A)), foyer(person(NIR_B, nom="MARTIN"), matricule="0007777")],
                ),
                (date(2024, 3, 4), "I", [foyer(person(NIR_A, sdd=False))]),
                (
                    date(2024, 4, 1),
                    "M",
                    [foyer(person(NIR_A, sdd=False)), foyer(person(NIR_B, nom="MARTIN"), matricule="0007777")],
                ),
            ]
        ):
            (tmp_path / str(i)).mkdir()
            files.append((write_flux(tmp_path / str(i), foyers, day=day, type_flux=kind), day, i == 0))
        for path, day, stock in files:
            assert ingest_file(engine, settings, path, IngestOptions(day, initial_stock=stock)).status == "applied"

        def observations() -> set[tuple]:
            with engine.connect() as conn:
                full = set(conn.execute(select(FluxFile.id).where(FluxFile.type_flux == "M")).scalars())
                return {
                    (o.file_id, o.person_id, o.fingerprint, o.file_id in full)
                    for o in conn.execute(select(FluxObservation.__table__))
                }

        before = observations()
        assert len(before) == 5 and sum(1 for o in before if o[3]) == 4
        migrations.downgrade(settings, "0005")
        migrations.upgrade(settings)
        assert observations() == before  # the daily record here changed something: it had a state row
    finally:
        dispose_engines()
        db.drop()


def test_0017_queues_the_persons_whose_episodes_the_issue_22_rules_change(tmp_path):
    """The rules changed (the stock's suspended persons, an orientation before T0, why a person left): going up
    to 0017 queues every person with an episode or an orientation for a refresh, which fills the new columns."""
    from datetime import date

    from sqlalchemy import select

    from app.flux.loader import IngestOptions, ingest_file
    from app.models import EntryEpisode, EpisodeQueue
    from app.orientation.episodes import refresh_pending
    from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux

    db = Database(tmp_path, "m17")
    try:
        settings = make_settings(db.url, tmp_path)
        migrations.upgrade(settings)
        engine = get_engine(settings)
        t0, left = date(2024, 3, 4), date(2024, 3, 12)
        dem, cjt = person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
        for day, foyers in ((t0, [foyer(dem, cjt)]), (left, [foyer(dem)])):
            path = write_flux(tmp_path, foyers, day=day)
            assert ingest_file(engine, settings, path, IngestOptions(day)).status == "applied"
        with engine.connect() as conn:
            assert conn.execute(select(EpisodeQueue.__table__)).all() == []
            assert len(conn.execute(select(EntryEpisode.__table__)).all()) == 2
        script = ScriptDirectory.from_config(migrations.alembic_config(settings))
        before = script.get_revision("0017").down_revision
        assert isinstance(before, str)
        migrations.downgrade(settings, before)
        migrations.upgrade(settings)
        with engine.connect() as conn:
            assert len({r.person_id for r in conn.execute(select(EpisodeQueue.__table__))}) == 2
            assert {r.left_reason for r in conn.execute(select(EntryEpisode.__table__))} == {None}
        refresh_pending(engine)
        with engine.connect() as conn:
            reasons = {r.left_reason for r in conn.execute(select(EntryEpisode.__table__))}
        assert reasons == {None, "sorti_du_foyer"}
    finally:
        dispose_engines()
        db.drop()


def test_the_audit_migrations_refuse_a_downgrade_that_would_break_the_trail(tmp_path):
    """Review of issue #23: below 0022 the kept leaf hashes of purged events go (checkpoints signed before a
    purge no longer verify), below 0021 the proofs go (every event sealed with one reads as modified): each
    downgrade is refused once the trail depends on it, with what to do instead."""
    import pytest

    from app.audit.chain import action_row, seal
    from app.audit.proof import insert_events
    from app.db import session_scope

    db = Database(tmp_path, "maudit")
    try:
        settings = make_settings(db.url, tmp_path)
        migrations.upgrade(settings)
        with session_scope(settings, write=True) as session:
            insert_events(session, [action_row("job:test", "flux.ingest", "055")])
        assert seal(get_engine(settings), settings) == 1
        migrations.downgrade(settings, "0021")  # no purge kept leaves: 0022 goes
        with pytest.raises(RuntimeError, match="downgrade below 0021 refused"):
            migrations.downgrade(settings, "0020")
        assert migrations.current_revisions(get_engine(settings)) == {"0021"}
    finally:
        dispose_engines()
        db.drop()


def test_0024_queues_every_episode_and_the_refresh_fills_the_legal_deadline(tmp_path):
    """The legal deadline (CASF art. D.262-65-2) is derived: going up to 0024 leaves it NULL and queues every
    person with an episode; the refresh fills it (reception 01/03 -> 12/04)."""
    from datetime import date

    from sqlalchemy import select

    from app.flux.loader import IngestOptions, ingest_file
    from app.models import EntryEpisode, EpisodeQueue
    from app.orientation.episodes import refresh_pending
    from tests.support.fluxbuilder import foyer, person, write_flux

    db = Database(tmp_path, "m24")
    try:
        settings = make_settings(db.url, tmp_path)
        migrations.upgrade(settings)
        engine = get_engine(settings)
        path = write_flux(tmp_path, [foyer(person())], day=date(2025, 3, 1))
        assert ingest_file(engine, settings, path, IngestOptions(date(2025, 3, 1))).status == "applied"
        script = ScriptDirectory.from_config(migrations.alembic_config(settings))
        before = script.get_revision("0024").down_revision
        assert isinstance(before, str)
        migrations.downgrade(settings, before)
        migrations.upgrade(settings)
        with engine.connect() as conn:
            queued = {r.person_id for r in conn.execute(select(EpisodeQueue.__table__))}
            assert len(queued) == 1  # the one person (0025 queues it too)
            row = conn.execute(select(EntryEpisode.__table__)).one()
            assert (row.legal_clock, row.legal_clock_reason, row.legal_deadline) == (None, None, None)
        refresh_pending(engine)
        with engine.connect() as conn:
            row = conn.execute(select(EntryEpisode.__table__)).one()
        assert (row.legal_clock, row.legal_deadline) == ("ouverture_droit", date(2025, 4, 12))
    finally:
        dispose_engines()
        db.drop()
