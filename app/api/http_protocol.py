"""The HTTP/1.1 protocol the service runs under uvicorn: uvicorn's own (h11), except that a request it cannot
parse (an invalid Content-Length, a malformed header line) is answered with the service's JSON error contract
`{"error", "message", "details"}` instead of uvicorn's plain text: clients parse one error format."""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.errors import error_body


class JsonErrorsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body("bad_request", f"The HTTP request could not be read: {msg}")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
