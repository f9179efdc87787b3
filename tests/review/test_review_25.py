"""Review of issue #25 (legal deadline, contrat d'engagement, absences by RDV kind): each test shows a defect
found in review (SQLite and PostgreSQL: PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.models import EntryEpisode, OrientationEvent, PendingEvent, Person
from app.orientation import pending
from app.orientation.contracts import transition
from app.orientation.episodes import refresh_pending
from app.orientation.references import PersonRef
from tests.support.clock import on_day
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

TODAY = date(2026, 12, 6)


@pytest.fixture
def day(db):
    return on_day(db, TODAY)


def _ingest(settings, tmp_path, received: date, foyers, **options):
    where = tmp_path / received.isoformat()
    where.mkdir()
    path = write_flux(where, foyers, type_flux="M" if options.get("initial_stock") else "I", day=received)
    assert ingest(settings, path, received, **options).status == "applied"


def test_a_pending_cer_dated_2025_kept_aside_before_the_refusal_is_applied_not_dropped(day, tmp_path):
    """A CER dated 2025 kept aside (its person not known yet) before the service refused CER/PPAE dated since
    2025 is the contract the person signed: commit 12d8985 keeps the recorded ones answering the contract
    clock; the pending one must not be dropped when its person arrives."""
    with session_scope(day, write=True) as s:
        _row, status = pending.keep(
            s,
            day,
            "055",
            PersonRef(nir13=NIR_A[:13]),
            {"type": "contrat", "date": "2025-03-20", "contrat": "CER"},
            source="api",
            recorded_by="test",
        )
        assert status == pending.PENDING
    _ingest(day, tmp_path, date(2025, 3, 1), [foyer(person(NIR_A))])
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        kept = s.scalar(select(PendingEvent))
        assert kept.status == pending.APPLIED, kept.reason
        ev = s.scalar(select(OrientationEvent).where(OrientationEvent.type == "contrat"))
        assert (ev.event_date, ev.contrat_type) == (date(2025, 3, 20), "CER")


def test_transition_leaves_out_a_stock_person_who_came_back_as_a_nouvel_entrant(day, tmp_path):
    """A person of the 2024 stock whose right closed in 2025 and who came back in 2026 is a nouvel entrant
    waiting for an orientation (an entry episode, criterion 3: no follow-up in progress): no longer
    "accompanied before 2025". The transition list must not hold them (they are in the orientation worklist)."""
    who = person(NIR_A)
    _ingest(day, tmp_path, date(2024, 2, 15), [foyer(who)], initial_stock=True)
    _ingest(day, tmp_path, date(2025, 3, 10), [foyer(who, etat="5", closure=("PCA", date(2025, 2, 28)))])
    _ingest(day, tmp_path, date(2026, 11, 2), [foyer(who)])
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        pid = s.scalar(select(Person.id))
        eps = s.scalars(select(EntryEpisode).where(EntryEpisode.person_id == pid)).all()
        assert [(e.t0, e.outcome) for e in eps] == [(date(2026, 11, 2), "en_attente")]
        listed = transition(s.connection(), ["055"], TODAY)
    assert pid not in [t.person_id for t in listed]


def test_transition_counts_a_cer_signed_in_2025_recorded_before_the_refusal(day, tmp_path):
    """A CER dated 2025 recorded before the service refused them is the contract the person signed (it
    answers the contract clock: `satisfies_clock`, commit 12d8985); since 1 January 2025 the contract signed is
    the contrat d'engagement, so the transition must not list the person as still without one."""
    who = person(NIR_A)
    _ingest(day, tmp_path, date(2024, 2, 15), [foyer(who)], initial_stock=True)
    _ingest(day, tmp_path, date(2025, 3, 10), [foyer(who)])
    with session_scope(day, write=True) as s:
        pid = s.scalar(select(Person.id))
        s.add(
            OrientationEvent(
                person_id=pid,
                departement_code="055",
                type="contrat",
                event_date=date(2025, 3, 20),
                contrat_type="CER",
                source="api",
                recorded_by="test",
            )
        )
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        assert pid in [t.person_id for t in transition(s.connection(), ["055"], date(2025, 3, 19))]
        assert pid not in [t.person_id for t in transition(s.connection(), ["055"], TODAY)]


def test_a_retry_of_a_cer_dated_2025_recorded_before_the_refusal_is_answered_as_known(day, tmp_path, make_api_key):
    """A platform whose answer was lost retries the very event the service stored before it refused CER/PPAE
    dated since 2025 (same external_id, same content): the answer is "already recorded" (200), as for every
    replay, not a 422 that tells the platform its stored contract failed; a new one is still refused."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    _ingest(day, tmp_path, date(2025, 3, 1), [foyer(person(NIR_A))])
    with session_scope(day, write=True) as s:
        pid = s.scalar(select(Person.id))
        s.add(
            OrientationEvent(
                person_id=pid,
                departement_code="055",
                type="contrat",
                event_date=date(2025, 3, 20),
                contrat_type="CER",
                external_id="cer-1",
                source="api",
                recorded_by="test",
            )
        )
    key = make_api_key(["orientation:write", "persons:read"])
    body = {"type": "contrat", "date": "2025-03-20", "contrat": "CER"}
    with TestClient(create_app(day)) as client:
        again = client.post(
            f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=body | {"external_id": "cer-1"}
        )
        assert again.status_code == 200, again.text
        by_content = client.post("/api/v1/events", headers={"X-API-Key": key},
                                 json={"person": {"nir": NIR_A[:13]}, "event": body})  # fmt: skip
        assert by_content.status_code == 200, by_content.text
        new = client.post(
            f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=body | {"external_id": "cer-2"}
        )
        assert new.status_code == 422 and "contrat_engagement" in new.text, new.text


def test_transition_leaves_out_a_stock_person_waiting_since_2024_as_a_nouvel_entrant(day, tmp_path):
    """The same with an entry in 2024: a person of the stock whose right closed and reopened in 2024, never
    oriented since, is a nouvel entrant waiting (the orientation worklist's), not "accompanied before 2025"."""
    who = person(NIR_A)
    _ingest(day, tmp_path, date(2024, 2, 15), [foyer(who)], initial_stock=True)
    _ingest(day, tmp_path, date(2024, 3, 10), [foyer(who, etat="5", closure=("PCA", date(2024, 2, 29)))])
    _ingest(day, tmp_path, date(2024, 6, 3), [foyer(who)])
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        pid = s.scalar(select(Person.id))
        eps = s.scalars(select(EntryEpisode).where(EntryEpisode.person_id == pid)).all()
        assert [(e.t0, e.outcome) for e in eps] == [(date(2024, 6, 3), "en_attente")]
        listed = transition(s.connection(), ["055"], TODAY)
    assert pid not in [t.person_id for t in listed]


def test_missed_rdvs_per_person_for_more_persons_than_a_statement_takes_parameters(day, make_api_key):
    """The per-person list of missed RDVs has no page: a year of a large département lists tens of thousands
    of persons. Reading them back for the audit with one placeholder per id fails on PostgreSQL past 65,535
    (psycopg's limit): `one_of` sends them as one array (fails on PostgreSQL before the fix)."""
    from fastapi.testclient import TestClient
    from sqlalchemy import insert

    from app.main import create_app
    from app.models import AccessRecord

    n = 65_536 + 10
    engine = get_engine(day)
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes 250,000 parameters (and 65,000 persons take minutes there)")
    with engine.begin() as conn:
        conn.execute(
            insert(Person.__table__),
            [
                {
                    "id": i,
                    "departement_code": "055",
                    "stock": False,
                    "first_file_id": 1,
                    "first_received_on": date(2025, 1, 1),
                    "updated_file_id": 1,
                }
                for i in range(1, n + 1)
            ],
        )
        conn.execute(
            insert(OrientationEvent.__table__),
            [
                {
                    "person_id": i,
                    "departement_code": "055",
                    "type": "rdv_accompagnement",
                    "event_date": date(2025, 5, 5),
                    "presence": "absent",
                    "source": "api",
                    "recorded_by": "test",
                }
                for i in range(1, n + 1)
            ],
        )
    key = make_api_key(["persons:read"])
    with TestClient(create_app(day)) as client:
        r = client.get("/api/v1/pilotage/absents-rdv/personnes?periode=2025-05&format=csv", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text[:300]
    with session_scope(day) as s:
        from sqlalchemy import func

        assert s.scalar(select(func.count()).select_from(AccessRecord).where(AccessRecord.person_id.is_not(None))) == n


def test_the_transition_csv_holds_every_person_not_the_json_page(day, tmp_path, make_api_key):
    """`format=csv` is the list staff open in a spreadsheet: without a `limit` it holds every person listed,
    not the JSON's first page of 50 with nothing saying the rest was cut."""
    import csv
    import io

    from fastapi.testclient import TestClient

    from app.main import create_app

    foyers = [
        foyer(person(None, nom=f"NOM{i:03d}", prenom="ANNE", dtnai=date(1980, 1, 1 + i % 28)), matricule=f"{i:07d}")
        for i in range(1, 56)
    ]
    _ingest(day, tmp_path, date(2024, 2, 15), foyers, initial_stock=True)
    refresh_pending(get_engine(day))
    key = make_api_key(["persons:read"])
    with TestClient(create_app(day)) as client:
        page = client.get("/api/v1/worklist/transition-ce?as_of=2026-12-06", headers={"X-API-Key": key}).json()
        assert (page["total"], len(page["items"])) == (55, 50)
        r = client.get("/api/v1/worklist/transition-ce?as_of=2026-12-06&format=csv", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        assert len(list(csv.reader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))) == 1 + 55
        r = client.get("/api/v1/worklist/contrats?as_of=2026-12-06&format=csv&limit=2", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text


def test_an_opening_received_before_t0_in_the_same_month_counts_from_its_own_reception():
    """The right opens in the file received on 02/03 (the person not yet soumis: TOPPERSDRODEVORSA 0) and the
    person becomes soumis in the file of 05/03 (T0): the six weeks count from "la réception par ses services
    de l'information relative à l'ouverture du droit" (02/03 -> 13/04), not from T0 (16/04). The same facts
    one month apart (opening 20/02, T0 05/03) are an opening too (20/02 -> 03/04): the classification no
    longer depends on the calendar month (it once did: review of issue #25)."""
    from tests.rules.test_legal_deadline import fact, only_episode

    same_month = only_episode([fact(date(2025, 3, 2), sdd=False), fact(date(2025, 3, 5))])
    month_before = only_episode([fact(date(2025, 2, 20), sdd=False), fact(date(2025, 3, 5))])
    assert same_month.legal_deadline == date(2025, 4, 13)
    assert (month_before.legal_clock is None) == (same_month.legal_clock is None)
    assert month_before.legal_deadline == date(2025, 4, 3)
