"""Missed RDVs, orientation and accompaniment apart (issue #25, item 6), on SQLite and PostgreSQL.

The `absents-rdv` table counts the orientation RDV (from the episode) and the accompaniment RDVs (from the
events: the episode keeps only the first one held) separately; the person-level list gives every RDV of
either kind missed or excused in a period, with its date, structure, excused or not, and the day the person
was seen at an RDV since, so that a sanction file (décret du 30 mai 2025) can be checked. Nothing automatic.

Five persons enter on 03/03/2025 (one file), all oriented on 05/03/2025:
  A  orientation RDV 04/03 absent (structure "CD Nord"); accompaniment 10/03 absent, 17/03 present;
  B  accompaniment 12/03 absent, corrected (a superseding event) to present: not absent, not listed;
  C  accompaniment 14/03 excused;
  D  orientation RDV 04/03 present; accompaniment 20/03 absent, nothing after;
  E  accompaniment 25/03 cancelled (annule); 02/04 absent (after March).
"""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from sqlalchemy import func, select

from app.db import get_engine, session_scope
from app.models import AccessRecord, Person
from app.orientation.episodes import refresh_pending
from app.pilotage.absences import missed_rdvs
from app.pilotage.extract import rows as extract_rows
from app.pilotage.tables import Period, compute
from tests.support.cli import run_cli
from tests.support.factories import ingest
from tests.support.fluxbuilder import foyer, write_flux
from tests.support.pilotage_scene import record, scene_person

T0 = date(2025, 3, 3)
ORIENTED_ON = date(2025, 3, 5)
MARCH = Period.parse("2025-03", None, None)


def d(day: int, month: int = 3) -> date:
    return date(2025, month, day)


@pytest.fixture
def people(db, tmp_path):
    foyers = [foyer(scene_person(n), matricule=f"000000{i}") for i, n in enumerate("ABCDE", start=1)]
    assert ingest(db, write_flux(tmp_path, foyers, day=T0), received_on=T0).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        ids = {p.nom[-1]: p.id for p in s.scalars(select(Person))}

    def rdv(name: str, kind: str, on: date, presence: str, ext: str, **more) -> None:
        record(db, ids[name], type=kind, date=on, presence=presence, external_id=ext, **more)

    for name in "ABCDE":
        record(db, ids[name], type="orientation", date=ORIENTED_ON, organisme="DEPARTEMENT", type_parcours="social",
               external_id=f"o-{name}")  # fmt: skip
    rdv("A", "rdv_orientation", d(4), "absent", "ro-A", structure="CD Nord")
    rdv("A", "rdv_accompagnement", d(10), "absent", "ra-A-1", structure="CCAS Verdun")
    rdv("A", "rdv_accompagnement", d(17), "present", "ra-A-2", structure="CCAS Verdun")
    rdv("B", "rdv_accompagnement", d(12), "absent", "ra-B")
    rdv("B", "rdv_accompagnement", d(12), "present", "ra-B-fix", supersedes="ra-B")
    rdv("C", "rdv_accompagnement", d(14), "excuse", "ra-C", structure="Mission locale")
    rdv("D", "rdv_orientation", d(4), "present", "ro-D")
    rdv("D", "rdv_accompagnement", d(20), "absent", "ra-D", structure="CCAS Bar")
    rdv("E", "rdv_accompagnement", d(25), "annule", "ra-E-1")
    rdv("E", "rdv_accompagnement", d(2, 4), "absent", "ra-E-2")
    refresh_pending(get_engine(db))
    return ids


KEYS = (
    "orientes",
    "avec_rdv_orientation",
    "absents_rdv_orientation",
    "absents_non_revus_rdv_orientation",
    "excuses_rdv_orientation",
    "avec_rdv_accompagnement",
    "absents_rdv_accompagnement",
    "absents_non_revus_rdv_accompagnement",
    "excuses_rdv_accompagnement",
    "taux_absence_rdv_accompagnement",
)


def _figures(db, as_of: date) -> tuple[object, ...]:
    with get_engine(db).connect() as conn:
        t = compute(conn, "absents-rdv", ["055"], Period.days(T0, T0), as_of)
    return tuple(t.value(k) for k in KEYS)


def test_the_table_counts_each_kind_apart(db, people):
    # orientation: A and D had one (2); A missed it and was never at an orientation RDV again.
    # accompaniment on 31/03: A, B (corrected to present), C (excused), D have one, E's only one is cancelled (4);
    # A and D missed one (2), D never came since (1, A came on 17/03); C excused (1); 2/4.
    assert _figures(db, d(31)) == (5, 2, 1, 1, 0, 4, 2, 1, 1, 0.5)
    # 30/04: E's absence of 02/04 is known: 5 with one, 3 absent, 2 never seen since, 3/5
    assert _figures(db, d(30, 4)) == (5, 2, 1, 1, 0, 5, 3, 2, 1, 0.6)
    # 15/03: D's RDV of 20/03 and A's presence of 17/03 are not known yet: A, B, C have one; A absent, not seen
    assert _figures(db, d(15)) == (5, 2, 1, 1, 0, 3, 1, 1, 1, round(1 / 3, 4))
    # 04/03: nobody is oriented yet (05/03): nothing counts, whatever the RDVs
    assert _figures(db, d(4)) == (0, 0, 0, 0, 0, 0, 0, 0, 0, None)


def test_the_extract_reads_the_accompaniment_like_the_table(db, people):
    from app.pilotage.extract import pseudonym

    names = {pseudonym(db.extract_key_bytes, pid): name for name, pid in people.items()}
    with get_engine(db).connect() as conn:
        lines = list(extract_rows(conn, db.extract_key_bytes, ["055"], Period.days(T0, T0), d(31)))
    got = {
        names[x["id_pseudo"]]: (x["absent_rdv_accompagnement"], x["absent_rdv_accompagnement_non_revu"],
                                x["excuse_rdv_accompagnement"], x["absent_rdv_orientation"])
        for x in lines
    }  # fmt: skip
    assert got == {
        "A": (True, False, False, True),
        "B": (False, False, False, False),
        "C": (False, False, True, False),
        "D": (True, True, False, False),
        "E": (False, False, False, False),
    }


def _listed(db, as_of: date, period: Period = MARCH) -> list[tuple[object, ...]]:
    with get_engine(db).connect() as conn:
        items = missed_rdvs(conn, ["055"], period, as_of)
    return [(m.nom, m.kind, m.on, m.structure, m.excused, m.seen_again_on) for m in items]


def test_the_person_list_gives_each_missed_rdv_with_its_date(db, people):
    assert _listed(db, d(31)) == [
        # A: seen again on 17/03 (the accompaniment RDV), for both misses
        ("NOMA", "rdv_orientation", d(4), "CD Nord", False, d(17)),
        ("NOMA", "rdv_accompagnement", d(10), "CCAS Verdun", False, d(17)),
        # B's absence was corrected to present: not listed
        ("NOMC", "rdv_accompagnement", d(14), "Mission locale", True, None),
        ("NOMD", "rdv_accompagnement", d(20), "CCAS Bar", False, None),
        # E: the cancelled RDV is no miss; the one of 02/04 is not in March
    ]
    # as of 15/03: D's RDV and A's presence of 17/03 are not known yet
    assert _listed(db, d(15)) == [
        ("NOMA", "rdv_orientation", d(4), "CD Nord", False, None),
        ("NOMA", "rdv_accompagnement", d(10), "CCAS Verdun", False, None),
        ("NOMC", "rdv_accompagnement", d(14), "Mission locale", True, None),
    ]
    assert _listed(db, d(30, 4), Period.parse("2025-04", None, None)) == [
        ("NOME", "rdv_accompagnement", d(2, 4), None, False, None)
    ]
    with get_engine(db).connect() as conn:
        assert missed_rdvs(conn, ["054"], MARCH, d(31)) == []  # another département's staff see nobody


def _accesses(db) -> int:
    with session_scope(db) as s:
        return s.scalar(
            select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "pilotage.absents_rdv")
        )


def test_the_list_over_http_and_cli_is_audited(client, db, people, make_api_key, monkeypatch):
    h = {"X-API-Key": make_api_key(["persons:read"])}
    params = {"periode": "2025-03", "as_of": "2025-03-31"}
    r = client.get("/api/v1/pilotage/absents-rdv/personnes", headers=h, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 4
    assert body["items"][2] == {
        "person_id": people["C"], "departement": "055", "nom": "NOMC", "prenom": "PRENOMC",
        "date_naissance": "1960-03-10", "type_rdv": "accompagnement", "date_rdv": "2025-03-14",
        "structure": "Mission locale", "excuse": True, "revu_le": None,
    }  # fmt: skip
    assert _accesses(db) == 3  # one per person listed: A, C, D
    r = client.get("/api/v1/pilotage/absents-rdv/personnes", headers=h, params={**params, "format": "csv"})
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
    assert lines[0][5:] == ["Type de rendez-vous", "Date du rendez-vous", "Structure", "Excusé", "Revu depuis le"]
    assert lines[1][5:] == ["Rendez-vous d'orientation", "04/03/2025", "CD Nord", "non", "17/03/2025"]
    assert lines[3][5:] == ["Rendez-vous d'accompagnement", "14/03/2025", "Mission locale", "oui", "non revu"]
    # personal data: pilotage:read alone is not enough
    other = {"X-API-Key": make_api_key(["pilotage:read"])}
    assert client.get("/api/v1/pilotage/absents-rdv/personnes", headers=other, params=params).status_code == 403
    before = _accesses(db)
    result = run_cli(db, monkeypatch, "pilotage", "absences", "--periode", "2025-03", "--as-of", "2025-03-31",
                     "--format", "csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Rendez-vous d'accompagnement;20/03/2025;CCAS Bar;non;non revu" in result.output
    assert _accesses(db) == before + 3


def test_each_episode_counts_its_own_accompaniment_rdvs(db, tmp_path):
    """P enters 01/03/2024, oriented 10/03, absent at the accompaniment RDV of 20/03; radiated 02/04, back
    03/05 (a second episode), oriented 15/05, present at the accompaniment RDV of 20/05. The presence of 20/05
    belongs to the second episode: the first one's absent is never seen again *in its episode*; the person
    list, which is by RDV date and not by episode, says P was seen again on 20/05."""
    entry, radiated, back = date(2024, 3, 1), date(2024, 4, 2), date(2024, 5, 3)
    files = [(entry, {}), (radiated, {"etat": "6", "closure": ("RFD", radiated)}), (back, {})]
    for n, (day, kw) in enumerate(files):
        where = tmp_path / str(n)
        where.mkdir()
        f = foyer(scene_person("C"), matricule="0000003", **kw)
        assert ingest(db, write_flux(where, [f], type_flux="I", day=day), day).status == "applied"
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        pid = s.scalar(select(Person.id))
    for n, on in enumerate((date(2024, 3, 10), date(2024, 5, 15))):
        record(db, pid, type="orientation", date=on, organisme="DEPARTEMENT", type_parcours="social",
               external_id=f"o-{n}")  # fmt: skip
    record(db, pid, type="rdv_accompagnement", date=date(2024, 3, 20), presence="absent", external_id="a-1")
    record(db, pid, type="rdv_accompagnement", date=date(2024, 5, 20), presence="present", external_id="a-2")
    refresh_pending(get_engine(db))
    keys = ("orientes", "avec_rdv_accompagnement", "absents_rdv_accompagnement", "absents_non_revus_rdv_accompagnement")
    with get_engine(db).connect() as conn:
        first = compute(conn, "absents-rdv", ["055"], Period.days(entry, entry), date(2024, 5, 31))
        second = compute(conn, "absents-rdv", ["055"], Period.days(back, back), date(2024, 5, 31))
        listed = missed_rdvs(conn, ["055"], Period.parse("2024-03", None, None), date(2024, 5, 31))
    assert tuple(first.value(k) for k in keys) == (1, 1, 1, 1)
    assert tuple(second.value(k) for k in keys) == (1, 1, 0, 0)
    assert [(m.on, m.seen_again_on) for m in listed] == [(date(2024, 3, 20), date(2024, 5, 20))]
