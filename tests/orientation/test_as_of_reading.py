"""One reading of "an entry episode as seen on an as_of date" (issue #21): `rules.outcome_as_of` in Python
and its SQL twin (`app.orientation.episodes.waiting_on`, `decided_by`, `oriented_by`) agree on every stored
episode of a generated département at several as_of dates; the worklist (API and domain), the pilotage
table `delais-orientation`, the dashboard's waiting list, the extract and the weekly pilotage file all read
the same figures."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.clock import today
from app.db import get_engine, session_scope
from app.exports.weekly import PILOTAGE_COLUMNS, pilotage_rows
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, Person
from app.orientation.episodes import decided_by, oriented_by, refresh_pending, waiting_on
from app.orientation.service import EventIn, record_event
from app.orientation.worklist import worklist_page
from app.pilotage import extract
from app.pilotage.period import Period
from app.pilotage.population import episodes as population
from app.pilotage.population import waiting_by_age
from app.pilotage.tables import compute
from app.rules.episodes import DECISIONS, ORIENTED, WAITING, outcome_as_of

DEP = "055"


@pytest.fixture
def departement(db: Any, tmp_path: Any) -> date:
    """250 foyers over 50 days; two thirds of the nouveaux entrants oriented 0 to 30 days after T0 (never
    after today), some of them absent at their orientation RDV."""
    start = today(db) - timedelta(days=50)
    engine = get_engine(db)
    for f in generate(tmp_path / "gen", 250, 50, start, seed=7, departement=DEP):
        stock = f.type_flux == "M" and f.created_on == start
        options = IngestOptions(received_on=f.received_on, initial_stock=stock)
        assert ingest_file(engine, db, f.path, options).status == "applied"
    refresh_pending(engine)
    with session_scope(db) as s:
        entrants = s.execute(select(EntryEpisode.person_id, EntryEpisode.t0).order_by(EntryEpisode.id)).all()
    rng = random.Random(7)
    for n, (pid, t0) in enumerate(entrants):
        if n % 3 == 0:
            continue
        on = min(t0 + timedelta(days=rng.randint(0, 30)), today(db))
        bodies = [{"type": "orientation", "date": on, "organisme": "DEPARTEMENT", "type_parcours": "social"}]
        if n % 5 == 0:
            bodies.insert(0, {"type": "rdv_orientation", "date": t0, "presence": "absent"})
        with session_scope(db, write=True) as s:
            for body in bodies:
                record_event(s, db, s.get(Person, pid), EventIn.model_validate(body), recorded_by="test")
    refresh_pending(engine)
    return start


def _as_of_dates(db: Any, start: date) -> list[date]:
    return [start, start + timedelta(days=12), start + timedelta(days=25), today(db) - timedelta(days=1), today(db)]


def test_the_python_and_the_sql_readings_agree_on_stored_episodes(db, departement):
    ee = EntryEpisode.__table__.c
    with get_engine(db).connect() as conn:
        stored = conn.execute(select(EntryEpisode.__table__)).all()
        assert len(stored) > 20
        assert any(r.outcome == ORIENTED for r in stored) and any(r.outcome == WAITING for r in stored)
        for r in stored:  # the pairing both readings rest on
            assert (r.end_on is not None) == (r.outcome in DECISIONS), r
            assert r.open_until == (r.end_on or date.max)
        seen_waiting, seen_oriented = set(), set()
        for day in _as_of_dates(db, departement):

            def ids(where: Any, day: date = day) -> set[int]:
                return set(conn.execute(select(ee.id).where(where)).scalars())

            python = {r.id: outcome_as_of(r, day) for r in stored}
            entered = {i for i in python if next(r for r in stored if r.id == i).t0 <= day}
            waiting = {i for i in entered if python[i] == WAITING}
            assert ids(waiting_on(ee, day)) == waiting, day
            assert ids(decided_by(ee, day)) == {i for i, o in python.items() if o in DECISIONS}, day
            assert ids(oriented_by(ee, day)) == {i for i, o in python.items() if o == ORIENTED}, day
            # the mapped class reads the same (the worklist's form)
            with session_scope(db) as s:
                orm = set(s.scalars(select(EntryEpisode.id).where(waiting_on(EntryEpisode, day))))
                rows = s.scalars(select(EntryEpisode)).all()
                assert orm == waiting
                assert {e.id: outcome_as_of(e, day) for e in rows} == python
            seen_waiting |= waiting
            seen_oriented |= {i for i, o in python.items() if o == ORIENTED}
        # some episode changes reading between the dates: the dates are not all alike
        assert seen_waiting & seen_oriented


def test_the_worklist_the_tables_the_extract_and_the_weekly_file_use_it(
    db, departement, client, make_api_key, tmp_path
):
    key = make_api_key(["persons:read", "pilotage:read"])
    day = today(db)
    whole = Period.days(departement - timedelta(days=400), day)
    with session_scope(db) as s:
        stored = s.scalars(select(EntryEpisode).where(EntryEpisode.departement_code == DEP)).all()
        entered = [e for e in stored if e.t0 <= day]
        waiting = sorted((e.t0, e.person_id) for e in entered if outcome_as_of(e, day) == WAITING)
        oriented = [e for e in entered if outcome_as_of(e, day) == ORIENTED]
    assert waiting and oriented

    # the worklist (API): same persons, same order
    r = client.get("/api/v1/worklist?limit=200", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == len(waiting)
    assert [(date.fromisoformat(i["t0"]), i["person_id"]) for i in r.json()["items"]] == waiting
    with session_scope(db) as s:  # the domain function the API and the demo call
        page = worklist_page(s, [DEP], day, limit=200)
        assert (page.total, [(e.episode.t0, e.person.id) for e in page.entries]) == (len(waiting), waiting)

    with get_engine(db).connect() as conn:
        # the table delais-orientation and the dashboard's waiting list
        table = compute(conn, "delais-orientation", [DEP], whole, day, dims=())
        assert table.value("en_attente") == len(waiting)
        assert table.value("orientes") == len(oriented)
        assert sum(waiting_by_age(conn, [DEP], day).values()) == len(waiting)
        for as_of in _as_of_dates(db, departement):
            rows = population(conn, [DEP], whole, as_of)
            by_id = {(e.person_id, e.t0): e for e in stored}
            for row in rows:
                assert (row.decided or WAITING) == outcome_as_of(by_id[(row.person_id, row.t0)], as_of)
            # the extract: one line per episode, its issue the same reading, its absents the tables'
            lines = list(extract.rows(conn, b"k" * 32, [DEP], whole, as_of))
            assert sorted(line["issue"] for line in lines) == sorted(row.decided or WAITING for row in rows)
            absents = compute(conn, "absents-rdv", [DEP], whole, as_of, dims=()).value("absents_rdv_orientation")
            assert sum(line["absent_rdv_orientation"] for line in lines) == absents
            # the weekly pilotage file: an orientation date exactly for the episodes oriented on as_of
            stock = PILOTAGE_COLUMNS.index("STOCK")
            entrants = [row for row in pilotage_rows(conn, db, DEP, as_of) if row[stock] == "0"]
            assert len(entrants) == sum(e.t0 <= as_of for e in stored)
            assert sum(bool(row[7]) for row in entrants) == sum(r.decided == ORIENTED for r in rows)
