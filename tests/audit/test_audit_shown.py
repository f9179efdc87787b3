"""Issue #26 item 5: the auditor's tools show what is stored. Each event's outcome and detail, the API client's
name beside its id, times in Europe/Paris as jj/mm/aaaa hh:mm in the CSV and the terminal (ISO with its offset
in JSON), oui/non for booleans. On SQLite and PostgreSQL (the names are read from `api_clients`)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.search import shown_time, to_csv, who
from app.db import get_engine
from app.models import AccessRecord
from tests.support.cli import run_cli
from tests.support.ftsupport import AGENT_HEADERS, population

PARIS = ZoneInfo("Europe/Paris")


def test_times_are_shown_in_paris_winter_and_summer():
    assert shown_time(datetime(2026, 1, 15, 23, 30, tzinfo=UTC)) == "16/01/2026 00:30"  # +01:00, the next day
    assert shown_time(datetime(2026, 7, 1, 12, 5, tzinfo=UTC)) == "01/07/2026 14:05"  # +02:00
    assert shown_time(datetime(2026, 7, 1, 12, 5)) == "01/07/2026 14:05"  # a naive time is UTC (as stored)
    assert shown_time("2026-03-29T03:10:00+02:00") == "29/03/2026 03:10"
    assert shown_time("2026-03-29T01:10:00+00:00") == "29/03/2026 03:10"  # the night the clocks change


def test_the_csv_writes_french_dates_oui_non_and_the_client_name():
    item = {"id": 7, "at": "2026-07-01T14:05:09+02:00", "principal_id": "client:3", "client_name": "plateforme",
            "agent_identifiant": None, "departement_code": "055", "person_id": 12, "action": "person.read",
            "endpoint": "GET /api/v1/persons/{person_id}", "request_id": "r", "found": False, "purpose": None,
            "source_address": "127.0.0.1", "outcome": "not_found", "detail": '{"status": 404}'}  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(to_csv([item]).lstrip("\ufeff"), newline=""), delimiter=";"))
    assert rows == [{"id": "7", "at": "01/07/2026 14:05", "principal_id": "client:3", "client_name": "plateforme",
                     "agent_identifiant": "", "departement_code": "055", "person_id": "12", "action": "person.read",
                     "endpoint": "GET /api/v1/persons/{person_id}", "request_id": "r", "found": "non", "purpose": "",
                     "source_address": "127.0.0.1", "outcome": "not_found", "detail": '{"status": 404}'}]  # fmt: skip
    assert who(item) == "plateforme (client:3)"
    assert who({"principal_id": "job:audit accesses", "client_name": None}) == "job:audit accesses"


def test_the_auditor_reads_what_is_stored_in_json_csv_and_the_terminal(client, db, make_api_key, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    kinds = population(db, tmp_path, foyers=20, days=2)
    pid = kinds["certified"][0]
    platform = make_api_key(["persons:read"], name="plateforme-orientation")
    assert client.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": platform} | AGENT_HEADERS).status_code == 200
    nobody = {"nir": "1850799123456", "date_naissance": "1985-07-01"}
    assert client.post("/api/v1/persons/search", json=nobody, headers={"X-API-Key": platform}).status_code == 200
    platform_id = client.get("/api/v1/me", headers={"X-API-Key": platform}).json()["id"]
    with Session(get_engine(db)) as session:  # what is stored: the times in UTC
        mine = select(AccessRecord).where(AccessRecord.principal_id == platform_id)
        stored = {r.id: r for r in session.scalars(mine)}
    assert len(stored) == 2
    auditor = {"X-API-Key": make_api_key(["audit:read"], name="dpo")}

    items = client.get("/api/v1/audit/accesses", params={"client": platform_id}, headers=auditor).json()["items"]
    assert {i["id"] for i in items} == set(stored)
    for item in items:
        record = stored[item["id"]]
        at = record.at if record.at.tzinfo else record.at.replace(tzinfo=UTC)
        shown = datetime.fromisoformat(item["at"])
        assert shown == at.replace(microsecond=0)  # ISO, to the second, with Paris' offset:
        assert shown.utcoffset() == at.astimezone(PARIS).utcoffset()
        assert item["client_name"] == "plateforme-orientation"
        assert (item["outcome"], item["detail"]) == (record.outcome, record.detail)
    search = next(i for i in items if i["action"] == "person.search")
    assert search["found"] is False  # JSON keeps its booleans

    sheet = client.get("/api/v1/audit/accesses", params={"client": platform_id, "format": "csv"}, headers=auditor)
    rows = list(csv.DictReader(io.StringIO(sheet.content.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert {r["id"] for r in rows} == {str(i) for i in stored}
    for row in rows:
        record = stored[int(row["id"])]
        at = record.at if record.at.tzinfo else record.at.replace(tzinfo=UTC)
        paris = at.astimezone(PARIS)
        assert row["at"] == f"{paris.day:02d}/{paris.month:02d}/{paris.year} {paris.hour:02d}:{paris.minute:02d}"
        assert row["client_name"] == "plateforme-orientation"
        assert row["found"] == ("oui" if record.found else "non")
        assert (row["outcome"], row["detail"]) == (record.outcome, record.detail or "")
    assert {r["found"] for r in rows} == {"oui", "non"}

    who_read = client.get(f"/api/v1/audit/persons/{pid}", headers=auditor).json()["accessors"]
    assert {a["client_name"] for a in who_read if a["principal_id"] == platform_id} == {"plateforme-orientation"}

    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(db, monkeypatch, "audit", "accesses", "--client", platform_id)
    assert result.exit_code == 0, result.output
    assert f"plateforme-orientation ({platform_id})" in result.output
    for record in stored.values():
        at = record.at if record.at.tzinfo else record.at.replace(tzinfo=UTC)
        assert at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M") in result.output
        assert record.outcome in result.output
    assert "True" not in result.output and "False" not in result.output and "+00:00" not in result.output
    person = run_cli(db, monkeypatch, "audit", "person", str(pid))
    assert person.exit_code == 0, person.output
    assert f"plateforme-orientation ({platform_id})" in person.output
