"""The HTTP/1.1 protocol the service runs under uvicorn: uvicorn's httptools one (the C parser of
uvicorn[standard]; h11's pure-Python parser cost a sizeable share of each request's CPU, issue #27), except that
a request it cannot parse (an invalid Content-Length, a malformed header line) is answered with the service's
JSON error contract `{"error", "message", "details"}` instead of uvicorn's plain text: clients parse one error
format."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import error_body


def _json_400(msg: str) -> bytes:
    return json.dumps(error_body("bad_request", f"The HTTP request could not be read: {msg}")).encode()


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = _json_400(msg)
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
