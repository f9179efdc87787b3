"""Issue #22 through the files and the API: why a person left and which file showed it, the stock's
suspended persons, an orientation dated before T0 that belongs to the entry (docs/rules.md, "Settled in
issue #22"). The rules themselves are tested case by case in tests/rules/test_rules.py."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from app.db import get_engine, session_scope
from app.models import EntryEpisode, PersonState
from app.orientation.episodes import refresh_pending
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux

T0 = date(2024, 3, 4)
LEFT = date(2024, 3, 12)


def _episodes(client, key, pid, as_of):
    r = client.get(f"/api/v1/persons/{pid}/episodes", headers={"X-API-Key": key}, params={"as_of": as_of.isoformat()})
    assert r.status_code == 200, r.text
    return r.json()["episodes"]


def test_a_conjoint_who_left_the_foyer_is_explained_with_the_file(client, db, make_api_key, tmp_path):
    """A daily file lists the foyer without its conjoint: they left the foyer that day; their episode ends at
    the month end, and the explanation says why and which file showed it, as known on as_of."""
    dem, cjt = person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
    ingest(db, write_flux(tmp_path, [foyer(dem, cjt)], day=T0), received_on=T0)
    report = ingest(db, write_flux(tmp_path, [foyer(dem)], day=LEFT), received_on=LEFT)
    assert report.absences == 1
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        pid = s.scalar(select(PersonState.person_id).where(PersonState.absence_reason == "left_foyer"))
        stored = s.scalar(select(EntryEpisode).where(EntryEpisode.person_id == pid))
        assert stored is not None
        assert (stored.left_on, stored.left_reason, stored.left_file_id) == (LEFT, "sorti_du_foyer", report.file_id)
    key = make_api_key(["persons:read"])
    (ep,) = _episodes(client, key, pid, date(2024, 4, 15))
    assert (ep["outcome"], ep["end_on"], ep["left_on"]) == ("sorti_avant_orientation", "2024-03-31", "2024-03-12")
    assert (ep["left_reason"], ep["left_file_id"]) == ("sorti_du_foyer", report.file_id)
    (before,) = _episodes(client, key, pid, date(2024, 3, 10))
    assert (before["outcome"], before["left_on"], before["left_reason"], before["left_file_id"]) == (
        "en_attente",
        None,
        None,
        None,
    )


def test_a_radiation_is_explained_with_the_file(client, db, make_api_key, tmp_path):
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=T0), received_on=T0)
    closed = foyer(person(NIR_A), etat="5", closure=("RFD", date(2024, 3, 10)))
    report = ingest(db, write_flux(tmp_path, [closed], day=LEFT), received_on=LEFT)
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        pid = s.scalar(select(EntryEpisode.person_id))
    (ep,) = _episodes(client, make_api_key(["persons:read"]), pid, date(2024, 4, 15))
    assert (ep["left_on"], ep["left_reason"], ep["left_file_id"]) == ("2024-03-12", "droit_clos", report.file_id)


def test_a_stock_person_suspended_and_back_within_12_months_is_not_an_entry(client, db, make_api_key, tmp_path):
    """The initial stock shows the right suspended (ETATDOSRSA 4 since 01/12/2023); back in droits et devoirs
    eleven months later: no episode (it was a nouvel entrant); back fourteen months after the suspension
    began: an episode, the follow-up closed by the long suspension."""
    suspended = foyer(person(NIR_A), etat="4", susp=("06", date(2023, 12, 1)))
    ingest(db, write_flux(tmp_path, [suspended], type_flux="M", day=date(2024, 1, 15)), initial_stock=True,
           received_on=date(2024, 1, 15))  # fmt: skip
    back = date(2024, 11, 4)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=back), received_on=back)
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        assert s.scalars(select(EntryEpisode)).all() == []
        pid = s.scalar(select(PersonState.person_id))
    key = make_api_key(["persons:read"])
    body = client.get(f"/api/v1/persons/{pid}/episodes", headers={"X-API-Key": key}).json()
    assert body["stock"] and body["follow_up_in_progress"] and body["episodes"] == []
    assert "follow-up in progress since 2024-01-15 (stock)" in body["not_entries"][0]["reason"]

    again = date(2025, 2, 3)
    ingest(db, write_flux(tmp_path, [suspended], day=date(2024, 12, 2)), received_on=date(2024, 12, 2))
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=again), received_on=again)
    refresh_pending(get_engine(db))
    (ep,) = _episodes(client, key, pid, again)
    assert ep["t0"] == again.isoformat()
    assert "(suspension_longue)" in ep["criteria"]["sans_suivi"]["reason"]


def test_an_orientation_before_t0_belongs_to_the_entry(client, db, make_api_key, tmp_path):
    """The Département oriented the person on 20/02, before the CAF's file received on 04/03: the episode is
    kept (it was removed) and oriented at T0 with delay 0; the orientation keeps its own date."""
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=T0), received_on=T0)
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        pid = s.scalar(select(EntryEpisode.person_id))
    key = make_api_key(["orientation:write", "persons:read"])
    body = {"type": "orientation", "date": "2024-02-20", "organisme": "DEPARTEMENT", "type_parcours": "social"}
    r = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=body)
    assert r.status_code == 201, r.text
    (ep,) = r.json()["episodes"]
    assert (ep["t0"], ep["outcome"], ep["end_on"], ep["delay_days"]) == ("2024-03-04", "oriente", "2024-03-04", 0)
    assert (ep["within_15_days"], ep["orientation_on"], ep["organisme"]) == (True, "2024-02-20", "DEPARTEMENT")
    (seen,) = _episodes(client, key, pid, date(2024, 3, 20))
    assert seen["orientation_on"] == "2024-02-20"
    assert "belongs to this entry" in seen["criteria"]["sans_suivi"]["reason"]


def test_every_left_reason_fits_its_column():
    """PostgreSQL refuses a value longer than the column (SQLite would keep it)."""
    from app.rules.episodes import LEFT_REASONS

    assert max(map(len, LEFT_REASONS)) <= EntryEpisode.__table__.c.left_reason.type.length
