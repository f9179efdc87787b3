"""Issue #23, items 5, 8 and 13: refused and missing accesses are in the audit trail, one event per caller (or
source address), endpoint, outcome and minute with a count; anonymous callers' refused attempts are limited
per source address (429 with Retry-After) without holding back authenticated callers from the same address;
the source address believes X-Forwarded-For from trusted proxies only; the auditor sees outcome and detail,
times in Europe/Paris, oui/non in the CSV, and the events of no one département. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, session_scope
from app.flux.loader import ingest_file
from app.flux.report import IngestOptions
from app.main import create_app
from app.models import AccessRecord
from app.settings import Settings
from tests.support.cli import run_cli
from tests.support.factories import nouvel_entrant
from tests.support.ftsupport import cli_env, passerelle

ATTACKER = ("203.0.113.7", 40000)
FORGED = "A" * 43  # a download token of the right shape that names no link
SIGNED_JSON = {"X-RDVI-SIGNATURE": "00", "Content-Type": "application/json"}
BAD_KEY = "prsa_000000000000_" + "x" * 43


def _events(db: Settings, *where) -> list[AccessRecord]:
    with session_scope(db) as s:
        rows = s.scalars(select(AccessRecord).where(*where).order_by(AccessRecord.id)).all()
        s.expunge_all()
        return list(rows)


def _count(rows: list[AccessRecord]) -> int:
    return sum(json.loads(r.detail)["count"] for r in rows)


def test_a_flood_of_forged_links_and_signatures_is_limited_and_written_once_a_minute(db, make_api_key):
    """Item 5: before, each forged link or signature wrote an audit event (230 a second, undeletable for
    months) and was never held back."""
    settings = db.model_copy(
        update={"max_refused_per_minute": 5, "rdv_insertion_secrets": SecretStr(json.dumps({"055": "s" * 32}))}
    )
    key = make_api_key(["persons:read"])
    newcomer = make_api_key(["persons:read"])  # never seen by this process before the address is blocked
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, client=ATTACKER) as c:
        assert c.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
        answers = [c.get(f"/api/v1/exports/download/{FORGED}") for _ in range(30)]
        assert [r.status_code for r in answers[:5]] == [403] * 5
        assert {r.status_code for r in answers[5:]} == {429}
        limited = answers[-1]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"] == "too_many_requests" and {"message", "details"} <= set(limited.json())
        # the same address's webhooks, with or without a signature, wait too
        hook = c.post("/api/v1/webhooks/rdv-insertion/055", content=b"{}", headers=SIGNED_JSON)
        assert hook.status_code == 429
        # an API key from the same address is checked, and its work done: known, or not seen yet
        assert c.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
        assert c.get("/api/v1/me", headers={"X-API-Key": newcomer}).status_code == 200
        # a wrong key from there is refused 429, not 401: it may not go on guessing
        assert c.get("/api/v1/me", headers={"X-API-Key": BAD_KEY}).status_code == 429
        # another address is not held back: its wrong signatures are refused 401, counted for it
        other = TestClient(app, raise_server_exceptions=False, client=("198.51.100.20", 1))
        for _ in range(3):
            r = other.post("/api/v1/webhooks/rdv-insertion/055", content=b"{}", headers=SIGNED_JSON)
            assert r.status_code == 401
        assert _events(db, AccessRecord.source_address.in_([ATTACKER[0], "198.51.100.20"])) == []  # not yet
    # written when the server stopped at the latest: a few events with counts, not one per attempt
    flood = _events(db, AccessRecord.source_address == ATTACKER[0])
    assert len(flood) <= 8, [(e.action, e.detail) for e in flood]
    links = [e for e in flood if e.action == "export.download"]
    assert _count(links) == 5 and {e.principal_id for e in links} == {"link:unknown"}
    assert {json.loads(e.detail)["reason"] for e in links} == {"unknown"}
    held = [e for e in flood if e.action == "access.rate_limited"]
    assert _count(held) == 27 and {e.outcome for e in held} == {"refused"}  # 25 links, a webhook, a wrong key
    assert all(e.at.second == 0 and e.at.microsecond == 0 for e in flood)  # the minute's start
    hooks = _events(db, AccessRecord.source_address == "198.51.100.20")
    assert _count(hooks) == 3 and {(e.action, e.departement_code, e.outcome) for e in hooks} == {
        ("webhook.delivery", "055", "refused")
    }
    assert not _events(db, AccessRecord.detail.contains(BAD_KEY))


def test_the_limit_is_a_sliding_minute_per_address(monkeypatch):
    from app.security import ratelimit
    from app.security.ratelimit import RefusalLimiter

    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    limiter = RefusalLimiter(3)
    assert [limiter.refuse("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("a") == 60 and limiter.refuse("a") == 60 and limiter.retry_after("b") == 0
    now[0] += 30
    assert limiter.retry_after("a") == 30  # the attempts refused 429 are not counted
    now[0] += 30
    assert limiter.retry_after("a") == 0  # a minute later: as new
    assert [limiter.refuse("a") for _ in range(3)] == [0, 0, 0] and limiter.retry_after("a") == 60
    assert RefusalLimiter(0).refuse("a") == 0 and RefusalLimiter(3).refuse(None) == 0


def test_refused_and_missing_accesses_are_recorded_and_the_auditor_finds_them(db, make_api_key, tmp_path):
    """Item 8: 401, 403 and 404 left no trace; the auditor saw neither outcome nor detail."""
    person_id, _t0 = nouvel_entrant(db, tmp_path)  # a person of 055
    reader = make_api_key(["persons:read"], name="plateforme")
    elsewhere = make_api_key(["persons:read"], ["054"], name="plateforme-54")
    auditor = {"X-API-Key": make_api_key(["audit:read"], name="dpo")}
    app = create_app(db)
    with TestClient(app, raise_server_exceptions=False) as c:
        reader_id = c.get("/api/v1/me", headers={"X-API-Key": reader}).json()["id"]
        elsewhere_id = c.get("/api/v1/me", headers={"X-API-Key": elsewhere}).json()["id"]
        assert c.get(f"/api/v1/persons/{person_id}", headers={"X-API-Key": elsewhere}).status_code == 404
        assert c.get("/api/v1/persons/1").status_code == 401
        assert c.get("/api/v1/persons/1", headers={"X-API-Key": BAD_KEY}).status_code == 401
        for pid in (987654, 987655, 987656):  # nobody, for this caller
            assert c.get(f"/api/v1/persons/{pid}", headers={"X-API-Key": reader}).status_code == 404
        for _ in range(2):
            assert c.get("/api/v1/audit/accesses", headers={"X-API-Key": reader}).status_code == 403
    # a file rejected before its département was read (the CLI's `flux ingest` without --departement)
    garbage = tmp_path / "RSABEM_garbage.xml"
    garbage.write_bytes(b"not a flux")
    report = ingest_file(get_engine(db), db, garbage, IngestOptions(received_on=today(db)))
    assert report.status == "rejected" and report.departement is None

    with TestClient(create_app(db), raise_server_exceptions=False) as c:
        missing = c.get("/api/v1/audit/accesses", params={"outcome": "not_found"}, headers=auditor).json()["items"]
        probe = [i for i in missing if i["endpoint"] == "GET /api/v1/persons/{person_id}"]
        assert sum(json.loads(i["detail"])["count"] for i in probe) == 3
        assert {(i["principal_id"], i["departement_code"], i["found"], i["person_id"]) for i in probe} == {
            (reader_id, "055", False, None)
        }
        refused = c.get(
            "/api/v1/audit/accesses", params={"outcome": "refused", "client": reader_id}, headers=auditor
        ).json()["items"]
        assert {i["action"] for i in refused} == {"access.forbidden"}
        assert sum(json.loads(i["detail"])["count"] for i in refused) == 2
        assert {json.loads(i["detail"])["status"] for i in refused} == {403}
        nobody = {"departement": "*", "outcome": "refused", "action": "access.*"}
        anonymous = c.get("/api/v1/audit/accesses", params=nobody, headers=auditor).json()["items"]
        assert {(i["principal_id"], i["action"], i["source_address"]) for i in anonymous} == {
            ("anonymous", "access.unauthenticated", "testclient")
        }
        assert sum(json.loads(i["detail"])["count"] for i in anonymous) == 2
        rejected = {"departement": "*", "outcome": "rejected", "action": "flux.ingest"}
        files = c.get("/api/v1/audit/accesses", params=rejected, headers=auditor).json()["items"]
        assert [json.loads(i["detail"])["file_id"] for i in files] == [report.file_id]
        # the other département's person: in the other département's record, for its auditor
        auditor_54 = {"X-API-Key": make_api_key(["audit:read"], ["054"], name="dpo-54")}
        theirs = c.get("/api/v1/audit/accesses", params={"outcome": "not_found"}, headers=auditor_54).json()["items"]
        assert [(i["principal_id"], i["departement_code"], json.loads(i["detail"])["count"]) for i in theirs] == [
            (elsewhere_id, "054", 1)
        ]
        assert not [i for i in missing if i["principal_id"] == elsewhere_id]
        # times in Europe/Paris, with their offset
        at = datetime.fromisoformat(probe[0]["at"])
        assert at.utcoffset() == at.astimezone(ZoneInfo("Europe/Paris")).utcoffset()
        sheet = c.get(
            "/api/v1/audit/accesses", params={"outcome": "not_found", "format": "csv"}, headers=auditor
        ).content.decode("utf-8-sig")
        assert c.get("/api/v1/audit/accesses", params={"outcome": "lost"}, headers=auditor).status_code == 422
        for nul in ({"client": "client:1\x00"}, {"agent": "A\x00"}):  # PostgreSQL answered 500 (the fuzzer found it)
            assert c.get("/api/v1/audit/accesses", params=nul, headers=auditor).status_code == 422
    rows = list(csv.DictReader(io.StringIO(sheet, newline=""), delimiter=";"))
    assert {"outcome", "detail"} <= set(rows[0])
    mine = [r for r in rows if r["endpoint"] == "GET /api/v1/persons/{person_id}"]
    assert {(r["found"], r["outcome"]) for r in mine} == {("non", "not_found")}
    assert mine[0]["at"] == datetime.fromisoformat(probe[0]["at"]).strftime("%d/%m/%Y %H:%M")  # Paris (#26)
    assert not _events(db, AccessRecord.detail.contains(BAD_KEY))
    assert not _events(db, AccessRecord.endpoint.contains("987654"))  # the route, never the path


def test_the_cli_shows_outcome_detail_and_paris_times(db, make_api_key, tmp_path, monkeypatch):
    reader = make_api_key(["persons:read"], name="plateforme")
    with TestClient(create_app(db), raise_server_exceptions=False) as c:
        assert c.get("/api/v1/persons/424242", headers={"X-API-Key": reader}).status_code == 404
    garbage = tmp_path / "RSABEM_garbage.xml"
    garbage.write_bytes(b"not a flux")
    assert ingest_file(get_engine(db), db, garbage, IngestOptions(received_on=today(db))).status == "rejected"
    shown = run_cli(db, monkeypatch, "audit", "accesses", "--outcome", "not_found", "--json")
    assert shown.exit_code == 0, shown.output
    (item,) = json.loads(shown.output)["items"]
    assert (item["action"], item["outcome"], json.loads(item["detail"])["count"]) == (
        "access.not_found",
        "not_found",
        1,
    )
    local = datetime.fromisoformat(item["at"])
    assert local.utcoffset() == local.astimezone(ZoneInfo("Europe/Paris")).utcoffset()
    table = run_cli(db, monkeypatch, "audit", "accesses", "--outcome", "rejected")
    assert table.exit_code == 0, table.output
    assert "flux.ingest" in table.output and "rejected" in table.output  # by default with the events of none
    assert "file_id" in table.output  # the detail
    only_none = run_cli(db, monkeypatch, "audit", "accesses", "--departement", "*", "--json")
    assert {i["departement_code"] for i in json.loads(only_none.output)["items"]} == {"*"}
    sheet = run_cli(db, monkeypatch, "audit", "accesses", "--outcome", "not_found", "--csv")
    rows = list(csv.DictReader(io.StringIO(sheet.output.lstrip("\ufeff"), newline=""), delimiter=";"))
    assert (rows[0]["found"], rows[0]["at"]) == ("non", local.strftime("%d/%m/%Y %H:%M"))  # issue #26 item 5
    bad = run_cli(db, monkeypatch, "audit", "accesses", "--outcome", "lost")
    assert bad.exit_code == 2


def test_the_source_address_believes_forwarded_for_from_trusted_proxies_only():
    """Item 13: a caller chose the address it was recorded under (X-Forwarded-For was never read, and
    would have been believed from anyone)."""
    from app.security.source import source_address

    proxies = Settings(database_url="sqlite://", env="test", trusted_proxies="10.0.0.0/8, 2001:db8::1").trusted_networks
    assert source_address("192.0.2.1", ["6.6.6.6"], proxies) == "192.0.2.1"  # not a proxy: its own address
    assert source_address("10.0.0.2", ["6.6.6.6, 198.51.100.9"], proxies) == "198.51.100.9"
    assert source_address("10.0.0.2", ["6.6.6.6, 198.51.100.9, 10.1.1.1"], proxies) == "198.51.100.9"
    assert source_address("10.0.0.2", ["6.6.6.6", "198.51.100.9,10.1.1.1"], proxies) == "198.51.100.9"
    assert source_address("2001:db8::1", ["2001:db8::7"], proxies) == "2001:db8::7"
    assert source_address("10.0.0.2", ["10.3.3.3"], proxies) == "10.3.3.3"  # only proxies: the farthest
    assert source_address("10.0.0.2", ["evil, garbage"], proxies) == "10.0.0.2"  # not an address: stop there
    assert source_address("10.0.0.2", [], proxies) == "10.0.0.2"
    assert source_address("10.0.0.2", ["6.6.6.6"], ()) == "10.0.0.2"  # no trusted proxies: never read
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(database_url="sqlite://", env="test", trusted_proxies="10.0.0.0/8, proxy.local")


def test_the_audit_records_the_address_behind_a_trusted_proxy(db, make_api_key):
    settings = db.model_copy(update={"trusted_proxies": ["10.0.0.0/8"], "max_refused_per_minute": 3})
    reader = make_api_key(["persons:read"])
    app = create_app(settings)
    nobody = {"nir": "1850799123456", "date_naissance": "1985-07-01"}
    with TestClient(app, raise_server_exceptions=False, client=("10.0.0.2", 1)) as proxy:
        forwarded = {"X-API-Key": reader, "X-Forwarded-For": "192.0.2.99, 198.51.100.9"}
        assert proxy.post("/api/v1/persons/search", json=nobody, headers=forwarded).json()["items"] == []
        direct = TestClient(app, raise_server_exceptions=False, client=("192.0.2.50", 1))
        spoofed = {"X-API-Key": reader, "X-Forwarded-For": "192.0.2.99"}
        assert direct.post("/api/v1/persons/search", json=nobody, headers=spoofed).json()["items"] == []
        searches = _events(db, AccessRecord.action == "person.search")
        assert sorted(e.source_address for e in searches) == ["192.0.2.50", "198.51.100.9"]
        # a header written by the caller does not escape the limit of its real address
        codes = [
            direct.get(f"/api/v1/exports/download/{FORGED}", headers={"X-Forwarded-For": f"192.0.2.{n}"}).status_code
            for n in range(5)
        ]
        assert codes == [403, 403, 403, 429, 429]
    with session_scope(db) as s:
        where = AccessRecord.source_address.like("192.0.2.%") & (AccessRecord.source_address != "192.0.2.50")
        assert s.scalar(select(func.count()).select_from(AccessRecord).where(where)) == 0
    assert {e.source_address for e in _events(db, AccessRecord.action == "export.download")} == {"192.0.2.50"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_the_served_app_believes_forwarded_for_from_the_configured_proxies_only(db, make_api_key, trusted):
    """`passerelle serve` ran uvicorn with its proxy headers trusted from 127.0.0.1 whatever the setting: any
    local process chose the address the audit recorded."""
    key = make_api_key(["persons:read"])
    port = _free_port()
    env = cli_env(db, "http://127.0.0.1:9", PASSERELLE_TRUSTED_PROXIES=trusted)
    passerelle("serve", "--port", str(port), "--no-migrate", env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    nobody = {"nir": "1850799123456", "date_naissance": "1985-07-01"}
    headers = {"X-API-Key": key, "X-Forwarded-For": "198.51.100.9"}
    assert httpx.post(f"{base}/api/v1/persons/search", json=nobody, headers=headers).status_code == 200
    (search,) = _events(db, AccessRecord.action == "person.search")
    assert search.source_address == ("198.51.100.9" if trusted else "127.0.0.1")


def test_the_counts_are_written_once_their_minute_ended_and_kept_when_the_database_fails(db, monkeypatch, tmp_path):
    from sqlalchemy import create_engine

    from app.audit import refusals

    minute = datetime(2026, 3, 29, 0, 59, tzinfo=ZoneInfo("UTC"))  # the clock of the counts, fixed
    now = [minute.replace(second=12)]
    monkeypatch.setattr(refusals, "utcnow", lambda: now[0])
    unreachable = refusals.RefusalLog(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"), capacity=2)
    log = refusals.RefusalLog(get_engine(db), capacity=2)
    for target in (log, unreachable):
        for n in range(4):  # two keys, then a third beyond the capacity: counted with the others
            target.add("anonymous", "access.unauthenticated", None, "refused", endpoint="GET /x",
                       source_address=f"192.0.2.{min(n, 2)}", status=401, request_id=f"r{n}")  # fmt: skip
    assert log.flush() == 0 and log.pending() == 4  # the minute goes on
    now[0] = minute.replace(minute=59, second=59)
    assert log.flush() == 0
    now[0] = minute.replace(hour=1, minute=0, second=1)
    assert log.flush() == 3 and log.pending() == 0
    rows = _events(db, AccessRecord.action == "access.unauthenticated")
    assert sorted((r.principal_id, r.source_address, json.loads(r.detail)["count"]) for r in rows) == [
        ("anonymous", "192.0.2.0", 1),
        ("anonymous", "192.0.2.1", 1),
        ("others", None, 2),
    ]
    assert {r.at.replace(tzinfo=ZoneInfo("UTC")) for r in rows} == {minute} and {r.departement_code for r in rows} == {
        "*"
    }
    # the database unreachable: nothing lost, written at a later flush
    assert unreachable.flush() == 0 and unreachable.pending() == 4
    unreachable.engine = get_engine(db)
    assert unreachable.flush() == 3 and unreachable.pending() == 0


def test_an_application_served_twice_writes_the_counts_of_each_run(db):
    app = create_app(db)
    for _ in range(2):
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.get("/api/v1/me").status_code == 401
    assert _count(_events(db, AccessRecord.action == "access.unauthenticated")) == 2
