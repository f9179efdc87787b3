"""A person's state as of a date, the one query (app.persons.states), on both databases."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from app.db import get_engine, one_of
from app.models import PersonState
from app.persons.states import states_as_of
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, person, write_flux


def test_no_person_no_query_and_nothing_matches_an_empty_list(db):
    """A worklist page with nobody on it asks for the states of no one: on PostgreSQL `= ANY(array)` could
    not even type an empty array (a 500 on the worklist, found by the suite on PostgreSQL)."""
    with get_engine(db).connect() as conn:
        assert states_as_of(conn, [], date(2024, 3, 1)) == {}
        assert conn.scalar(select(func.count()).where(one_of(conn, PersonState.person_id, []))) == 0


def test_the_latest_present_state_on_or_before_the_day(db, tmp_path):
    monthly = write_flux(tmp_path, [foyer(person())], type_flux="M", day=date(2024, 3, 1))
    assert ingest(db, monthly, date(2024, 3, 1), initial_stock=True).status == "applied"
    closed = write_flux(tmp_path, [foyer(person(), etat="5")], type_flux="I", day=date(2024, 3, 8))
    assert ingest(db, closed, date(2024, 3, 8)).status == "applied"
    with get_engine(db).connect() as conn:
        (pid,) = (
            conn.execute(PersonState.__table__.select().with_only_columns(PersonState.person_id)).scalars().unique()
        )
        assert states_as_of(conn, [pid], date(2024, 2, 29)) == {}  # nothing received yet
        assert states_as_of(conn, [pid], date(2024, 3, 7))[pid].etat == "2"
        assert states_as_of(conn, [pid], date(2024, 3, 8))[pid].etat == "5"  # the day's file counts
