"""The hand-computable département of the pilotage tests: four persons enter the same day D (one file), born
on known days, with orientation events and a France Travail snapshot (tests/pilotage/test_pilotage_tables.py
says who is who)."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from app.clock import today
from app.db import get_engine, session_scope
from app.models import FtSnapshot, Person
from app.models.base import utcnow
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from app.pilotage.tables import Period
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, person, write_flux

NIRS = {"A": "1900155545123", "B": "2990655545124", "C": "2600355545125", "D": "1850255545126", "E": "1950355545127"}
BORN = {"A": date(1990, 1, 15), "B": date(1999, 6, 1), "C": date(1960, 3, 10), "D": date(1985, 2, 2),
        "E": date(1995, 3, 3)}  # fmt: skip
SEX = {"A": "1", "B": "2", "C": "2", "D": "1", "E": "1"}


def scene_person(name: str):
    return person(NIRS[name], nom=f"NOM{name}", prenom=f"PRENOM{name}", dtnai=BORN[name], sexe=SEX[name])


def record(db, pid: int, **body) -> None:
    with session_scope(db, write=True) as s:
        record_event(s, db, s.get(Person, pid), EventIn.model_validate(body), recorded_by="test")


def build_scene(db, tmp_path):
    """Four persons entering on D (one file), their events and a France Travail snapshot; see
    tests/pilotage/test_pilotage_tables.py for the hand-computed figures."""
    d = today(db) - timedelta(days=50)
    foyers = [foyer(scene_person(n), matricule=f"000000{i}") for i, n in enumerate("ABCD", start=1)]
    assert ingest(db, write_flux(tmp_path, foyers, day=d), received_on=d).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        ids = {p.nom[-1]: p.id for p in s.scalars(select(Person))}
    record(db, ids["A"], type="rdv_orientation", date=d + timedelta(days=8), presence="present", external_id="r-a")
    record(db, ids["A"], type="orientation", date=d + timedelta(days=10), organisme="FRANCE_TRAVAIL",
           type_parcours="professionnel", external_id="o-a")  # fmt: skip
    record(db, ids["B"], type="rdv_orientation", date=d + timedelta(days=5), presence="absent", external_id="r-b")
    record(db, ids["B"], type="orientation", date=d + timedelta(days=20), organisme="DEPARTEMENT",
           type_parcours="social", external_id="o-b")  # fmt: skip
    record(db, ids["D"], type="orientation", date=d + timedelta(days=40), organisme="FRANCE_TRAVAIL",
           type_parcours="professionnel", external_id="o-d")  # fmt: skip
    with session_scope(db, write=True) as s:
        fetched = utcnow() - timedelta(days=38)  # D+12
        s.add(FtSnapshot(person_id=ids["A"], departement_code="055", kind="statut", fetched_at=fetched,
                         data={"statutDE": "Inscrit"}, fingerprint="a"))  # fmt: skip
    return {"d": d, "ids": ids, "period": Period.parse(None, d, d + timedelta(days=1)), "as_of": d + timedelta(days=30)}
