"""Hostile review of branch wt-lock (one ingestion lock per département, persons' ids from a sequence,
episode refresh taking its queue rows off first). Each test names the defect it shows; PostgreSQL (real
locks, real threads)."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from app.admin.purge import PurgeReport, purge_persons
from app.db import get_engine
from app.models import EntryEpisode, EpisodeQueue, OrientationEvent, Person
from app.orientation.episodes import refresh
from app.settings import Settings
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

LONG_AGO = date(2022, 3, 1)


@pytest.fixture
def pg(db: Settings) -> Settings:
    if get_engine(db).dialect.name != "postgresql":
        pytest.skip("row locks and their order: PostgreSQL")
    return db


def _wait_until(check: Any, what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_purge_is_not_a_deadlock_victim_of_an_episode_refresh(pg, tmp_path):
    """Defect: app/orientation/episodes.py `refresh` now deletes the person's `episode_queue` rows first and
    their `entry_episodes` rows after; the purge (app/admin/purge.py, PERSON_TABLES) deletes
    `entry_episodes` first and `episode_queue` after. Before wt-lock both went entry_episodes -> queue.
    With the order inverted, a refresh and a purge of the same (closed) person lock each other's rows in a
    cycle: PostgreSQL aborts one of them ("deadlock detected"), the purge's step or the refresh (an event
    post, the refresh after a file)."""
    engine = get_engine(pg)
    open_dir, closed_dir = tmp_path / "open", tmp_path / "closed"
    open_dir.mkdir()
    closed_dir.mkdir()
    opened = write_flux(open_dir, [foyer(person(NIR_A, nom="ANCIEN"), matricule="0000001")], day=LONG_AGO)
    assert ingest(pg, opened, received_on=LONG_AGO).status == "applied"
    later = LONG_AGO + timedelta(days=31)
    closed = write_flux(closed_dir, [foyer(person(NIR_A, nom="ANCIEN"), matricule="0000001", etat="6")], day=later)
    assert ingest(pg, closed, received_on=later).status == "applied"
    with engine.begin() as conn:
        pid = conn.execute(select(Person.id)).scalar_one()
        conn.execute(
            insert(OrientationEvent).values(
                person_id=pid,
                departement_code="055",
                type="invitation",
                event_date=LONG_AGO + timedelta(days=3),
                source="api",
                recorded_by="test",
            )
        )
        # queued (a change committed, its refresh not done yet)
        conn.execute(insert(EpisodeQueue).values(person_id=pid, departement_code="055"))
        assert conn.execute(select(func.count()).select_from(EntryEpisode)).scalar_one() >= 1

    errors: dict[str, BaseException] = {}
    side = create_engine(pg.database_url)  # its own pool: the purge's engine keeps its connections
    blocker = side.connect()
    refresher = side.connect()
    try:
        blocker.begin()
        blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # holds the person's orientation event: the purge's step stops there, its entry_episodes deleted
        blocker.execute(select(OrientationEvent.id).where(OrientationEvent.person_id == pid).with_for_update())

        def run_purge() -> None:
            try:
                purge_persons(engine, PurgeReport(dry_run=False), date(2100, 1, 1), None)
            except BaseException as exc:  # said by the test
                errors["purge"] = exc

        refresher_pid = refresher.execute(text("SELECT pg_backend_pid()")).scalar_one()
        refresher.rollback()

        def run_refresh() -> None:
            try:
                with refresher.begin():
                    refresh(refresher, [pid])
            except BaseException as exc:  # said by the test
                errors["refresh"] = exc

        purging = threading.Thread(target=run_purge)
        purging.start()
        blocked = "SELECT count(*) FROM pg_stat_activity WHERE CAST(:b AS integer) = ANY(pg_blocking_pids(pid))"
        with side.connect() as watch:
            _wait_until(
                lambda: (
                    watch.execute(text(blocked), {"b": blocker_pid}).scalar_one() or errors or not purging.is_alive()
                ),
                "the purge to wait",
            )
            assert not errors and purging.is_alive(), errors
            refreshing = threading.Thread(target=run_refresh)
            refreshing.start()
            waits = "SELECT cardinality(pg_blocking_pids(:p))"
            _wait_until(lambda: watch.execute(text(waits), {"p": refresher_pid}).scalar_one(), "the refresh to wait")
        blocker.rollback()
        purging.join(60)
        refreshing.join(60)
        assert not purging.is_alive() and not refreshing.is_alive()
    finally:
        blocker.close()
        refresher.close()
        side.dispose()
    assert "deadlock" not in str(errors.get("purge", "")), errors["purge"]
    assert "deadlock" not in str(errors.get("refresh", "")), errors["refresh"]
