"""Review of branch wt-cpu (issue #27, second pass: statements built once, the worklist in one statement,
responses serialised in the handler, httptools and uvloop): each test shows a defect found in review
(SQLite and PostgreSQL: PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from tests.support.live_server import LiveServer


def test_one_header_sent_without_its_end_is_bounded_to_16_kib_as_h11_bounded_it(app):
    """app/api/http_protocol.py counts a header only when httptools hands it over whole (`on_header`), and
    httptools gathers a header's name and value itself, unbounded, until the next header or the end of the
    headers: a client sending one header that never ends (a slow client, 64 KiB and more of value) made the
    process hold all of it and was never refused. h11 refused any head beyond 16 KiB, complete or not."""
    with LiveServer(app) as base:
        host, port = urlparse(base).hostname, urlparse(base).port
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(16):  # 64 KiB of one header's value, its CRLF never sent
                    s.sendall(b"a" * 4096)
            except OSError:  # refused meanwhile: the server closed the connection
                pass
            chunks = []
            try:
                while chunk := s.recv(65536):  # the server answers and closes; unbounded, it waits for more
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            raw = b"".join(chunks).decode()
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head, raw[:300]
    assert '"error": "bad_request"' in body


def test_a_large_body_on_a_kept_connection_is_not_taken_for_a_long_head(app, make_api_key):
    """The fix's guard: the bytes of a body, sent in pieces, are no head's; the connection is kept and its
    next request answered."""
    body = b"{" + b" " * (40 * 1024) + b"}"  # read by the app (no criteria: a 422), the connection kept
    key = make_api_key(["persons:read"]).encode()
    head = b"POST /api/v1/persons/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"X-API-Key: " + key + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    with LiveServer(app) as base:
        host, port = urlparse(base).hostname, urlparse(base).port
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(head)
            for start in range(0, len(body), 4096):
                s.sendall(body[start : start + 4096])
            raw = b""
            while b'"details"' not in raw:  # the 422's JSON body
                chunk = s.recv(65536)
                assert chunk, raw[:300]
                raw += chunk
            assert raw.startswith(b"HTTP/1.1 422"), raw[:300]
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    assert b"".join(chunks).startswith(b"HTTP/1.1 200"), b"".join(chunks)[:300]
