"""The contrat d'engagement through the database (issue #25, items 3 and 4), on SQLite and PostgreSQL.

The département (hand-written; the business date fixed on 06/12/2026, every table read with an explicit as_of):
  A  in the initial stock (received 15/02/2024), nothing since: accompanied before 2025, no CE;
  B  in the stock too, a CE signed with France Travail on 01/03/2026;
  F  enters 03/06/2024, oriented 10/06/2024 (Département), a CER 20/06/2024: no CE;
  C  enters 01/03/2025, oriented 15/03/2025 (Département, social), a CE 15/04/2025 (Département): in time;
  D  enters 01/03/2025, oriented 15/03/2025 (France Travail, professionnel), a CE 16/04/2025 (FT): one day late;
  E  enters 01/03/2025, oriented 20/03/2025 (Département), a CE 01/04/2025, re-oriented 10/05/2025 (France
     Travail): the clock restarts (deadline 10/06/2025) and no CE follows.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import date

import pytest
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.exports.weekly import PILOTAGE_COLUMNS, pilotage_rows
from app.models import AccessRecord, EntryEpisode, OrientationEvent, Person
from app.orientation.contracts import in_droits_devoirs_on, transition, waiting_contract
from app.orientation.episodes import refresh_pending
from app.orientation.service import import_csv
from app.pilotage.dashboard import build, render
from app.pilotage.tables import Period, compute, to_csv
from tests.support.clock import on_day
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, person, write_flux
from tests.support.pilotage_scene import record, scene_person

TODAY = date(2026, 12, 6)
STOCK_DAY, F_ENTRY, ENTRY = date(2024, 2, 15), date(2024, 6, 3), date(2025, 3, 1)
MATRICULE = {"A": "0000001", "B": "0000002", "C": "0000003", "D": "0000004", "E": "0000005", "F": "0000006"}


def _foyer(name: str):
    who = person("1780455545128", nom="NOMF", prenom="PRENOMF", dtnai=date(1978, 4, 4)) if name == "F" else None
    return foyer(who or scene_person(name), matricule=MATRICULE[name])


@pytest.fixture
def day(db):
    return on_day(db, TODAY)


@pytest.fixture
def scene(day, tmp_path):
    files = [
        (STOCK_DAY, ["A", "B"], {"initial_stock": True}, "M"),
        (F_ENTRY, ["F"], {}, "I"),
        (ENTRY, ["C", "D", "E"], {}, "I"),
    ]
    for n, (received, names, options, kind) in enumerate(files):
        where = tmp_path / str(n)
        where.mkdir()
        path = write_flux(where, [_foyer(x) for x in names], type_flux=kind, day=received)
        assert ingest(day, path, received, **options).status == "applied"
    refresh_pending(get_engine(day))
    with session_scope(day) as s:
        ids = {p.nom[-1]: p.id for p in s.scalars(select(Person))}
    record(day, ids["B"], type="contrat_engagement", date=date(2026, 3, 1), organisme="FRANCE_TRAVAIL")
    record(day, ids["F"], type="orientation", date=date(2024, 6, 10), organisme="DEPARTEMENT", type_parcours="social")
    record(day, ids["F"], type="contrat", date=date(2024, 6, 20), contrat="CER")
    for name, oriented, organisme, parcours, signed in (
        ("C", date(2025, 3, 15), "DEPARTEMENT", "social", date(2025, 4, 15)),
        ("D", date(2025, 3, 15), "FRANCE_TRAVAIL", "professionnel", date(2025, 4, 16)),
        ("E", date(2025, 3, 20), "DEPARTEMENT", "socio-professionnel", date(2025, 4, 1)),
    ):
        record(day, ids[name], type="orientation", date=oriented, organisme=organisme, type_parcours=parcours)
        record(day, ids[name], type="contrat_engagement", date=signed, organisme=organisme, structure="S")
    record(day, ids["E"], type="orientation", date=date(2025, 5, 10), organisme="FRANCE_TRAVAIL",
           type_parcours="professionnel")  # fmt: skip
    return ids


def test_episodes_store_their_orientations_and_contracts(day, scene):
    with session_scope(day) as s:
        e = s.scalar(select(EntryEpisode).where(EntryEpisode.person_id == scene["E"]))
        assert e.orientations == [["2025-03-20", "socio-professionnel"], ["2025-05-10", "professionnel"]]
        assert e.contrats == [["2025-04-01", "CE"]]
        assert e.contrats_engagement == [["2025-04-01", "DEPARTEMENT"]]
        stored = s.scalar(select(OrientationEvent).where(OrientationEvent.person_id == scene["C"],
                                                         OrientationEvent.type == "contrat_engagement"))  # fmt: skip
        assert (stored.contrat_type, stored.organisme, stored.structure) == ("CE", "DEPARTEMENT", "S")


def test_the_contracts_worklist_by_deadline_near_and_past(day, scene):
    with get_engine(day).connect() as conn:
        april = waiting_contract(conn, ["055"], date(2025, 4, 10), warning_days=7)
        # C and D: oriented 15/03, deadline 15/04, five days left (near); E has its CE of 01/04
        assert [(w.episode.person_id, w.deadline, w.days_left, w.near, w.past) for w in april] == [
            (scene["C"], date(2025, 4, 15), 5, True, False),
            (scene["D"], date(2025, 4, 15), 5, True, False),
        ]
        # on the deadline day C signs (in time); D is still waiting, not past yet
        on_deadline = waiting_contract(conn, ["055"], date(2025, 4, 15))
        assert [(w.episode.person_id, w.past) for w in on_deadline] == [(scene["D"], False)]
        late = waiting_contract(conn, ["055"], date(2025, 4, 16))
        assert late == []  # D signed on 16/04 (late, but signed)
        # E re-oriented 10/05: the CE of 01/04 no longer answers; deadline 10/06, past on 30/06
        june = waiting_contract(conn, ["055"], date(2025, 6, 30))
        assert [(w.episode.person_id, w.oriented_on, w.deadline, w.days_left, w.past) for w in june] == [
            (scene["E"], date(2025, 5, 10), date(2025, 6, 10), -20, True)
        ]
        # F, oriented in 2024, is the transition's, not this list's
        assert scene["F"] not in {w.episode.person_id for w in waiting_contract(conn, ["055"], TODAY)}


def test_the_contrats_engagement_table_hand_computed(day, scene):
    """March 2025: C, D, E oriented. Delays to the first contract: C 31 days (15/03 -> 15/04, in time), D 32
    (16/04, late), E 12 (01/04). Mean (31 + 32 + 12) / 3 = 25.0, median 31; within the month 2 of 3. On 30/06
    E waits (re-oriented 10/05, deadline 10/06 past). Transition on 30/06/2025: A, F, and B (its CE of 2026
    is after as_of)."""
    with get_engine(day).connect() as conn:
        t = compute(conn, "contrats-engagement", ["055"], Period.parse("2025-03"), date(2025, 6, 30))
        assert t.value("orientes_periode") == 3
        assert t.value("contrats_signes") == 3
        assert t.value("contrats_signes_1mois") == 2
        assert t.value("taux_contrat_1mois") == round(2 / 3, 4)
        assert t.value("delai_moyen_contrat_jours") == 25.0
        assert t.value("delai_median_contrat_jours") == 31
        assert t.value("en_attente_contrat") == 1
        assert t.value("en_attente_contrat_hors_delai") == 1
        assert t.value("transition_sans_ce") == 3
        assert t.value("orientes_periode", "organisme", "FRANCE_TRAVAIL") == 1
        # as of 15/04/2025 (reproducible: D's CE of 16/04 not counted yet)
        early = compute(conn, "contrats-engagement", ["055"], Period.parse("2025-03"), date(2025, 4, 15))
        assert (early.value("contrats_signes"), early.value("contrats_signes_1mois")) == (2, 2)
        assert (early.value("en_attente_contrat"), early.value("en_attente_contrat_hors_delai")) == (1, 0)
        assert early.value("delai_median_contrat_jours") == (31 + 12) / 2
        # on 06/12/2026 B has its CE: A and F remain
        assert (
            compute(conn, "contrats-engagement", ["055"], Period.parse("2025-03"), TODAY).value("transition_sans_ce")
            == 2
        )
        # June 2024: F, oriented 10/06/2024 with a CER on 20/06: signed; a 2024 orientation is never "waiting"
        # for a contrat d'engagement here (the one-month clock is the law's since 2025: the transition counts it)
        june = compute(conn, "contrats-engagement", ["055"], Period.parse("2024-06"), date(2024, 6, 15))
        assert (june.value("orientes_periode"), june.value("en_attente_contrat")) == (1, 0)
        assert june.value("en_attente_contrat_hors_delai") == 0
        text = to_csv(t).decode("utf-8-sig")
        assert "Contrats signés dans le mois suivant l'orientation" in text
        # the dashboard shows the same figures beside the convention's (item 7)
        board = build(conn, ["055"], Period.parse("2025-03"), date(2025, 6, 30), 1.0)
    headline = dict(board.headline)
    assert headline["Contrats d'engagement signés dans le mois (orientés du mois)"] == "66,7 %"
    assert headline["Orientés sans contrat, délai d'un mois dépassé"] == "1"
    assert headline["Accompagnés avant 2025 sans contrat d'engagement"] == "3"
    (chart,) = [c for c in board.charts if c.key == "contrats"]
    shown = dict((row[0], row[1]) for row in chart.rows)
    assert shown["Orientés dans la période"] == "3"
    assert shown["Contrats signés dans le mois suivant l'orientation"] == "2"
    assert shown["Délai médian de signature du contrat (jours)"] == "31"
    page = html.unescape(render(board, ["055"], None, 1.0))
    assert "Contrats d'engagement des personnes orientées en mars 2025" in page


def test_the_transition_list_on_06_12_2026_with_its_deadline(day, scene, make_api_key):
    with get_engine(day).connect() as conn:
        entries = transition(conn, ["055"], TODAY)
    assert [(e.person_id, e.origin, e.since) for e in entries] == sorted(
        [(scene["A"], "stock", STOCK_DAY), (scene["F"], "orientation", date(2024, 6, 10))]
    )
    from fastapi.testclient import TestClient

    from app.main import create_app

    key = make_api_key(["persons:read"])
    with TestClient(create_app(day)) as client:
        r = client.get("/api/v1/worklist/transition-ce?as_of=2026-12-06", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["as_of"], body["deadline"], body["total"]) == ("2026-12-06", "2027-01-01", 2)
        assert {i["person_id"]: i["days_left"] for i in body["items"]} == {scene["A"]: 26, scene["F"]: 26}
        r = client.get("/api/v1/worklist/transition-ce?as_of=2026-12-06&format=csv", headers={"X-API-Key": key})
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
        f = next(x for x in rows if x["id_personne"] == str(scene["F"]))
        assert (f["nom"], f["accompagne_avant_2025_par"], f["depuis_le"], f["date_limite_contrat_engagement"]) == (
            "NOMF",
            "orientation",
            "10/06/2024",
            "01/01/2027",
        )
        r = client.get("/api/v1/worklist/contrats?as_of=2025-06-30", headers={"X-API-Key": key})
        (item,) = r.json()["items"]
        assert (item["person_id"], item["contract_deadline"], item["deadline_past"], item["type_parcours"]) == (
            scene["E"],
            "2025-06-10",
            True,
            "professionnel",
        )
        r = client.get("/api/v1/worklist/contrats?as_of=2025-04-10&format=csv", headers={"X-API-Key": key})
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
        assert [(x["date_limite_contrat"], x["echeance_proche"]) for x in rows] == [("15/04/2025", "oui")] * 2
    with session_scope(day) as s:
        actions = {a.action for a in s.scalars(select(AccessRecord))}
    assert {"worklist.transition_ce", "worklist.contrats"} <= actions


def test_the_weekly_pilotage_file_writes_cer_or_ppae_for_a_ce(day, scene):
    """C's CE with the Département: CER; D's with France Travail: PPAE; DATE_CER the CE's date; with
    PASSERELLE_PILOTAGE_CONTRAT_CE_CODE=CE, CE."""

    def rows(settings):
        with get_engine(settings).connect() as conn:
            found = [dict(zip(PILOTAGE_COLUMNS, r, strict=True)) for r in pilotage_rows(conn, settings, "055", TODAY)]
        return {r["ID_CAF"]: r for r in found}

    by = rows(day)
    pick = ("TYPE_CONTRAT", "DATE_CER", "STOCK")
    assert tuple(by[MATRICULE["C"]][c] for c in pick) == ("CER", "15/04/2025", "0")
    assert tuple(by[MATRICULE["D"]][c] for c in pick) == ("PPAE", "16/04/2025", "0")
    assert tuple(by[MATRICULE["B"]][c] for c in pick) == ("PPAE", "01/03/2026", "1")  # the stock's rows too
    assert tuple(by[MATRICULE["F"]][c] for c in pick) == ("CER", "20/06/2024", "0")  # a CER stays a CER
    ce = rows(day.model_copy(update={"pilotage_contrat_ce_code": "CE"}))
    assert (ce[MATRICULE["C"]]["TYPE_CONTRAT"], ce[MATRICULE["D"]]["TYPE_CONTRAT"]) == ("CE", "CE")
    assert ce[MATRICULE["F"]]["TYPE_CONTRAT"] == "CER"


def test_a_cer_or_ppae_after_2025_is_refused_by_the_api_and_the_csv_import(day, scene, make_api_key):
    from fastapi.testclient import TestClient

    from app.main import create_app

    key = make_api_key(["orientation:write", "persons:read"])
    pid = scene["A"]
    with TestClient(create_app(day)) as client:
        for kind in ("CER", "PPAE"):
            r = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key},
                            json={"type": "contrat", "date": "2025-01-01", "contrat": kind})  # fmt: skip
            assert r.status_code == 422, r.text
            assert "contrat_engagement" in r.text
        ok = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key},
                         json={"type": "contrat", "date": "2024-12-31", "contrat": "CER"})  # fmt: skip
        assert ok.status_code == 201, ok.text
        needs = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key},
                            json={"type": "contrat_engagement", "date": "2025-02-01"})  # fmt: skip
        assert needs.status_code == 422 and "organisme" in needs.text
        ce_2024 = {"type": "contrat_engagement", "date": "2024-12-31", "organisme": "DEPARTEMENT"}
        early = client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=ce_2024)
        assert early.status_code == 422 and "exists from 2025-01-01" in early.text, early.text
    text = (
        "matricule;role;evenement;date;organisme;type_parcours;structure\n"
        f"{MATRICULE['A']};DEM;contrat;02/01/2025;;CER;\n"
        f"{MATRICULE['A']};DEM;contrat_engagement;02/01/2025;DEPARTEMENT;;MDS\n"
        f"{MATRICULE['A']};DEM;contrat;03/01/2025;CAP_EMPLOI;CE;\n"
    )
    with session_scope(day, write=True) as s:
        report = import_csv(s, day, "055", text, "test")
    assert report.applied == 2
    (rejected,) = report.rejected
    assert rejected["line"] == 2 and "contrat_engagement" in rejected["reason"]
    with session_scope(day) as s:
        kinds = sorted(
            (e.type, e.contrat_type, e.organisme)
            for e in s.scalars(select(OrientationEvent).where(OrientationEvent.person_id == pid))
        )
    assert kinds == [
        ("contrat", "CER", None),
        ("contrat_engagement", "CE", "CAP_EMPLOI"),
        ("contrat_engagement", "CE", "DEPARTEMENT"),
    ]


def test_a_ce_for_a_person_not_known_yet_is_kept_aside_then_applied(day, scene, make_api_key, tmp_path):
    """The pending-events path: a CE sent by NIR before the flux that brings its person, applied with its own
    date (and its organisme) when the person arrives; the episodes API then gives the contract's deadline."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    key = make_api_key(["orientation:write", "persons:read"])
    g = person("2810355545129", nom="NOMG", prenom="PRENOMG", dtnai=date(1981, 3, 3))
    ce = {"type": "contrat_engagement", "date": "2026-11-20", "organisme": "MISSION_LOCALE", "external_id": "ce-g"}
    with TestClient(create_app(day)) as client:
        kept = client.post("/api/v1/events", headers={"X-API-Key": key},
                           json={"person": {"nir": "2810355545129"}, "event": ce})  # fmt: skip
        assert kept.status_code == 202, kept.text
        assert kept.json()["pending"]["type"] == "contrat_engagement"
        where = tmp_path / "g"
        where.mkdir()
        entry = date(2026, 11, 2)
        assert (
            ingest(day, write_flux(where, [foyer(g, matricule="0000007")], day=entry), entry).pending_events_applied
            == 1
        )
        refresh_pending(get_engine(day))
        with session_scope(day) as s:
            pid = s.scalar(select(Person.id).where(Person.nom == "NOMG"))
            stored = s.scalar(select(OrientationEvent).where(OrientationEvent.person_id == pid))
            assert (stored.type, stored.contrat_type, stored.organisme, stored.event_date) == (
                "contrat_engagement",
                "CE",
                "MISSION_LOCALE",
                date(2026, 11, 20),
            )
        oriented = {"type": "orientation", "date": "2026-11-10", "organisme": "DEPARTEMENT", "type_parcours": "social"}
        assert (
            client.post(f"/api/v1/persons/{pid}/events", headers={"X-API-Key": key}, json=oriented).status_code == 201
        )
        (ep,) = client.get(f"/api/v1/persons/{pid}/episodes?as_of=2026-12-06", headers={"X-API-Key": key}).json()[
            "episodes"
        ]
        assert (ep["orientations"], ep["contract_deadline"], ep["contract_signed_on"]) == (
            [["2026-11-10", "social"]],
            "2026-12-10",
            "2026-11-20",
        )
        (before,) = client.get(f"/api/v1/persons/{pid}/episodes?as_of=2026-11-15", headers={"X-API-Key": key}).json()[
            "episodes"
        ]
        assert (before["contract_deadline"], before["contract_signed_on"]) == ("2026-12-10", None)


def test_the_transition_leaves_out_the_reoriented_and_the_closed(day, scene):
    """F re-oriented on 01/02/2026: its one-month clock applies (deadline 01/03/2026, past on 06/12/2026), not
    the transition; A's follow-up closed by the platform on 10/01/2026: no longer followed."""
    record(day, scene["F"], type="orientation", date=date(2026, 2, 1), organisme="FRANCE_TRAVAIL",
           type_parcours="professionnel")  # fmt: skip
    record(day, scene["A"], type="suivi_clos", date=date(2026, 1, 10))
    with get_engine(day).connect() as conn:
        assert transition(conn, ["055"], TODAY) == []
        before = [e.person_id for e in transition(conn, ["055"], date(2026, 1, 9))]
        assert before == sorted([scene["A"], scene["B"], scene["F"]])  # B's CE is of 01/03/2026
        waiting = {w.episode.person_id: w for w in waiting_contract(conn, ["055"], TODAY)}
    assert (waiting[scene["F"]].deadline, waiting[scene["F"]].past) == (date(2026, 3, 1), True)


def test_a_stock_received_since_2025_brings_its_file_active_of_before_2025_into_the_transition(day, tmp_path):
    """A Département that starts the service in 2026: its initial stock (received 15/01/2026) holds G, whose
    right was demanded and opened in 2023 (accompanied on 1 January 2025: in the transition), and H, whose right
    opened in June 2025 (not: the one-month clock of its own orientation applies)."""
    g = person("1780455545128", nom="NOMG", prenom="PRENOMG", dtnai=date(1978, 4, 4))
    h = person("2810355545129", nom="NOMH", prenom="PRENOMH", dtnai=date(1981, 3, 3))
    path = write_flux(tmp_path, [
        foyer(g, matricule="0000021", dtdemrsa=date(2023, 5, 2), ddnatdro=date(2023, 5, 1)),
        foyer(h, matricule="0000022", dtdemrsa=date(2025, 6, 2), ddnatdro=date(2025, 6, 1)),
    ], type_flux="M", day=date(2026, 1, 15))  # fmt: skip
    assert ingest(day, path, date(2026, 1, 15), initial_stock=True).status == "applied"
    with session_scope(day) as s:
        ids = {p.nom: p.id for p in s.scalars(select(Person))}
    with get_engine(day).connect() as conn:
        found = transition(conn, ["055"], TODAY)
    assert [(e.person_id, e.origin, e.since) for e in found] == [(ids["NOMG"], "stock", date(2026, 1, 15))]


def test_the_droits_et_devoirs_check_reads_the_states_of_the_persons_departements(day, scene):
    """Given the persons' départements (what lets PostgreSQL read one Département's states on a national
    host), the answer is the one without them; a département that is not theirs finds none of them."""
    ids = sorted(scene.values())
    with get_engine(day).connect() as conn:
        unrestricted = in_droits_devoirs_on(conn, ids, TODAY)
        assert unrestricted  # the scene's stock persons are in droits et devoirs on TODAY
        assert in_droits_devoirs_on(conn, ids, TODAY, ["055"]) == unrestricted
        assert in_droits_devoirs_on(conn, ids, TODAY, ["054"]) == set()
