"""The HTTP/1.1 protocol the service runs under uvicorn: uvicorn's httptools one (the C parser of
uvicorn[standard]; h11's pure-Python parser cost a sizeable share of each request's CPU, issue #27), except that
a request it cannot parse (an invalid Content-Length, a malformed header line) is answered with the service's
JSON error contract `{"error", "message", "details"}` instead of uvicorn's plain text: clients parse one error
format. The request line and headers are bounded as h11 bounded them (16 KiB, its default under uvicorn):
httptools has no bound of its own, and a client could otherwise make the process hold megabytes of headers."""

from __future__ import annotations

import json

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import error_body


def _json_400(msg: str) -> bytes:
    return json.dumps(error_body("bad_request", f"The HTTP request could not be read: {msg}")).encode()


MAX_HEAD_BYTES = 16 * 1024  # h11's max_incomplete_event_size by default: the request line and the headers


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0
    # httptools gathers one header's name and value itself, unbounded, before `on_header`: the bytes received
    # while a head is unfinished (from a message's end, or the connection's start, to its headers' end) are
    # bounded too, a header that never ends included
    _head_pending = True
    _heads_done = 0
    _pending_bytes = 0

    def data_received(self, data: bytes) -> None:
        pending, heads = self._head_pending, self._heads_done
        super().data_received(data)
        if pending and self._head_pending and heads == self._heads_done and not self.transport.is_closing():
            self._pending_bytes += len(data)  # the whole chunk within one unfinished head
            if self._pending_bytes > MAX_HEAD_BYTES:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("request line and headers too long")

    def on_headers_complete(self) -> None:
        self._head_pending, self._heads_done, self._pending_bytes = False, self._heads_done + 1, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_pending = True
        super().on_message_complete()

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:  # uvicorn answers it with send_400_response, as h11's refusal
            raise httptools.HttpParserError("request line and headers too long")

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
