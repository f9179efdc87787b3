"""A silent CAF/MSA is an alert (issue #26): working days since the last beneficiary file, per département and
organisme, up to as_of; the check over HTTP, in the CLI (exit 1), in `flux list` and on the dashboard.

Calendar of December 2026, by hand: Tue 01, Wed 02, Thu 03, Fri 04, Sat 05, Sun 06, Mon 07, Tue 08. The issue's
example: last CAF file on Wed 02/12, as of Sun 06/12: the working days since are Thu 03 and Fri 04 (2; the
weekend does not count): not silent with the default threshold (3). As of Mon 07/12: 3 (not more than 3). As of
Tue 08/12: 4, silent: "Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés)".
"""

from __future__ import annotations

import json
from datetime import date
from itertools import count

import pytest

from app.admin.departements import ensure_departement
from app.db import get_engine, session_scope
from app.flux.freshness import freshness, overall, working_days_between
from app.models import FluxFile
from app.pilotage.period import Period
from app.pilotage.tables import compute
from tests.support.cli import run_cli

D = date(2026, 12, 2)  # Wednesday
_ids = count(1)


def add_file(settings, dep: str, received_on: date, fonorg: str = "CAF", status: str = "applied", nature: str = "D"):
    n = next(_ids)
    with session_scope(settings, write=True) as s:
        ensure_departement(s, dep)
        s.add(FluxFile(departement_code=dep, filename=f"f{n}.xml", size_bytes=1, file_sha256=f"{n:064d}",
                       content_sha256=f"{n:064d}", status=status, fonorg=fonorg, numorg="551", type_flux="Q",
                       nature=nature, received_on=received_on))  # fmt: skip


def test_working_days_are_counted_by_hand():
    # the example: Thu 03 and Fri 04, the weekend not counted
    assert working_days_between(D, date(2026, 12, 6)) == 2
    assert working_days_between(D, date(2026, 12, 7)) == 3
    assert working_days_between(D, date(2026, 12, 8)) == 4
    # a weekend: Friday to Monday is one working day; a day to itself none
    assert working_days_between(date(2026, 12, 4), date(2026, 12, 7)) == 1
    assert working_days_between(D, D) == 0
    # a holiday inside the gap: Mon 09/11 to Fri 13/11/2026, Wed 11/11 (Armistice) not counted: Tue, Thu, Fri
    assert working_days_between(date(2026, 11, 9), date(2026, 11, 13), "055") == 3
    # Easter 2026: Wed 01/04 to Tue 07/04; Mon 06/04 is a holiday everywhere; Fri 03/04 (Vendredi saint) only
    # in Alsace-Moselle: 055 counts Thu 02, Fri 03, Tue 07; 057, 067, 068 Thu 02 and Tue 07
    assert working_days_between(date(2026, 4, 1), date(2026, 4, 7), "055") == 3
    for dep in ("057", "067", "068"):
        assert working_days_between(date(2026, 4, 1), date(2026, 4, 7), dep) == 2
    # 26 décembre 2025 (a Friday): a working day in 055, a holiday in 067. Wed 24 to Mon 29/12/2025, Thu 25 is
    # Christmas: 055 counts Fri 26 and Mon 29; 067 Mon 29 only
    assert working_days_between(date(2025, 12, 24), date(2025, 12, 29), "055") == 2
    assert working_days_between(date(2025, 12, 24), date(2025, 12, 29), "067") == 1
    # Martinique: Fri 22/05/2026 is the abolition of slavery there; Thu 21 to Fri 22: 1 in 055, 0 in 972
    assert working_days_between(date(2026, 5, 21), date(2026, 5, 22), "055") == 1
    assert working_days_between(date(2026, 5, 21), date(2026, 5, 22), "972") == 0


def _seed(db):
    add_file(db, "055", date(2026, 11, 20))
    add_file(db, "055", D)  # the CAF's last beneficiary file
    add_file(db, "055", date(2026, 12, 7), status="rejected")  # rejected: does not count
    add_file(db, "055", date(2026, 12, 7), nature="I")  # an instruction file: does not count
    add_file(db, "055", date(2026, 12, 4), fonorg="MSA")  # the MSA: Fri 04/12
    add_file(db, "054", date(2026, 12, 7))  # another département (not in the scope of a 055 client)


def test_freshness_per_departement_and_organisme(db):
    _seed(db)
    add_file(db, "055", date(2026, 12, 9))  # after as_of: not seen
    with session_scope(db) as s:
        ensure_departement(s, "057")  # a département no file ever came to
    with get_engine(db).connect() as conn:
        lines = freshness(conn, ["055", "057"], date(2026, 12, 8), 3)
    got = [(f.departement, f.organisme, f.last_received_on, f.working_days, f.status) for f in lines]
    # CAF: Thu 03, Fri 04, Mon 07, Tue 08 = 4 > 3; MSA: Mon 07, Tue 08 = 2
    assert got == [
        ("055", "CAF", D, 4, "silencieux"),
        ("055", "MSA", date(2026, 12, 4), 2, "ok"),
        ("057", None, None, None, "silencieux"),
    ]
    assert lines[0].message() == "Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés)."
    assert lines[2].message() == "Aucun fichier CAF/MSA reçu (département 057)."
    assert overall(lines) == "silencieux" and overall(lines[1:2]) == "ok"
    with get_engine(db).connect() as conn:  # the page: as of Sun 06/12, 2 working days, not silent
        (caf, msa) = freshness(conn, ["055"], date(2026, 12, 6), 3)
    assert (caf.working_days, caf.status, msa.working_days) == (2, "ok", 0)
    with get_engine(db).connect() as conn:  # a threshold of 1: the same 2 days are silent
        (caf, _msa) = freshness(conn, ["055"], date(2026, 12, 6), 1)
    assert caf.message() == "Aucun fichier CAF reçu depuis le 02/12/2026 (2 jours ouvrés)."


def test_the_api_says_ok_or_silencieux_for_the_callers_departements(db, client, make_api_key):
    _seed(db)
    key = make_api_key(["pilotage:read"], ["055"])  # a monitoring host: no power to upload files
    r = client.get("/api/v1/flux/freshness?as_of=2026-12-08", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["as_of"], body["seuil_jours_ouvres"], body["status"]) == ("2026-12-08", 3, "silencieux")
    assert [(i["departement"], i["organisme"], i["dernier_fichier_recu"], i["jours_ouvres_depuis"], i["status"])
            for i in body["items"]] == [("055", "CAF", "2026-12-02", 4, "silencieux"),
                                        ("055", "MSA", "2026-12-04", 2, "ok")]  # fmt: skip
    assert body["items"][0]["message"] == "Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés)."
    r = client.get("/api/v1/flux/freshness?as_of=2026-12-07", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert [i["jours_ouvres_depuis"] for i in r.json()["items"]] == [3, 1]
    other = make_api_key(["pilotage:read"], ["054"])  # 054's file of Mon 07/12: 1 working day
    body = client.get("/api/v1/flux/freshness?as_of=2026-12-08", headers={"X-API-Key": other}).json()
    assert [(i["departement"], i["jours_ouvres_depuis"]) for i in body["items"]] == [("054", 1)]
    assert client.get("/api/v1/flux/freshness", headers={"X-API-Key": make_api_key(["flux:write"])}).status_code \
        == 403  # fmt: skip
    assert client.get("/api/v1/flux/freshness?as_of=2026-13-01", headers={"X-API-Key": key}).status_code == 422
    assert "/api/v1/flux/freshness" in client.get("/openapi.json").json()["paths"]


def test_the_cli_exits_1_when_one_is_silent(db, monkeypatch):
    _seed(db)
    r = run_cli(db, monkeypatch, "flux", "freshness", "--as-of", "2026-12-08", "--departement", "055", "--json")
    assert r.exit_code == 1, r.output
    body = json.loads(r.output)
    assert body["status"] == "silencieux"
    assert [(i["organisme"], i["jours_ouvres_depuis"]) for i in body["items"]] == [("CAF", 4), ("MSA", 2)]
    r = run_cli(db, monkeypatch, "flux", "freshness", "--as-of", "2026-12-07", "--departement", "055")
    assert r.exit_code == 0, r.output
    assert "ok" in r.output and "ALERTE" not in r.output
    r = run_cli(db, monkeypatch, "flux", "freshness", "--as-of", "2026-12-08")  # every département: 054 and 055
    assert r.exit_code == 1
    assert "ALERTE : Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés) (département 055)." in " ".join(
        r.output.split()
    )
    assert "054" in r.output
    assert run_cli(db, monkeypatch, "flux", "freshness", "--as-of", "08/12/2026").exit_code == 2


def test_flux_list_flags_the_silent_ones(db, monkeypatch):
    _seed(db)
    monkeypatch.setenv("PASSERELLE_TODAY", "2026-12-08")  # the business date of the command
    r = run_cli(db, monkeypatch, "flux", "list", "--json")
    assert r.exit_code == 0, r.output
    flags = {(row["departement"], row["received_on"], row["status"]): row["silencieux"] for row in json.loads(r.output)}
    assert flags[("055", "2026-12-02", "applied")] is True  # the CAF of 055: 4 working days
    assert flags[("055", "2026-12-04", "applied")] is False  # its MSA: 2
    assert flags[("054", "2026-12-07", "applied")] is False
    r = run_cli(db, monkeypatch, "flux", "list")
    assert "ALERTE : Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés) (département 055)." in " ".join(
        r.output.split()
    )  # wrapped at 80 columns
    monkeypatch.setenv("PASSERELLE_TODAY", "2026-12-07")
    assert "ALERTE" not in run_cli(db, monkeypatch, "flux", "list").output


def test_the_dashboard_shows_the_alert(db, client, make_api_key):
    _seed(db)
    key = make_api_key(["pilotage:read"], ["055"])
    page = client.get("/tableau-de-bord?mois=2026-11&as_of=2026-12-08", headers={"X-API-Key": key})
    assert page.status_code == 200, page.text
    assert "Aucun fichier CAF reçu depuis le 02/12/2026 (4 jours ouvrés)." in page.text
    assert 'role="alert"' in page.text and "Aucun fichier MSA" not in page.text
    page = client.get("/tableau-de-bord?mois=2026-11&as_of=2026-12-06", headers={"X-API-Key": key})
    assert page.status_code == 200 and "Aucun fichier" not in page.text and 'role="alert"' not in page.text


@pytest.mark.parametrize(("second", "flagged"), [(date(2026, 12, 9), []), (date(2026, 12, 10), [4])])
def test_the_transmission_table_flags_gaps_in_working_days(db, second, flagged):
    # Fri 04/12 to Wed 09/12: Mon, Tue, Wed = 3 working days (5 calendar days): not more than 3; to Thu 10/12: 4
    add_file(db, "055", date(2026, 12, 4))
    add_file(db, "055", second)
    with get_engine(db).connect() as conn:
        t = compute(conn, "transmission", ["055"], Period.parse("2026-12"), date(2026, 12, 31), (), None, 3)
    assert [v for i, _d, _k, v in t.figures if i == "ecart_long_jours_ouvres"] == flagged
    assert t.value("ecart_max_jours") == (second - date(2026, 12, 4)).days  # the measure stays in calendar days
