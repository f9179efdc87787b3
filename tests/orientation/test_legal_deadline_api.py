"""The legal deadline of CASF art. D.262-65-2 (décret n° 2024-1244: six weeks from the reception of the
information on the opening or the transfer of the right) through the database and the API: stored on the
episodes, explained, on the worklist (sort, flags, filter), in the pilotage table `delai-legal`, its CSV and
the dashboard. Hand-computed; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

from sqlalchemy import func, select, update

from app.clock import today
from app.db import get_engine, session_scope
from app.models import AccessRecord, EntryEpisode, Person
from app.orientation.episodes import refresh_pending
from app.pilotage.dashboard import build, render
from app.pilotage.extract import rows as extract_rows
from app.pilotage.tables import Period, compute, to_csv
from tests.support.factories import ingest
from tests.support.fluxbuilder import IDENTIFICATION_END, foyer, person, transfer_blocks, write_flux
from tests.support.pilotage_scene import NIRS, record, scene_person


def _ingest(db, tmp_path, day: date, foyers, name: str, cedant: tuple[str, str, str, str] | None = None) -> None:
    path = write_flux(tmp_path, foyers, day=day, name=name)
    if cedant:
        raw = path.read_bytes()
        assert IDENTIFICATION_END.encode() in raw
        path.write_bytes(raw.replace(IDENTIFICATION_END.encode(), transfer_blocks(cedant=cedant).encode()))
    assert ingest(db, path, received_on=day).status == "applied"


def _ids(db) -> dict[str, int]:
    with session_scope(db) as s:
        return {p.nom[-1]: p.id for p in s.scalars(select(Person))}


def _episode(db, pid: int) -> EntryEpisode:
    with session_scope(db) as s:
        (ep,) = s.scalars(select(EntryEpisode).where(EntryEpisode.person_id == pid)).all()
        s.expunge(ep)
        return ep


def _march_scene(db, tmp_path) -> dict[str, int]:
    """Files received on 2025-03-03 (T0 of everyone): A, C, D opening (unknown before), B transferred in
    (OrganismeCedant, DDARRMUT 2025-02-24, in a file of its own), E back under the threshold (its right open
    but not soumis in a file of 2025-01-10)."""
    jan, t0 = date(2025, 1, 10), date(2025, 3, 3)
    _ingest(db, tmp_path, jan, [foyer(person(NIRS["E"], nom="NOME", sdd=False), matricule="0000005")], "jan.xml")
    foyers = [foyer(scene_person(n), matricule=f"000000{i}") for i, n in ((1, "A"), (3, "C"), (4, "D"))]
    foyers.append(foyer(person(NIRS["E"], nom="NOME"), matricule="0000005"))
    _ingest(db, tmp_path, t0, foyers, "mars.xml")
    _ingest(db, tmp_path, t0, [foyer(scene_person("B"), matricule="0000002")], "mut.xml",
            cedant=("CAF", "541", "0009999", "2025-02-24"))  # fmt: skip
    refresh_pending(get_engine(db))
    return _ids(db)


def test_stored_explained_and_the_six_weeks_boundary(client, db, make_api_key, tmp_path):
    ids = _march_scene(db, tmp_path)
    deadline = date(2025, 4, 14)  # 03/03 + 42 days: 28 days to 31/03, 14 more
    a, b, e = _episode(db, ids["A"]), _episode(db, ids["B"]), _episode(db, ids["E"])
    assert (a.t0, a.legal_clock, a.legal_deadline) == (date(2025, 3, 3), "ouverture_droit", deadline)
    assert (b.legal_clock, b.legal_deadline) == ("transfert_droit", deadline)
    assert "CAF 541" in (b.legal_clock_reason or "") and "2025-02-24" in (b.legal_clock_reason or "")
    assert (e.t0, e.legal_clock, e.legal_deadline) == (date(2025, 3, 3), None, None)
    assert "500 €" in (e.legal_clock_reason or "") and "2025-01-10" in (e.legal_clock_reason or "")

    # the Département orients A on 13/04 (the 42nd day: within), B on 14/04 (the legal deadline: not within)
    record(db, ids["A"], type="orientation", date=date(2025, 4, 13), organisme="DEPARTEMENT", type_parcours="social")
    record(db, ids["B"], type="orientation", date=deadline, organisme="DEPARTEMENT", type_parcours="social")
    h = {"X-API-Key": make_api_key(["persons:read"])}
    seen = {}
    for name in "ABE":
        r = client.get(f"/api/v1/persons/{ids[name]}/episodes?as_of=2025-05-01", headers=h)
        assert r.status_code == 200, r.text
        (seen[name],) = r.json()["episodes"]
    assert (seen["A"]["legal_clock"], seen["A"]["legal_deadline"]) == ("ouverture_droit", "2025-04-14")
    assert seen["A"]["oriented_within_six_weeks"] is True
    assert (seen["B"]["legal_clock"], seen["B"]["oriented_within_six_weeks"]) == ("transfert_droit", False)
    assert seen["B"]["legal_clock_reason"] == b.legal_clock_reason
    assert seen["E"]["legal_clock"] is None and seen["E"]["legal_deadline"] is None
    assert seen["E"]["legal_clock_reason"].startswith("no legal clock")
    assert seen["E"]["oriented_within_six_weeks"] is None
    # seen before the orientation: waiting, nothing decided yet
    early = client.get(f"/api/v1/persons/{ids['A']}/episodes?as_of=2025-04-01", headers=h).json()["episodes"][0]
    assert (early["outcome"], early["oriented_within_six_weeks"]) == ("en_attente", None)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["WorklistItem"]["properties"]
    assert {"legal_clock", "legal_deadline", "legal_deadline_status", "legal_deadline_alert"} <= set(schema)


def test_the_decrees_example_stored(db, tmp_path):
    """Reception on 01/03 -> France Travail may orient from 12/04."""
    _ingest(db, tmp_path, date(2025, 3, 1), [foyer(person())], "a.xml")
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        (ep,) = s.scalars(select(EntryEpisode)).all()
        assert (ep.t0, ep.legal_clock, ep.legal_deadline) == (date(2025, 3, 1), "ouverture_droit", date(2025, 4, 12))


def test_worklist_sorted_flagged_and_filtered_by_legal_deadline(client, db, make_api_key, tmp_path):
    day = today(db)
    t = {"P": day - timedelta(days=45), "N": day - timedelta(days=38), "L": day - timedelta(days=20),
         "X": day - timedelta(days=50)}  # fmt: skip
    # X: its right open above the threshold long before (no clock); P past, N near, L later
    _ingest(db, tmp_path, day - timedelta(days=110), [foyer(person(NIRS["E"], nom="NOMX", sdd=False),
                                                             matricule="0000009")], "x0.xml")  # fmt: skip
    nirs = {"P": NIRS["A"], "N": NIRS["B"], "L": NIRS["C"], "X": NIRS["E"]}
    for i, name in enumerate("PNLX", start=1):
        _ingest(db, tmp_path, t[name], [foyer(person(nirs[name], nom=f"NOM{name}"),
                                              matricule="0000009" if name == "X" else f"000000{i}")],
                f"{name}.xml")  # fmt: skip
    refresh_pending(get_engine(db))
    ids = _ids(db)
    h = {"X-API-Key": make_api_key(["persons:read"])}

    r = client.get("/api/v1/worklist", headers=h)
    assert r.status_code == 200, r.text
    items = {i["person_id"]: i for i in r.json()["items"]}
    assert [i["person_id"] for i in r.json()["items"]] == [ids[n] for n in "XPNL"]  # by T0
    p, n, l_, x = (items[ids[k]] for k in "PNLX")
    assert p["legal_deadline"] == (t["P"] + timedelta(days=42)).isoformat()
    assert (p["legal_clock"], p["legal_deadline_status"]) == ("ouverture_droit", "depassee")
    assert p["legal_deadline_alert"] == (
        f"France Travail peut orienter depuis le {(t['P'] + timedelta(days=42)).strftime('%d/%m/%Y')}"
    )
    assert (n["legal_deadline_status"], n["legal_deadline_alert"]) == ("proche", "échéance légale proche")
    assert (l_["legal_deadline_status"], l_["legal_deadline_alert"]) == (None, None)
    assert (x["legal_clock"], x["legal_deadline"], x["legal_deadline_status"]) == (None, None, None)

    by_legal = client.get("/api/v1/worklist?sort=legal_deadline", headers=h).json()
    assert [i["person_id"] for i in by_legal["items"]] == [ids[k] for k in "PNLX"]  # no clock last
    past = client.get("/api/v1/worklist?legal_deadline=past", headers=h).json()
    assert (past["total"], [i["person_id"] for i in past["items"]]) == (1, [ids["P"]])
    near = client.get("/api/v1/worklist?legal_deadline=near", headers=h).json()
    assert [i["person_id"] for i in near["items"]] == [ids["N"]]
    both = client.get("/api/v1/worklist?legal_deadline=past_or_near&sort=legal_deadline", headers=h).json()
    assert [i["person_id"] for i in both["items"]] == [ids["P"], ids["N"]]
    for bad in ("sort=nom", "legal_deadline=soon", "format=xlsx"):
        assert client.get(f"/api/v1/worklist?{bad}", headers=h).status_code == 422, bad

    # the CSV: every person the filters keep (not a page), French headers, jj/mm/aaaa, oui/non, audited
    with session_scope(db) as s:
        audited = s.scalar(select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "worklist.read"))
    r = client.get("/api/v1/worklist?format=csv&sort=legal_deadline&limit=1", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
    lines = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
    assert [int(line["id_personne"]) for line in lines] == [ids[k] for k in "PNLX"]
    first = lines[0]
    deadline = (t["P"] + timedelta(days=42)).strftime("%d/%m/%Y")
    assert (first["horloge_legale"], first["echeance_legale"], first["hors_delai_15_jours"]) == (
        "ouverture_droit", deadline, "oui")  # fmt: skip
    assert first["alerte_echeance_legale"] == f"France Travail peut orienter depuis le {deadline}"
    assert lines[3]["echeance_legale"] == "" and lines[0]["nom"] == "NOMP"
    with session_scope(db) as s:
        after = s.scalar(select(func.count()).select_from(AccessRecord).where(AccessRecord.action == "worklist.read"))
    assert after == audited + 4  # each person written to the CSV is a read


def test_worklist_warning_days_is_a_setting(client, db, make_api_key, tmp_path, monkeypatch):
    """N's legal deadline is 4 days ahead: near with the default 7 days, not with 3."""
    from app.api.orientation import legal_alert

    day = today(db)
    assert legal_alert(day + timedelta(days=4), day, 7) == ("proche", "échéance légale proche")
    assert legal_alert(day + timedelta(days=4), day, 3) == (None, None)
    assert legal_alert(day, day, 0)[0] == "depassee"


def _set_france_travail(db, pid: int, on: date) -> None:
    """An orientation France Travail decided, as the FTORIENT helper's episodes store it (oriented_by
    france_travail), written directly on the stored row."""
    with session_scope(db, write=True) as s:
        s.execute(
            update(EntryEpisode)
            .where(EntryEpisode.person_id == pid)
            .values(outcome="oriente", end_on=on, open_until=on, oriented_by="france_travail", delay_days=None)
        )


def test_delai_legal_table_csv_and_dashboard_as_of(db, tmp_path):
    """March 2025, T0 03/03, legal deadline 14/04: A oriented by the Département on 13/04 (within), B on 14/04
    (after), C by France Travail on 20/04, D waiting; E without a legal clock."""
    ids = _march_scene(db, tmp_path)
    record(db, ids["A"], type="orientation", date=date(2025, 4, 13), organisme="DEPARTEMENT", type_parcours="social")
    record(db, ids["B"], type="orientation", date=date(2025, 4, 14), organisme="DEPARTEMENT", type_parcours="social")
    _set_france_travail(db, ids["C"], date(2025, 4, 20))
    march = Period.parse("2025-03")
    keys = ("nouveaux_entrants_delai_legal", "orientes_departement_6_semaines", "taux_orientes_departement_6_semaines",
            "orientes_departement_apres_6_semaines", "orientes_france_travail", "en_attente_dans_les_6_semaines",
            "en_attente_au_dela_6_semaines", "sortis_avant_orientation")  # fmt: skip

    def figures(as_of: date):
        with get_engine(db).connect() as conn:
            t = compute(conn, "delai-legal", ["055"], march, as_of)
        return [t.value(k) for k in keys], t.value("nouveaux_entrants_hors_delai_legal"), t

    assert figures(date(2025, 5, 1))[:2] == ([4, 1, 0.25, 1, 1, 0, 1, 0], 1)
    # as of 15/04: France Travail's orientation (20/04) is not known yet: C and D wait past the six weeks
    assert figures(date(2025, 4, 15))[0] == [4, 1, 0.25, 1, 0, 0, 2, 0]
    # as of 10/04: nothing decided, the six weeks not over
    assert figures(date(2025, 4, 10))[0] == [4, 0, 0.0, 0, 0, 4, 0, 0]
    # by a breakdown: A and B are in the Département's "social" parcours as of 01/05
    t = figures(date(2025, 5, 1))[2]
    assert t.value("orientes_departement_6_semaines", "type_parcours", "social") == 1
    rows = list(csv.DictReader(io.StringIO(to_csv(t).decode("utf-8-sig")), delimiter=";"))
    rate = next(
        r for r in rows if r["indicateur"] == "taux_orientes_departement_6_semaines" and r["dimension"] == "ensemble"
    )
    assert (rate["valeur"], rate["table"]) == ("25,00 %", "delai-legal")  # issue #26: a percentage, with its terms
    assert (rate["numerateur"], rate["denominateur"]) == ("1", "4")
    assert rate["libelle_indicateur"] == "Part orientée par le Département dans les six semaines"

    with get_engine(db).connect() as conn:
        lines = {r["t0"] + r["issue"] + str(r["delai_jours"]): r for r in extract_rows(conn, b"k" * 32, ["055"], march,
                                                                                        date(2025, 5, 1))}  # fmt: skip
        board = build(conn, ["055"], march, date(2025, 5, 1), 1.0)
    a = lines["2025-03-03oriente41"]  # A, oriented on 13/04: 41 days
    assert (a["horloge_legale"], a["echeance_legale"], a["oriente_dans_les_six_semaines"]) == (
        "ouverture_droit", "2025-04-14", True)  # fmt: skip
    assert lines["2025-03-03oriente42"]["horloge_legale"] == "transfert_droit"  # B, on 14/04
    assert lines["2025-03-03oriente42"]["oriente_dans_les_six_semaines"] is False
    assert "Délai légal de six semaines" in render(board, ["055"], None, 1.0)
    headline = dict(board.headline)
    assert headline["Orientés par le Département dans les six semaines (délai légal)"] == "25,0 %"
    assert (headline["Orientés par France Travail"], headline["En attente au-delà des six semaines"]) == ("1", "1")
    assert headline["Nouveaux entrants"] == "5"  # the convention's figures unchanged beside them
    (chart,) = [c for c in board.charts if c.key == "delai-legal"]
    shown = dict((row[0], row[1]) for row in chart.rows)
    assert shown["Orientés par le Département dans les six semaines"] == "1"
    assert shown["Orientés par France Travail"] == "1"
    assert shown["En attente au-delà des six semaines (France Travail peut orienter)"] == "1"
    assert shown["Part orientée par le Département dans les six semaines"] == "25,0 %"


def test_delai_legal_through_the_api_and_the_cli(db, tmp_path, client, make_api_key, monkeypatch):
    """The same CSV bytes from the API and the CLI; the table is listed."""
    from tests.support.cli import run_cli

    ids = _march_scene(db, tmp_path)
    record(db, ids["A"], type="orientation", date=date(2025, 4, 13), organisme="DEPARTEMENT", type_parcours="social")
    h = {"X-API-Key": make_api_key(["pilotage:read"])}
    assert "delai-legal" in {t["nom"] for t in client.get("/api/v1/pilotage/tables", headers=h).json()["tables"]}
    url = "/api/v1/pilotage/tables/delai-legal?periode=2025-03&as_of=2025-05-01"
    as_json = client.get(url, headers=h).json()
    values = {(f["indicateur"], f["dimension"]): f["valeur"] for f in as_json["figures"]}
    assert values[("nouveaux_entrants_delai_legal", "ensemble")] == 4
    assert values[("orientes_departement_6_semaines", "ensemble")] == 1
    assert values[("en_attente_au_dela_6_semaines", "ensemble")] == 3  # B, C, D: no orientation by 01/05
    assert values[("nouveaux_entrants_hors_delai_legal", "ensemble")] == 1
    r = client.get(url + "&format=csv", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    cli = run_cli(db, monkeypatch, "pilotage", "table", "delai-legal", "--periode", "2025-03", "--as-of", "2025-05-01",
                  "--format", "csv")  # fmt: skip
    assert cli.exit_code == 0 and cli.stdout_bytes == r.content
