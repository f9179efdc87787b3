"""On PostgreSQL an ingestion locks its département only (app.db.INGESTION_LOCK_NS): the files of two
départements apply side by side, those of one département one at a time; new persons' ids come from a
sequence (migration 0030), so two files creating persons at once never give one id twice. An event for a
person not known yet waits for a file of its own département only.

A file is held inside its transaction (its progress callback waits, after its first batch wrote its
persons) while the test does the rest: real ingestions in threads, real PostgreSQL locks."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from app.clock import today
from app.db import INGESTION_LOCK_NS, departement_lock_key, get_engine, session_scope, wait_for_ingestion
from app.flux.loader import IngestOptions, IngestReport, ingest_file
from app.models import FluxFile, Person
from app.settings import Settings
from tests.support.fluxbuilder import foyer, person, write_flux
from tests.support.held_ingestion import ingestion_held

FOYERS = 40


@pytest.fixture
def pg(db: Settings) -> Settings:
    if get_engine(db).dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: its files are applied one at a time whatever their département")
    return db


def _file(directory: Path, departement: str, day: date, first: int = 0) -> Path:
    """FOYERS foyers of one person each, all new: the same NIRs in every département (persons are matched
    within their département only, so each file creates FOYERS persons)."""
    directory.mkdir()
    foyers = [
        foyer(
            person(f"1900555545{i:03d}", prenom=f"P{i}", dtnai=date(1980, 1, 1) + timedelta(days=i)),
            matricule=f"{i:07d}",
        )
        for i in range(first, first + FOYERS)
    ]
    return write_flux(directory, foyers, day=day, departement=departement)


def _run(db: Settings, path: Path, day: date, result: dict[str, Any], progress: Any = None) -> None:
    try:
        result["report"] = ingest_file(get_engine(db), db, path, IngestOptions(day), progress)
    except BaseException as exc:  # said by the test
        result["error"] = exc


def file_held(db: Settings, path: Path, day: date) -> Any:
    """A real ingestion held inside its transaction, its département's lock taken and its first batch
    written, until the block ends; then it commits. Its report in `result["report"]`."""
    return ingestion_held(db, path, day)


def _waiting_for(engine: Engine, departement: str) -> bool:
    """Whether a session waits for this département's ingestion lock (PostgreSQL's view of its locks)."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND classid = :ns AND objid = :k AND objsubid = 2"
                ),
                {"ns": INGESTION_LOCK_NS, "k": departement_lock_key(departement)},
            ).scalar_one()
        )


def _applied(result: dict[str, Any]) -> IngestReport:
    assert "error" not in result, result
    report: IngestReport = result["report"]
    assert report.status == "applied", report
    return report


def test_files_of_two_departements_apply_side_by_side(pg, tmp_path):
    day = today(pg) - timedelta(days=1)
    file_055, file_093 = _file(tmp_path / "a", "055", day), _file(tmp_path / "b", "093", day)
    other: dict[str, Any] = {}
    with file_held(pg, file_055, day) as held:
        # 055's file holds its lock and has written its persons, uncommitted: 093's file is applied meanwhile
        worker = threading.Thread(target=_run, args=(pg, file_093, day, other))
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the file of 093 waited for the file of 055"
        assert "report" not in held  # 055's is still held
        report_093 = _applied(other)
    report_055 = _applied(held)
    assert report_055.new_persons == report_093.new_persons == FOYERS
    with session_scope(pg) as s:
        ids = {d: sorted(s.scalars(select(Person.id).where(Person.departement_code == d))) for d in ("055", "093")}
        assert len(ids["055"]) == len(ids["093"]) == FOYERS
        assert not set(ids["055"]) & set(ids["093"]), "two persons were given one id"
        # the next person is given an id none of them has (the sequence went past every id taken)
        assert s.scalar(text("SELECT nextval('persons_id_seq')")) > max(ids["055"] + ids["093"])


def test_files_of_one_departement_apply_one_at_a_time(pg, tmp_path):
    day = today(pg) - timedelta(days=1)
    first, second = _file(tmp_path / "a", "055", day), _file(tmp_path / "b", "055", day, first=FOYERS)
    other: dict[str, Any] = {}
    engine = get_engine(pg)
    worker = threading.Thread(target=_run, args=(pg, second, day, other))
    try:
        with file_held(pg, first, day) as held:
            worker.start()
            seen = threading.Event()
            for _ in range(600):  # until PostgreSQL shows the second file waiting for 055's lock
                if _waiting_for(engine, "055"):
                    seen.set()
                    break
                time.sleep(0.1)  # not seen.wait(0.1): a timed wait never times out under faketime (README)
            assert seen.is_set(), other
            assert worker.is_alive() and not other  # it waits: nothing of it is applied
    finally:
        if worker.is_alive() or worker.ident is not None:
            worker.join(120)
    assert not worker.is_alive()
    first_report, second_report = _applied(held), _applied(other)
    # the département's files are numbered in the order they were applied (app.persons.order)
    assert first_report.file_id is not None and second_report.file_id is not None
    assert first_report.file_id < second_report.file_id
    with session_scope(pg) as s:
        persons = select(func.count(func.distinct(Person.id))).where(Person.departement_code == "055")
        assert s.scalar(persons) == 2 * FOYERS
        assert s.scalar(select(func.count()).select_from(FluxFile).where(FluxFile.status == "applied")) == 2


def test_an_event_waits_for_a_file_of_its_own_departement_only(pg, tmp_path):
    day = today(pg) - timedelta(days=1)
    engine = create_engine(pg.database_url)
    try:
        with file_held(pg, _file(tmp_path / "a", "055", day), day):
            with engine.begin() as conn:  # another département: not held up
                conn.execute(text("SET LOCAL lock_timeout = '60s'"))
                assert wait_for_ingestion(conn, "093") is True
            with engine.begin() as conn:  # its own: waits for the file's commit (refused at once here)
                conn.execute(text("SET LOCAL lock_timeout = '10ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    wait_for_ingestion(conn, "055")
    finally:
        engine.dispose()
