"""ASGI middleware: request id and access log, body-size limits, content-type checks."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.logging import redact_url

log = structlog.get_logger("passerelle.access")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _send_error(send: Send, status: int, code: str, message: str, request_id: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_too_large(send: Send, limit: int, request_id: str) -> None:
    """413 for a body over the limit, whether its Content-Length says so or its bytes do."""
    await _send_error(send, 413, "payload_too_large", f"The body exceeds the limit of {limit} bytes.", request_id)


class _BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit.

    An HTTPException so that FastAPI's body reader re-raises it untouched and our JSON handler answers
    413. (Starlette's own RequestBodyLimitMiddleware answers text/plain, outside the error contract.)
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body exceeds the limit of {limit} bytes.")


class RequestContextMiddleware:
    """Gives every request an id (or keeps a sane one the caller sent), binds it to the logs, logs the access."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = 1
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Outermost handler: log the cause (redacted) and answer the JSON contract, never a trace.
            log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
            if status_holder.get("started"):
                raise
            status_holder["status"] = 500
            await _send_error(
                send,
                500,
                "internal_error",
                "An internal error occurred; it has been logged with the request id.",
                request_id,
            )
        finally:
            log.info(
                "request",
                method=scope.get("method"),
                # the path only (a query string may carry what a log must not), a download link's token masked
                path=redact_url(scope.get("path") or ""),
                status=status_holder["status"],
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


class BodyLimitMiddleware:
    """Refuses bodies over the limit (413) and unexpected content types (415) before any handler runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit_for: Callable[[str], int],
        content_types_for: Callable[[str, str], tuple[str, ...] | None],
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.content_types_for = content_types_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        request_id = scope.get("state", {}).get("request_id", "-")
        headers = dict(scope.get("headers") or [])
        limit = self.limit_for(path)
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_error(send, 400, "bad_request", "Invalid Content-Length header.", request_id)
                return
            if length > limit:
                await _send_too_large(send, limit, request_id)
                return
        else:
            length = -1
        allowed = self.content_types_for(scope["method"], path)
        if allowed is not None and (length != 0 or b"transfer-encoding" in headers):
            ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if ctype not in allowed:
                await _send_error(
                    send,
                    415,
                    "unsupported_media_type",
                    f"Content-Type must be {' or '.join(allowed)}, not {ctype or 'missing'}.",
                    request_id,
                )
                return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _send_too_large(send, limit, request_id)


class AdmissionMiddleware:
    """Admits at most `limit` requests into the application at once; the others wait here, in arrival
    order, at no cost but a coroutine.

    Why: a request holds its pooled database connection from authentication to its answer, across several
    calls to the thread pool. With more requests inside than connections, some wait for a connection while
    holding a thread and the others hold connections while waiting for a thread: a deadlock until the pool
    timeout (seen at 20 clients, bench/BENCHMARKS.md). The pools are sized above this limit (app/db.py).
    Probes (`/health`, `/ready`) are never held back.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: frozenset[str] = frozenset({"/health", "/ready"})) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)


DOCS_PATHS = ("/docs", "/redoc", "/docs-assets/")
PAGE_PATHS = ("/tableau-de-bord", "/static/")
# The dashboard: no script at all; its charts are SVG with their own <style> (pygal's)
PAGE_CSP = (b"default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            b"frame-ancestors 'none'; form-action 'self'")  # fmt: skip
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# Swagger UI and ReDoc: their own files from this service, their inline bootstrap script, ReDoc's worker
DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            b"img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'")  # fmt: skip


class SecurityHeadersMiddleware:
    """Headers every answer carries (OWASP secure headers): no MIME sniffing, no framing, no referrer, a
    content security policy, and no caching of answers that may hold personal data (`/api/`); HSTS when the
    service is published over HTTPS (`public_url`)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = path.startswith(DOCS_PATHS)
        policy = DOCS_CSP if docs else PAGE_CSP if path.startswith(PAGE_PATHS) else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", policy),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                ]
                if path.startswith("/api/"):
                    extra.append((b"cache-control", b"no-store"))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
