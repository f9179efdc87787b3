"""The orientés who did not come to the orientation RDV (issue #22, item 5), on SQLite and PostgreSQL.

Seed 001 ~7508 (annex 4 emploi): "Préciser également le nombre de BRSA qui sont orientés mais qui ne se
présentent pas au rendez-vous d'orientation si vous le souhaitez." SPEC §3, third round: counted when at least
one orientation RDV of the episode was missed (`absent`), the excused apart, and those never seen at a later
orientation RDV given too. The table, the indicator and the extract read it the same way.

Five persons enter on 01/03/2024 (one file):
  A  oriented 04/03; absent at the RDV of 08/03, present at the one of 12/03;
  B  oriented 04/03; absent at the RDV of 08/03, nothing after;
  C  oriented 04/03; excused from the RDV of 08/03;
  D  never oriented; absent at the RDV of 08/03 (not "orienté": not counted);
  E  oriented 04/03; the RDV of 08/03 cancelled by the service, then a planned one on 20/03.
"""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from app.db import get_engine, session_scope
from app.models import Person
from app.orientation.episodes import refresh_pending
from app.pilotage.extract import rows as extract_rows
from app.pilotage.indicator import orientation_indicator
from app.pilotage.tables import Period, compute
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, write_flux
from tests.support.pilotage_scene import record, scene_person

T0 = date(2024, 3, 1)
RDV = {  # person: [(day of March, presence)]
    "A": [(8, "absent"), (12, "present")],
    "B": [(8, "absent")],
    "C": [(8, "excuse")],
    "D": [(8, "absent")],
    "E": [(8, "annule"), (20, "prevu")],
}


@pytest.fixture
def absents(db, tmp_path):
    foyers = [foyer(scene_person(n), matricule=f"000000{i}") for i, n in enumerate("ABCDE", start=1)]
    assert ingest(db, write_flux(tmp_path, foyers, day=T0), received_on=T0).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        ids = {p.nom[-1]: p.id for p in s.scalars(select(Person))}
    for name, rdvs in RDV.items():
        for day, presence in rdvs:
            record(db, ids[name], type="rdv_orientation", date=date(2024, 3, day), presence=presence,
                   external_id=f"r-{name}-{day}")  # fmt: skip
        if name != "D":
            record(db, ids[name], type="orientation", date=date(2024, 3, 4), organisme="DEPARTEMENT",
                   type_parcours="social", external_id=f"o-{name}")  # fmt: skip
    return ids


def _figures(db, as_of: date) -> dict[str, object]:
    with get_engine(db).connect() as conn:
        t = compute(conn, "absents-rdv", ["055"], Period.days(T0, T0), as_of)
    keys = ("orientes", "avec_rdv_orientation", "absents_rdv_orientation", "absents_non_revus_rdv_orientation",
            "excuses_rdv_orientation", "taux_absence_rdv")  # fmt: skip
    return {k: t.value(k) for k in keys}


def _extract(db, ids, as_of: date) -> dict[str, tuple[bool, bool, bool]]:
    from app.pilotage.extract import pseudonym

    names = {pseudonym(db.extract_key_bytes, pid): name for name, pid in ids.items()}
    with get_engine(db).connect() as conn:
        lines = list(extract_rows(conn, db.extract_key_bytes, ["055"], Period.days(T0, T0), as_of))
    return {
        names[x["id_pseudo"]]: (x["absent_rdv_orientation"], x["absent_rdv_orientation_non_revu"],
                                x["excuse_rdv_orientation"])
        for x in lines
    }  # fmt: skip


def test_absent_then_present_counts_absent_not_never_seen_and_the_excused_apart(db, absents):
    assert _figures(db, date(2024, 3, 31)) == {
        "orientes": 4,  # A, B, C, E (D is not oriented)
        "avec_rdv_orientation": 4,  # E's planned RDV of 20/03 is an RDV; the cancelled one is not
        "absents_rdv_orientation": 2,  # A and B: each missed one
        "absents_non_revus_rdv_orientation": 1,  # B: A came to the next one
        "excuses_rdv_orientation": 1,  # C, not absent
        "taux_absence_rdv": 0.5,
    }
    assert _extract(db, absents, date(2024, 3, 31)) == {
        "A": (True, False, False),
        "B": (True, True, False),
        "C": (False, False, True),
        "D": (False, False, False),
        "E": (False, False, False),
    }
    with get_engine(db).connect() as conn:
        indicator = orientation_indicator(conn, ["055"], T0, T0, date(2024, 3, 31))
    assert indicator["absents_rdv_orientation"] == 2


def test_as_of_before_the_second_rdv_the_absent_was_never_seen(db, absents):
    figures = _figures(db, date(2024, 3, 10))
    assert (figures["absents_rdv_orientation"], figures["absents_non_revus_rdv_orientation"]) == (2, 2)
    assert figures["avec_rdv_orientation"] == 3  # E's RDV of 20/03 is not known yet
    assert _extract(db, absents, date(2024, 3, 10))["A"] == (True, True, False)
    before = _figures(db, date(2024, 3, 7))
    assert (before["absents_rdv_orientation"], before["excuses_rdv_orientation"]) == (0, 0)
