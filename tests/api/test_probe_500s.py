"""Small 500s found by the probe (issue #23, item 11): an out-of-range date, a NUL in a query string or a
France Travail return file, a CSV field over the csv module's limit, a POST without any body, and the
security headers of a 500. Each is now a clear 4xx (or, for the 500, carries the headers)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import session_scope
from app.models import FtReturnFile, FtReturnRow
from tests.france_travail.test_return_file_streamed import FILLER, HEADER
from tests.support.cli import run_cli
from tests.support.factories import ingest as ingest_flux
from tests.support.fluxbuilder import foyer, write_flux

FAR = "9999-12-31"
EARLY = "1899-12-31"


def _invalid(r, param: str):
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input", body
    assert any(d["loc"][-1] == param for d in body["details"]), body
    return body


@pytest.mark.parametrize("day", [FAR, EARLY, "0001-01-01", "3000-01-01"])
@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/audit/accesses?until={d}", "until"),
        ("/api/v1/audit/accesses?since={d}", "since"),
        ("/api/v1/pilotage/orientation?from=2026-01-01&to=2026-01-31&as_of={d}", "as_of"),
        ("/api/v1/pilotage/orientation?from={d}&to=2026-01-31", "from"),
        ("/api/v1/pilotage/tables/nouveaux-entrants?as_of={d}", "as_of"),
        ("/api/v1/pilotage/tables/stock-oarsa?as_of={d}", "as_of"),
        ("/api/v1/pilotage/tables/delais-orientation?from=2026-01-01&to={d}", "to"),
        ("/api/v1/pilotage/extract?as_of={d}", "as_of"),
        ("/api/v1/persons/1/episodes?as_of={d}", "as_of"),
        ("/tableau-de-bord?as_of={d}", "as_of"),
    ],
)
def test_an_out_of_range_date_is_a_422_naming_it_before_anything_runs(client, make_api_key, url, param, day):
    """`until=9999-12-31` left the calendar in the search's day-after arithmetic (a 500), `as_of=9999-12-31`
    in the tables' (a 500) and the extract's (a 200 cut short): every date a caller gives is checked first."""
    key = make_api_key(["pilotage:read", "audit:read", "persons:read"])
    r = client.get(url.format(d=day), headers={"X-API-Key": key})
    body = _invalid(r, param)
    assert "1900-01-01 and 2999-12-31" in body["message"]


def test_the_dates_at_the_bounds_are_taken(client, make_api_key):
    key = make_api_key(["pilotage:read", "audit:read"])
    h = {"X-API-Key": key}
    assert client.get("/api/v1/audit/accesses?since=1900-01-01&until=2999-12-31", headers=h).status_code == 200
    r = client.get("/api/v1/pilotage/tables/nouveaux-entrants?periode=2026-01&as_of=2999-12-31", headers=h)
    assert r.status_code == 200, r.text
    r = client.get("/api/v1/pilotage/tables/nouveaux-entrants?periode=3000-01", headers=h)
    assert r.status_code == 422 and "ends after 2999-12-31" in r.json()["message"], r.text


def test_a_flux_reception_date_out_of_range_is_a_422(client, make_api_key):
    key = make_api_key(["flux:write"])
    r = client.post(
        "/api/v1/flux",
        files={"file": ("f.xml", b"<x/>", "application/xml")},
        data={"received_on": "0001-01-01", "departement": "055"},
        headers={"X-API-Key": key},
    )
    _invalid(r, "received_on")


def test_a_dashboard_month_whose_year_starts_before_1900_is_refused_in_french(client, make_api_key):
    key = make_api_key(["pilotage:read"])
    r = client.get("/tableau-de-bord?mois=1900-01&as_of=2026-01-01", headers={"X-API-Key": key})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and "trop ancien" in r.json()["message"]
    assert "1900-12" in r.json()["message"]
    r = client.get("/tableau-de-bord?mois=1900-12&as_of=2026-01-01", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text[:300]


@pytest.mark.parametrize("param", ["client", "agent"])
def test_a_nul_in_a_query_string_is_a_422_naming_it(client, make_api_key, param):
    """On PostgreSQL a NUL reaching a query was a 500 (it refuses NUL in text)."""
    key = make_api_key(["audit:read"])
    r = client.get(f"/api/v1/audit/accesses?{param}=ab%00c", headers={"X-API-Key": key})
    _invalid(r, param)
    r = client.get(f"/api/v1/audit/accesses?{param}=abc", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text


def test_every_text_query_parameter_says_what_it_accepts(client):
    """Every string in a query string or a form is bounded by a pattern, an enum or a format (a date): a free
    text without one would let a NUL reach the database."""
    document = client.get("/openapi.json").json()
    free = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                schema = parameter.get("schema", {})
                for part in (schema, *schema.get("anyOf", ()), schema.get("items", {})):
                    if part.get("type") == "string" and not {"pattern", "enum", "format", "const"} & set(part):
                        free.append(f"{method.upper()} {path} {parameter['name']}")
    assert not free, free


def _return_file(*rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


@pytest.fixture
def known(db, tmp_path):
    ingest_flux(db, write_flux(tmp_path, [foyer()]))
    return db


def _post_return_file(client, key, data: bytes, name: str = "retour.csv"):
    # written by hand: httpx would write a NUL of the file name as `%00`, other clients send the byte
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="departement"\r\n\r\n055\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return client.post(
        "/api/v1/ft-return-files",
        content=body,
        headers={"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def _nothing_stored(settings) -> None:
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(FtReturnFile)) == 0
        assert s.scalar(select(func.count()).select_from(FtReturnRow)) == 0


def test_a_nul_in_a_return_file_cell_or_name_is_rejected_naming_where(known, client, make_api_key):
    """A NUL was a 500 on PostgreSQL and stored as it is on SQLite."""
    key = make_api_key(["exports:run"], departements=["055"])
    filler = list(FILLER)
    filler[3] = "K13\x0004"  # Rome Actuel
    r = _post_return_file(client, key, _return_file(["DUPONT", "JEAN", "15/01/1990", *FILLER], ["DUPONT", "JEAN",
                          "15/01/1990", *filler]))  # fmt: skip
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "return_file_rejected" and "line 3" in body["message"] and "NUL" in body["message"]
    assert body["details"] == [{"line": 3, "column": "Rome Actuel"}]
    good = _return_file(["DUPONT", "JEAN", "15/01/1990", *FILLER])
    r = _post_return_file(client, key, good, name="retour\x00.csv")
    assert r.status_code == 422 and r.json()["error"] == "return_file_rejected", r.text
    assert "file name" in r.json()["message"] and "NUL" in r.json()["message"]
    _nothing_stored(known)
    assert _post_return_file(client, key, good).status_code == 200


def test_a_csv_field_over_the_csv_modules_limit_is_rejected_naming_the_line(known, client, make_api_key, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    """Over 131,072 characters the csv module raises csv.Error: it was a 500 (and exit 4 on the command line)."""
    key = make_api_key(["exports:run"], departements=["055"])
    huge = "x" * (csv.field_size_limit() + 1)
    data = _return_file(["DUPONT", "JEAN", "15/01/1990", *FILLER], ["DUPONT", huge, "15/01/1990", *FILLER])
    r = _post_return_file(client, key, data)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "return_file_rejected" and "line 3" in body["message"]
    assert "longer than 131072 characters" in body["message"] and huge not in r.text
    _nothing_stored(known)
    path = tmp_path / "retour.csv"
    path.write_bytes(data)
    result = run_cli(known, monkeypatch, "ft", "return-file", "ingest", path, "--departement", "055")
    assert result.exit_code == 1 and "line 3" in result.output, result.output
    events = tmp_path / "events.csv"
    events.write_text(f"evenement;date;organisme\norientation;2026-01-01;{huge}\n", encoding="utf-8")
    result = run_cli(known, monkeypatch, "orientations", "import", events, "--departement", "055", "--json")
    assert result.exit_code == 1 and "line 2" in result.output and "131072" in result.output, result.output
    bad_header = tmp_path / "header.csv"
    bad_header.write_text(f"evenement;date;{huge}\n", encoding="utf-8")
    result = run_cli(known, monkeypatch, "orientations", "import", bad_header, "--departement", "055")
    assert result.exit_code == 1 and "line 1" in result.output, result.output


def test_a_post_without_body_nor_content_length_is_answered_as_an_empty_body(client, make_api_key):
    """No Content-Length and no Transfer-Encoding: no body (RFC 9112). It was a 415 (no Content-Type)."""
    key = make_api_key(["persons:read"])
    empty = client.post("/api/v1/persons/search", content=b"", headers={"X-API-Key": key})
    request = client.build_request("POST", "/api/v1/persons/search", headers={"X-API-Key": key})
    request.headers.pop("content-length", None)
    assert "content-length" not in request.headers and "transfer-encoding" not in request.headers
    none = client.send(request)
    assert none.status_code == empty.status_code == 422, (none.text, empty.text)
    assert none.json() == empty.json()
    assert none.json()["details"][0]["loc"] == ["body"]


def test_a_500_carries_the_security_headers_and_its_traceback_is_logged(db, capsys):
    from app.main import create_app

    app = create_app(db)

    @app.get("/api/v1/boom-test-only")
    def boom() -> None:
        raise RuntimeError("boom-test-only")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/v1/boom-test-only", headers={"X-Request-Id": "req-500"})
        ok = c.get("/health")
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    for name in ("x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy"):
        assert r.headers.get(name) == ok.headers.get(name), name
        assert r.headers.get(name), name
    assert r.headers["cache-control"] == "no-store"
    assert r.headers.get_list("x-request-id") == ["req-500"]
    logged = capsys.readouterr()
    lines = [json.loads(line) for line in (logged.out + logged.err).splitlines() if line.startswith("{")]
    errors = [e for e in lines if e.get("event") == "unhandled_error"]
    assert len(errors) == 1 and "RuntimeError" in json.dumps(errors[0]) and "Traceback" in json.dumps(errors[0])
    assert any(e.get("event") == "request" and e.get("status") == 500 for e in lines)
