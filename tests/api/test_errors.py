"""Every failure is JSON `{"error", "message", "details"}`; bad bodies are 4xx, never 500."""

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import BaseModel


def _assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == code
    assert body["message"]
    return body


def test_unknown_route_and_method(client):
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.delete("/health"), 405, "method_not_allowed")


def test_oversized_body_declared(db):
    from app.main import create_app

    settings = db.model_copy(update={"max_body_bytes": 100})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/v1/me", content=b"{" + b" " * 500 + b"}", headers={"content-type": "application/json"})
        _assert_error(r, 413, "payload_too_large")


def test_oversized_body_streamed_without_length(db):
    from app.main import create_app

    settings = db.model_copy(update={"max_body_bytes": 100})
    app = create_app(settings)

    @app.post("/read-test-only")
    async def read(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    def chunks():
        for _ in range(20):
            yield b"          "

    with TestClient(app) as c:
        assert c.post("/read-test-only", content=b"{}", headers={"content-type": "application/json"}).json() == {"n": 2}
        r = c.post("/read-test-only", content=chunks(), headers={"content-type": "application/json"})
        _assert_error(r, 413, "payload_too_large")


def test_wrong_content_type(client, make_api_key):
    key = make_api_key(["admin"])
    r = client.post("/api/v1/me", content=b"nir=1", headers={"content-type": "text/plain", "X-API-Key": key})
    _assert_error(r, 415, "unsupported_media_type")
    r = client.post("/api/v1/me", content=b"{}", headers={"X-API-Key": key})  # a body without its content type
    _assert_error(r, 415, "unsupported_media_type")


def test_internal_error_is_json_without_trace(db):
    from app.main import create_app

    app = create_app(db)

    @app.get("/boom-test-only")
    def boom() -> None:
        raise RuntimeError("secret internals 2900555545123")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom-test-only")
    body = _assert_error(r, 500, "internal_error")
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert "request id" in body["message"]
    assert r.headers.get("x-request-id")


class Body(BaseModel):
    age: int


def test_validation_errors_do_not_echo_input(db):
    from app.main import create_app

    app = create_app(db)

    @app.post("/echo-test-only")
    def echo(body: Body) -> dict[str, int]:
        return {"age": body.age}

    with TestClient(app) as c:
        r = c.post("/echo-test-only", json={"age": "2900555545123x"})
        body = _assert_error(r, 422, "invalid_input")
        assert "2900555545123" not in r.text
        assert body["details"][0]["loc"] == ["body", "age"]
        r = c.post("/echo-test-only", content=b'{"age": ', headers={"content-type": "application/json"})
        _assert_error(r, 400, "malformed_json")


def test_request_id_is_kept_or_generated(client):
    assert client.get("/health", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32


@pytest.mark.parametrize("value", ["0", "1700000000", "2026-12-06T10:00", "06/12/2026", "2026-1-6"])
def test_a_date_in_a_query_string_is_yyyy_mm_dd_only(client, make_api_key, value):
    """pydantic alone takes `0` for 1970-01-01 (a Unix timestamp): a figure would be computed for another
    day without a word (found by schemathesis)."""
    key = make_api_key(["pilotage:read"])
    for url in (
        f"/api/v1/pilotage/orientation?from=2026-01-01&to=2026-01-31&as_of={value}",
        f"/api/v1/pilotage/tables/nouveaux-entrants?periode=2026-01&as_of={value}",
    ):
        r = client.get(url, headers={"X-API-Key": key})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"] == "invalid_input" and "YYYY-MM-DD" in r.json()["message"]
    ok = client.get("/api/v1/pilotage/orientation?from=2026-01-01&to=2026-01-31&as_of=2026-02-01",
                    headers={"X-API-Key": key})  # fmt: skip
    assert ok.status_code == 200, ok.text


def test_a_database_error_is_logged_with_the_drivers_reason_never_a_value():
    """A 503 database_unavailable says in the log why (SQLite's message; PostgreSQL's SQLSTATE only, its
    messages may quote a value), so that an operator can tell a busy writer from a full disk."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from app.api.errors import _reason

    locked = OperationalError(
        "INSERT INTO x VALUES (?)", {"nir": "1840575123456"}, sqlite3.OperationalError("database is locked")
    )
    assert _reason(locked) == "database is locked"

    class PgError(Exception):
        __module__ = "psycopg.errors"
        sqlstate = "57014"

        def __str__(self) -> str:
            return "canceling statement due to statement timeout: Key (nir)=(1840575123456)"

    timed_out = OperationalError("SELECT 1", {}, PgError())
    assert _reason(timed_out) == "sqlstate 57014"
    assert _reason(RuntimeError("x")) is None
