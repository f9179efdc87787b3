"""Slow clients (issue #23, item 1): connections that send their headers and part of a body, then stall,
never stop the API. A body that does not arrive in time is answered 408 and frees what it held; a request
without a credential never takes a slot an authenticated caller needs."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import httpx

from app.api.middleware import KnownCredentials
from app.main import create_app
from tests.support.live_server import LiveServer

# The start of a body announced as 100,000 bytes
PARTIAL = {
    "application/json": b'{"nir": "1',
    "multipart/form-data; boundary=x": b'--x\r\nContent-Disposition: form-data; name="file"; filename="f.xml"\r\n\r\n<',
}


def _stall(host: str, port: int, path: str, content_type: str, extra: str = "") -> socket.socket:
    s = socket.create_connection((host, port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n{extra}\r\n"
    s.sendall(head.encode() + PARTIAL[content_type])
    return s


def _answer(s: socket.socket) -> str:
    chunks = []
    try:
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks).decode("latin-1")


def test_fifty_slow_clients_do_not_stop_authenticated_callers(db, make_api_key):
    # Few slots, so that stalled uploads holding the authenticated callers' would stop them
    settings = db.model_copy(
        update={"body_timeout_seconds": 2.0, "max_concurrent_requests": 3, "max_anonymous_requests": 2}
    )
    key = make_api_key(["persons:read", "flux:write"])
    newcomer = make_api_key(["persons:read"])
    with LiveServer(create_app(settings)) as base:
        host, port = urlparse(base).hostname, urlparse(base).port
        assert host and port
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
            stalled: list[socket.socket] = []
            anonymous_uploads: list[socket.socket] = []
            try:
                for _ in range(40):  # JSON bodies, anonymous
                    stalled.append(_stall(host, port, "/api/v1/persons/search", "application/json"))
                for _ in range(5):  # uploads with a credential nobody issued
                    fake = "prsa_aaaaaaaaaaaa_" + "b" * 43
                    multipart = "multipart/form-data; boundary=x"
                    stalled.append(_stall(host, port, "/api/v1/flux", multipart, f"X-API-Key: {fake}\r\n"))
                for _ in range(5):  # uploads without any credential
                    anonymous_uploads.append(_stall(host, port, "/api/v1/flux", "multipart/form-data; boundary=x"))
                time.sleep(0.5)  # every one of them is in the server, stalled

                started = time.monotonic()
                me = http.get("/api/v1/me", headers={"X-API-Key": key})
                search = http.post("/api/v1/persons/search", headers={"X-API-Key": key}, json={"nir": "1" * 15})
                elapsed = time.monotonic() - started
                assert me.status_code == 200, me.text
                assert search.status_code in (200, 422), search.text
                assert elapsed < 1.0, f"authenticated callers waited {elapsed:.2f} s behind slow clients"

                for s in anonymous_uploads:  # refused at once, before their body
                    raw = _answer(s)
                    assert raw.startswith("HTTP/1.1 401"), raw
                    assert json.loads(raw.partition("\r\n\r\n")[2])["error"] == "unauthenticated"
                for s in stalled:  # answered 408 once their body is late, in the service's error format
                    raw = _answer(s)
                    head, _, body = raw.partition("\r\n\r\n")
                    assert head.startswith("HTTP/1.1 408") and "application/json" in head, raw
                    answer = json.loads(body)
                    assert answer["error"] == "request_timeout" and "details" in answer, answer
                    assert answer["message"] == "The request body did not arrive within 2 s."
                # The slots are free again: a caller never seen before is served at once
                started = time.monotonic()
                assert http.get("/api/v1/me", headers={"X-API-Key": newcomer}).status_code == 200
                assert time.monotonic() - started < 1.0
            finally:
                for s in stalled + anonymous_uploads:
                    s.close()


def test_known_credentials_are_those_accepted_recently():
    known = KnownCredentials(ttl_seconds=60)
    known.remember("prsa_key")
    known.remember("a.jwt.token")
    known.remember("sealed-cookie")
    for headers in (
        [(b"x-api-key", b"prsa_key")],
        [(b"authorization", b"Bearer a.jwt.token")],
        [(b"authorization", b"bearer prsa_key")],
        [(b"cookie", b"theme=dark; passerelle_session=sealed-cookie")],
    ):
        assert known.known_caller({"headers": headers}), headers
    for headers in (
        [],
        [(b"x-api-key", b"prsa_other")],
        [(b"authorization", b"Basic prsa_key")],
        [(b"cookie", b"other=sealed-cookie")],
    ):
        assert not known.known_caller({"headers": headers}), headers
    expired = KnownCredentials(ttl_seconds=0)
    expired.remember("prsa_key")
    assert not expired.known_caller({"headers": [(b"x-api-key", b"prsa_key")]})
