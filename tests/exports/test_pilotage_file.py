"""The weekly pilotage file as France Travail reads it (issue #22, item 6), hand-written, on SQLite and
PostgreSQL. Seed 001, Annexe 4 of the data-access convention ("Suivi et pilotage de l'expérimentation"): a
base "contient les données relatives aux caractéristiques des allocataires, à leur parcours
d'accompagnement", one row per allocataire, with:

  DATE_1ER_RDV_ACCOMPAGNEMENT date du 1er rdv d'accompagnement
  STRUCTURE_REFERENTE structure référente de l'accompagnement
  DATE_CER date de signature du CER (et non du PPAE)
  TYPE_CONTRAT différenciation CER ou PPAE
  STOCK fait partie de la file active des départements (et non des nouveaux entrants au RSA)

The département (the initial stock received 15/02/2024, then daily files):
  S  in the stock; radiated 02/04, back 03/05: a nouvel entrant then (one row, never two);
  T  in the stock; oriented 01/03 (MDS), accompaniment RDV cancelled 10/03 then held 20/03, PPAE 25/03,
     CER 10/04, a référent at the CCAS 01/05, PPAE 20/05;
  P  enters 01/03, oriented 10/03 (MDS); radiated 02/04, back 03/05: a second episode, oriented 15/05 (FT);
  Q  enters 01/03, oriented 05/03 (FT), then as T.
"""

from __future__ import annotations

import io
from datetime import date

import pytest
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.exports.weekly import PILOTAGE_COLUMNS, pilotage_rows
from app.kit.csv import write_csv
from app.models import EntryEpisode, Person
from app.orientation.episodes import refresh_pending
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, write_flux
from tests.support.pilotage_scene import record, scene_person

STOCK_DAY, ENTRY, RADIATED, BACK = date(2024, 2, 15), date(2024, 3, 1), date(2024, 4, 2), date(2024, 5, 3)
MATRICULE = {"S": "0000001", "T": "0000002", "P": "0000003", "Q": "0000004"}
WHO = {"S": "A", "T": "B", "P": "C", "Q": "D"}  # the scene's persons (NIR, names, birth) they are


def _foyer(name: str, **kw):
    return foyer(scene_person(WHO[name]), matricule=MATRICULE[name], **kw)


def _path(db, pid: int, orientation: tuple[date, str, str]) -> None:
    """The events Q and T share, after an orientation (day, organisme, structure)."""
    day, organisme, structure = orientation
    record(db, pid, type="orientation", date=day, organisme=organisme, type_parcours="professionnel",
           structure=structure, external_id=f"o-{pid}")  # fmt: skip
    for n, (when, presence) in enumerate(((date(2024, 3, 10), "annule"), (date(2024, 3, 20), "present"))):
        record(db, pid, type="rdv_accompagnement", date=when, presence=presence, external_id=f"a-{pid}-{n}")
    for n, (when, kind) in enumerate(((date(2024, 3, 25), "PPAE"), (date(2024, 4, 10), "CER"),
                                      (date(2024, 5, 20), "PPAE"))):  # fmt: skip
        record(db, pid, type="contrat", date=when, contrat=kind, external_id=f"c-{pid}-{n}")
    record(db, pid, type="referent", date=date(2024, 5, 1), structure="CCAS de Verdun", external_id=f"r-{pid}")


@pytest.fixture
def departement(db, tmp_path):
    files = [
        (STOCK_DAY, [_foyer("S"), _foyer("T")], {"initial_stock": True}, "M"),
        (ENTRY, [_foyer("P"), _foyer("Q")], {}, "I"),
        (RADIATED, [_foyer(n, etat="6", closure=("RFD", RADIATED)) for n in "SP"], {}, "I"),
        (BACK, [_foyer("S"), _foyer("P")], {}, "I"),
    ]
    for n, (day, foyers, options, kind) in enumerate(files):
        where = tmp_path / str(n)
        where.mkdir()
        assert ingest(db, write_flux(where, foyers, type_flux=kind, day=day), day, **options).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        ids = {name: s.scalar(select(Person.id).where(Person.nom == f"NOM{WHO[name]}")) for name in MATRICULE}
    record(db, ids["P"], type="orientation", date=date(2024, 3, 10), organisme="DEPARTEMENT",
           type_parcours="social", structure="MDS Verdun", external_id="o-p1")  # fmt: skip
    record(db, ids["P"], type="orientation", date=date(2024, 5, 15), organisme="FRANCE_TRAVAIL",
           type_parcours="professionnel", structure="Agence FT Verdun", external_id="o-p2")  # fmt: skip
    _path(db, ids["Q"], (date(2024, 3, 5), "FRANCE_TRAVAIL", "Agence FT Verdun"))
    _path(db, ids["T"], (date(2024, 3, 1), "DEPARTEMENT", "MDS Verdun"))
    with session_scope(db) as s:
        t0s = s.execute(select(EntryEpisode.person_id, EntryEpisode.t0).order_by(EntryEpisode.t0)).all()
    assert sorted((pid, t0) for pid, t0 in t0s) == sorted(
        [(ids["P"], ENTRY), (ids["Q"], ENTRY), (ids["P"], BACK), (ids["S"], BACK)]
    ), "P has two episodes, S one, T none (the stock)"
    return ids


def _file(db, as_of: date) -> dict[str, dict[str, str]]:
    """The file's rows by matricule, each person once."""
    with get_engine(db).connect() as conn:
        rows = list(pilotage_rows(conn, db, "055", as_of))
    by_matricule = {row[0]: dict(zip(PILOTAGE_COLUMNS, row, strict=True)) for row in rows}
    assert len(by_matricule) == len(rows), "one row per allocataire"
    return {name: by_matricule[m] for name, m in MATRICULE.items() if m in by_matricule}


def _pick(row: dict[str, str], *columns: str) -> tuple[str, ...]:
    return tuple(row[c] for c in columns)


def test_one_row_per_person_whatever_their_number_of_episodes(db, departement):
    """P entered twice: one row, the current path (the latest episode notified by the week's end)."""
    june = _file(db, date(2024, 6, 9))
    assert set(june) == {"S", "T", "P", "Q"}
    assert _pick(june["P"], "DATE_NOTIFICATION_DEPARTEMENT", "DATE_ORIENTATION", "STRUCTURE_REFERENTE",
                 "C_TYPEPARCOURS", "STOCK") == ("03/05/2024", "15/05/2024", "Agence FT Verdun", "PED", "0")  # fmt: skip
    # before P came back, the same person's row is their first episode
    april = _file(db, date(2024, 4, 21))
    assert _pick(april["P"], "DATE_NOTIFICATION_DEPARTEMENT", "DATE_ORIENTATION", "STRUCTURE_REFERENTE") == (
        "01/03/2024",
        "10/03/2024",
        "MDS Verdun",
    )
    # back on 03/05, not yet oriented again on 12/05: nothing of the first episode's orientation
    may = _file(db, date(2024, 5, 12))
    assert _pick(may["P"], "DATE_NOTIFICATION_DEPARTEMENT", "DATE_ORIENTATION", "STRUCTURE_REFERENTE") == (
        "03/05/2024",
        "",
        "",
    )


def test_the_first_accompaniment_rdv_is_the_first_held_not_a_cancelled_one(db, departement):
    """ "DATE_1ER_RDV_ACCOMPAGNEMENT date du 1er rdv d'accompagnement": the RDV of 10/03 was cancelled by the
    service (`annule`): it did not take place."""
    june = _file(db, date(2024, 6, 9))
    assert june["Q"]["DATE_1ER_RDV_ACCOMPAGNEMENT"] == june["T"]["DATE_1ER_RDV_ACCOMPAGNEMENT"] == "20/03/2024"
    assert _file(db, date(2024, 3, 17))["Q"]["DATE_1ER_RDV_ACCOMPAGNEMENT"] == ""


def test_ppae_then_cer_gives_the_cer_date_and_the_latest_contract(db, departement):
    """ "DATE_CER date de signature du CER (et non du PPAE)", "TYPE_CONTRAT différenciation CER ou PPAE": a
    PPAE then a CER gives the CER's date (the first contract kept it empty); a PPAE after the CER changes the
    type, not the CER's date."""
    for name in "QT":
        assert _pick(_file(db, date(2024, 3, 31))[name], "DATE_CER", "TYPE_CONTRAT") == ("", "PPAE")
        assert _pick(_file(db, date(2024, 4, 21))[name], "DATE_CER", "TYPE_CONTRAT") == ("10/04/2024", "CER")
        assert _pick(_file(db, date(2024, 6, 9))[name], "DATE_CER", "TYPE_CONTRAT") == ("10/04/2024", "PPAE")


def test_the_structure_referente_is_the_latest_referents(db, departement):
    """ "STRUCTURE_REFERENTE structure référente de l'accompagnement": a référent designated at the CCAS
    after the orientation to France Travail (Q) or to the MDS (T) is the structure from its date."""
    for name, oriented_to in (("Q", "Agence FT Verdun"), ("T", "MDS Verdun")):
        assert _file(db, date(2024, 4, 28))[name]["STRUCTURE_REFERENTE"] == oriented_to
        assert _file(db, date(2024, 5, 5))[name]["STRUCTURE_REFERENTE"] == "CCAS de Verdun"


def test_a_stock_person_who_entered_is_one_row_never_two(db, departement):
    """ "STOCK fait partie de la file active des départements (et non des nouveaux entrants au RSA)": S is
    stock until they enter again (03/05), then a nouvel entrant, never both."""
    march = _file(db, date(2024, 3, 31))
    assert _pick(march["S"], "STOCK", "DATE_NOTIFICATION_DEPARTEMENT") == ("1", "")
    assert _pick(march["T"], "STOCK", "DATE_ORIENTATION") == ("1", "01/03/2024")
    june = _file(db, date(2024, 6, 9))
    assert _pick(june["S"], "STOCK", "DATE_NOTIFICATION_DEPARTEMENT") == ("0", "03/05/2024")
    assert june["T"]["STOCK"] == "1"


def test_the_same_week_built_twice_gives_the_same_bytes(db, departement):
    def build() -> bytes:
        out = io.BytesIO()
        with get_engine(db).connect() as conn:
            write_csv(PILOTAGE_COLUMNS, pilotage_rows(conn, db, "055", date(2024, 6, 9)), out)
        return out.getvalue()

    assert build() == build()


def test_an_orientation_dated_before_t0_is_written_with_its_own_date(db, tmp_path):
    """An orientation dated 26/02 for a person whose CAF notification is received 01/03 belongs to the entry
    (docs/rules.md, "Settled in issue #22"): the episode ends at T0, delay 0; both weekly files give the
    orientation's own date, never T0 in its place."""
    from app.exports.weekly import FLUX_COLUMNS, Week, flux_rows

    assert ingest(db, write_flux(tmp_path, [_foyer("P")], day=ENTRY), ENTRY).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        pid = s.scalar(select(Person.id).where(Person.nom == "NOMC"))
    record(db, pid, type="orientation", date=date(2024, 2, 26), organisme="DEPARTEMENT",
           type_parcours="social", structure="MDS Verdun", external_id="o-early")  # fmt: skip
    with session_scope(db) as s:
        (ep,) = s.scalars(select(EntryEpisode)).all()
        assert (ep.t0, ep.end_on, ep.delay_days, ep.orientation_on) == (ENTRY, ENTRY, 0, date(2024, 2, 26))
    row = _file(db, date(2024, 3, 3))["P"]
    assert _pick(row, "DATE_NOTIFICATION_DEPARTEMENT", "DATE_ORIENTATION") == ("01/03/2024", "26/02/2024")
    with get_engine(db).connect() as conn:
        (flux,) = list(flux_rows(conn, db, "055", Week.parse("2024-W09", date(2024, 6, 1))))
    assert dict(zip(FLUX_COLUMNS, flux, strict=True))["DATE_ORIENTATION"] == "26/02/2024"


def test_a_stock_persons_events_of_one_day_do_not_depend_on_their_arrival(db, tmp_path):
    """Two stock persons, each with a PPAE and a CER signed the same day, recorded in the two orders: the same
    TYPE_CONTRAT and STRUCTURE_REFERENTE for both (the rules' order of one day's events: by content)."""
    path = write_flux(tmp_path, [_foyer("S"), _foyer("T")], type_flux="M", day=STOCK_DAY)
    assert ingest(db, path, STOCK_DAY, initial_stock=True).status == "applied"
    with session_scope(db) as s:
        ids = {name: s.scalar(select(Person.id).where(Person.nom == f"NOM{WHO[name]}")) for name in "ST"}
    day = date(2024, 3, 1)
    for name, kinds in (("S", ("PPAE", "CER")), ("T", ("CER", "PPAE"))):
        for kind in kinds:
            record(db, ids[name], type="contrat", date=day, contrat=kind)
        for structure in ("CCAS", "MDS") if name == "S" else ("MDS", "CCAS"):
            record(db, ids[name], type="referent", date=day, structure=structure)
    rows = _file(db, date(2024, 3, 3))
    assert _pick(rows["S"], "STOCK", "TYPE_CONTRAT", "DATE_CER", "STRUCTURE_REFERENTE") == _pick(
        rows["T"], "STOCK", "TYPE_CONTRAT", "DATE_CER", "STRUCTURE_REFERENTE"
    )
    assert rows["S"]["DATE_CER"] == "01/03/2024"
