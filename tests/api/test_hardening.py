"""Hardening (issue #14): security headers, CORS off unless configured, per-client rate limits (429 with
Retry-After), the documentation served without any CDN, a 403 that names the scope as clients write it,
pilotage of a département not granted answering 404, a request uvicorn cannot parse answered in JSON, and
the authorisation matrix by département (own or other, by id and by search)."""

from __future__ import annotations

import re
import socket
from urllib.parse import urlparse

from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux
from tests.support.live_server import LiveServer


def test_security_headers_on_every_answer(client, make_api_key):
    key = make_api_key(["persons:read"])
    api = client.get("/api/v1/me", headers={"X-API-Key": key})
    for name in ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"):
        assert name in api.headers, name
    assert api.headers["cache-control"] == "no-store" and api.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in api.headers["content-security-policy"]
    refused = client.get("/api/v1/me")
    assert refused.status_code == 401 and refused.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in api.headers  # no HTTPS public URL configured


def test_the_documentation_loads_nothing_from_outside(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert sources and all(not urlparse(s).netloc for s in sources), sources
    for asset in (
        "/docs-assets/swagger-ui-bundle.js",
        "/docs-assets/swagger-ui.css",
        "/docs-assets/redoc.standalone.js",
    ):
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000, asset
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text
    assert all(not urlparse(s).netloc for s in re.findall(r'src="([^"]+)"', redoc.text))
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/openapi.json").json()["info"]["title"] == "Passerelle RSA"


def test_cors_is_off_unless_origins_are_configured(db, make_api_key):
    preflight = {"Origin": "https://intranet.departement.fr", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(db)) as c:
        assert "access-control-allow-origin" not in c.options("/api/v1/me", headers=preflight).headers
    with TestClient(create_app(db.model_copy(update={"cors_origins": ["https://intranet.departement.fr"]}))) as c:
        answer = c.options("/api/v1/me", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://intranet.departement.fr"
        other = c.options("/api/v1/me", headers=preflight | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_go_on(db, make_api_key):
    limited = db.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 3})
    greedy, other = make_api_key(["persons:read"]), make_api_key(["persons:read"])
    with TestClient(create_app(limited)) as c:
        codes = [c.get("/api/v1/me", headers={"X-API-Key": greedy}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = c.get("/api/v1/me", headers={"X-API-Key": greedy})
        assert refused.json()["error"] == "too_many_requests" and int(refused.headers["retry-after"]) >= 1
        assert c.get("/api/v1/me", headers={"X-API-Key": other}).status_code == 200
    with TestClient(create_app(db.model_copy(update={"rate_limit_per_minute": 0}))) as c:
        assert {c.get("/api/v1/me", headers={"X-API-Key": greedy}).status_code for _ in range(30)} == {200}


def test_403_names_the_scope_as_written(client, make_api_key):
    key = make_api_key(["persons:read"])
    r = client.get("/api/v1/pilotage/orientation?from=2024-01-01&to=2024-01-31", headers={"X-API-Key": key})
    assert r.status_code == 403 and "'pilotage:read'" in r.json()["message"] and "Scope." not in r.text
    assert r.json()["details"] == {"scope": "pilotage:read"}


def test_a_departement_not_granted_is_not_found_by_id_by_search_or_in_pilotage(db, client, make_api_key, tmp_path):
    assert ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))])).status == "applied"
    every_scope = ["persons:read", "orientation:write", "ft:read", "ft:write", "pilotage:read", "audit:read",
                   "exports:read", "exports:run", "flux:write"]  # fmt: skip
    own, other = make_api_key(every_scope, ["055"]), make_api_key(every_scope, ["054"])
    found = client.post("/api/v1/persons/search", headers={"X-API-Key": own},
                        json={"nir": NIR_A, "date_naissance": "1990-01-15"}).json()["items"]  # fmt: skip
    pid = found[0]["id"]
    by_id = [("GET", f"/api/v1/persons/{pid}"), ("GET", f"/api/v1/persons/{pid}/episodes"),
             ("GET", f"/api/v1/persons/{pid}/france-travail"), ("GET", f"/api/v1/audit/persons/{pid}"),
             ("POST", f"/api/v1/persons/{pid}/events")]  # fmt: skip
    for method, url in by_id:
        body = {"type": "invitation", "date": "2024-03-02"} if method == "POST" else None
        expected = 201 if method == "POST" else 200
        assert client.request(method, url, headers={"X-API-Key": own}, json=body).status_code == expected, url
        answer = client.request(method, url, headers={"X-API-Key": other}, json=body)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found", (url, answer.text)
    search = client.post("/api/v1/persons/search", headers={"X-API-Key": other},
                         json={"nir": NIR_A, "date_naissance": "1990-01-15"})  # fmt: skip
    assert search.status_code == 200 and search.json()["items"] == []
    for url in ("/api/v1/pilotage/orientation?from=2024-01-01&to=2024-12-31&departement=055",
                "/api/v1/worklist?departement=055", "/api/v1/exports?departement=055",
                "/api/v1/audit/accesses?departement=055"):  # fmt: skip
        assert client.get(url, headers={"X-API-Key": own}).status_code == 200, url
        assert client.get(url, headers={"X-API-Key": other}).status_code == 404, url
    worklist = client.get("/api/v1/worklist", headers={"X-API-Key": other})
    assert worklist.status_code == 200 and worklist.json()["items"] == []


def test_a_request_uvicorn_cannot_parse_gets_the_json_error(app):
    with LiveServer(app) as base:
        host, port = urlparse(base).hostname, urlparse(base).port
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"POST /api/v1/persons/search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
            chunks = []
            while chunk := s.recv(65536):  # the server closes the connection after its answer
                chunks.append(chunk)
            raw = b"".join(chunks).decode()
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head, raw
    assert '"error": "bad_request"' in body and '"details"' in body


def test_headers_beyond_16_kib_get_the_json_400_and_the_connection_closed(app):
    """httptools bounds nothing itself: the protocol bounds the request line and headers as h11 did."""
    with LiveServer(app) as base:
        host, port = urlparse(base).hostname, urlparse(base).port
        answers = []
        for size in (8 * 1024, 40 * 1024):
            with socket.create_connection((host, port), timeout=5) as s:
                big = b"X-Big: " + b"a" * size
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\nConnection: close\r\n\r\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
                answers.append(b"".join(chunks).decode())
    assert answers[0].startswith("HTTP/1.1 200"), answers[0][:200]
    head, _, body = answers[1].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head, answers[1][:300]
    assert '"error": "bad_request"' in body
