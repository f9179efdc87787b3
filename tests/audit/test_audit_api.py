"""The auditor's side (issue #14, auditor API): the record of accesses searched by person, client, agent,
period, action and outcome; who accessed a person; CSV for a spreadsheet; the auditor's own queries recorded;
the CLI's equivalents; searches while a flux is ingested. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from app.clock import today
from app.db import get_engine
from app.flux.loader import ingest_file
from tests.support.ftsupport import AGENT_HEADERS, cli_env, passerelle, population


def _client_id(c, key):
    return c.get("/api/v1/me", headers={"X-API-Key": key}).json()["id"]


def test_an_auditor_finds_who_accessed_a_person_and_what(client, db, make_api_key, tmp_path):
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    platform = make_api_key(["persons:read"], name="plateforme")
    said = "Orientation RSA : préparation du rendez-vous"
    purpose = {"X-Purpose": said.encode()}  # UTF-8 bytes on the wire, as agents' names
    read = client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": platform} | AGENT_HEADERS | purpose)
    assert read.status_code == 200
    bad_purpose = client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": platform, "X-Purpose": "a\tb"})
    assert (bad_purpose.status_code, bad_purpose.json()["error"]) == (422, "invalid_purpose_header")
    assert client.get(f"/api/v1/persons/{pid}/episodes", headers={"X-API-Key": platform}).status_code == 200
    nobody = {"nir": "1850799123456", "date_naissance": "1985-07-01"}
    assert client.post("/api/v1/persons/search", json=nobody, headers={"X-API-Key": platform}).json()["items"] == []
    auditor = make_api_key(["audit:read"], name="dpo")
    h = {"X-API-Key": auditor}
    platform_id = _client_id(client, platform)

    r = client.get("/api/v1/audit/accesses", params={"person_id": pid}, headers=h)
    assert r.status_code == 200, r.text
    actions = {(i["action"], i["principal_id"], i["agent_identifiant"]) for i in r.json()["items"]}
    assert ("person.read", platform_id, "A123") in actions and ("person.episodes", platform_id, None) in actions
    assert all(i["person_id"] == pid for i in r.json()["items"])
    by_agent = client.get("/api/v1/audit/accesses", params={"agent": "A123"}, headers=h).json()["items"]
    assert [i["action"] for i in by_agent] == ["person.read"]
    assert by_agent[0]["purpose"] == said and by_agent[0]["source_address"]
    missed = client.get("/api/v1/audit/accesses", params={"found": "false"}, headers=h).json()["items"]
    assert [(i["action"], i["person_id"]) for i in missed] == [("person.search", None)]
    prefix = client.get("/api/v1/audit/accesses", params={"action": "person.*", "client": platform_id}, headers=h)
    assert prefix.json()["total"] == 3
    day = today(db)
    window = {"since": (day - timedelta(days=1)).isoformat(), "until": day.isoformat(), "client": platform_id}
    assert client.get("/api/v1/audit/accesses", params=window, headers=h).json()["total"] == 3
    early = {"until": (day - timedelta(days=2)).isoformat(), "client": platform_id}
    assert client.get("/api/v1/audit/accesses", params=early, headers=h).json()["total"] == 0

    who = client.get(f"/api/v1/audit/persons/{pid}", headers=h).json()
    mine = [a for a in who["accessors"] if a["principal_id"] == platform_id]
    assert sorted((a["agent_identifiant"] or "", a["accesses"]) for a in mine) == [("", 1), ("A123", 1)]

    sheet = client.get("/api/v1/audit/accesses", params={"person_id": pid, "format": "csv"}, headers=h)
    assert sheet.headers["content-type"].startswith("text/csv")
    assert sheet.headers["content-disposition"].startswith('attachment; filename="acces_055_')
    assert sheet.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(sheet.content.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert rows[0][:3] == ["id", "at", "principal_id"] and len(rows) >= 3

    # the auditor's own queries are in the record too
    auditor_id = _client_id(client, auditor)
    own = client.get("/api/v1/audit/accesses", params={"client": auditor_id}, headers=h).json()["items"]
    assert {"audit.search", "audit.person"} <= {i["action"] for i in own}

    # misuse
    assert client.get("/api/v1/audit/accesses", headers={"X-API-Key": platform}).status_code == 403
    bad = client.get("/api/v1/audit/accesses", params={"since": "2026-02-01", "until": "2026-01-01"}, headers=h)
    assert bad.status_code == 422
    assert client.get("/api/v1/audit/accesses", params={"action": "x;drop"}, headers=h).status_code == 422
    elsewhere = {"X-API-Key": make_api_key(["audit:read"], ["054"], name="dpo-54")}
    assert client.get(f"/api/v1/audit/persons/{pid}", headers=elsewhere).status_code == 404
    assert client.get("/api/v1/audit/accesses", params={"person_id": pid}, headers=elsewhere).json()["total"] == 0
    assert client.get("/api/v1/audit/accesses", params={"departement": "055"}, headers=elsewhere).status_code == 404


@pytest.mark.slow
def test_the_cli_equivalents_are_recorded_too(client, db, make_api_key, tmp_path):
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    reader = make_api_key(["persons:read"], name="plateforme")
    client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": reader} | AGENT_HEADERS)
    env = cli_env(db, "http://127.0.0.1:9")
    proc = passerelle("audit", "accesses", "--person", str(pid), "--json", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "person.read" in {i["action"] for i in json.loads(out)["items"]}
    proc = passerelle("audit", "accesses", "--person", str(pid), "--csv", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("\ufeffid;at;principal_id;client_name"), err
    proc = passerelle("audit", "person", str(pid), "--json", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert any(a["agent_identifiant"] == "A123" for a in json.loads(out)["accessors"])
    proc = passerelle("audit", "accesses", "--client", "job:audit accesses", "--json", env=env)
    out, _err = proc.communicate(timeout=60)
    assert json.loads(out)["total"] >= 2  # the CLI's own earlier queries
    proc = passerelle("audit", "accesses", "--since", "yesterday", env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--since" in err


def test_auditors_search_while_a_flux_is_ingested(client, db, make_api_key, tmp_path):
    held: list = []
    population(db, tmp_path, foyers=500, days=4, held=held)
    h = {"X-API-Key": make_api_key(["audit:read"], name="dpo")}
    failures: list[str] = []

    def ingest() -> None:
        for path, options in held:
            if ingest_file(get_engine(db), db, path, options).status != "applied":
                failures.append(str(path))

    worker = threading.Thread(target=ingest)
    worker.start()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.get("/api/v1/audit/accesses", headers=h), range(16)))
    worker.join()
    assert not failures
    assert [r.status_code for r in answers] == [200] * 16


def test_formulas_in_purpose_and_agent_headers_are_neutralised_in_the_audit_csv(client, db, make_api_key, tmp_path):
    """Issue #23 item 4 (OWASP CSV injection): X-Purpose and X-Agent-* are the caller's words; a formula in
    them comes out of the auditor's CSV with a quote in front, readable; the service's dates unchanged."""
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    platform = make_api_key(["persons:read"], name="plateforme")
    hostile = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1", "-cmd"]
    for n, said in enumerate(hostile):
        agent = {"X-Agent-Identifiant": hostile[-1 - n], "X-Agent-Nom": "=1+1", "X-Agent-Prenom": "@x"}
        headers = {"X-API-Key": platform, "X-Purpose": said} | agent
        assert client.get(f"/api/v1/persons/{pid}", headers=headers).status_code == 200
    auditor = {"X-API-Key": make_api_key(["audit:read"], name="dpo")}
    sheet = client.get("/api/v1/audit/accesses", params={"person_id": pid, "format": "csv"}, headers=auditor)
    assert sheet.status_code == 200, sheet.text
    rows = list(csv.DictReader(io.StringIO(sheet.content.decode("utf-8-sig"), newline=""), delimiter=";"))
    reads = [r for r in rows if r["action"] == "person.read"]
    assert sorted(r["purpose"] for r in reads) == sorted("'" + h for h in hostile)
    assert sorted(r["agent_identifiant"] for r in reads) == sorted("'" + h for h in hostile)
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d", r["at"]) and r["id"].isdigit() for r in rows)  # as they were
    assert not [cell for r in rows for cell in r.values() if cell and cell[0] in "=+-@\t\r"]
