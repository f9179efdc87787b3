"""ASGI middleware: request id and access log, body-size limits, content-type checks, body deadlines,
admission."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import pages
from app.api.refusals import too_many
from app.errors import TooManyRequests, Unauthenticated, error_body
from app.kit.shared import off_loop
from app.logging import redact_url
from app.security.login import SESSION_COOKIE
from app.security.ratelimit import RefusalLimiter
from app.security.source import Network, scope_source

log = structlog.get_logger("passerelle.access")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    www_authenticate: bool = False,
    details: object = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    if www_authenticate:
        headers.append((b"www-authenticate", b"Bearer"))
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


INTERNAL_ERROR_MESSAGE = "An internal error occurred; it has been logged with the request id."


async def _send_internal_error(send: Send, exc: Exception, request_id: str) -> None:
    """Log the cause (its traceback, redacted) and answer the JSON contract, never a trace."""
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    await _send_error(send, 500, "internal_error", INTERNAL_ERROR_MESSAGE, request_id)


async def _send_too_many(send: Send, wait: int, request_id: str, scope: Scope | None = None) -> None:
    """429 for a source address over its limit of refused attempts (app.security.ratelimit.RefusalLimiter):
    the French page for a browser opening a page (issue #26), the JSON error for the API."""
    error = too_many(wait)
    accept = dict(scope.get("headers") or ()).get(b"accept", b"").decode("latin-1") if scope else ""
    if scope and pages.is_page_request(str(scope.get("path", "")), accept):
        body = pages.error_page(429, None, False).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()), (b"connection", b"close"), (b"retry-after", str(wait).encode()),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return
    await _send_error(send, 429, error.code, error.message, request_id, details=error.details,
                      extra=[(b"retry-after", str(wait).encode())])  # fmt: skip


async def _send_too_large(send: Send, limit: int, request_id: str) -> None:
    """413 for a body over the limit, whether its Content-Length says so or its bytes do."""
    await _send_error(send, 413, "payload_too_large", f"The body exceeds the limit of {limit} bytes.", request_id)


async def _answer_unless_started(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    error: type[Exception],
    answer: Callable[[], Awaitable[None]],
) -> None:
    """Run the app; when reading the body raises `error` (too large, too late), send `answer` unless a
    response has already started (then the connection just ends)."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except error:
        if not started:
            await answer()


class _BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit.

    An HTTPException so that FastAPI's body reader re-raises it untouched and our JSON handler answers
    413. (Starlette's own RequestBodyLimitMiddleware answers text/plain, outside the error contract.)
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body exceeds the limit of {limit} bytes.")


class RequestContextMiddleware:
    """Gives every request an id (or keeps a sane one the caller sent), binds it to the logs, logs the access."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # the address the audit records and the refusal limit counts (X-Forwarded-For of trusted proxies only)
        scope["state"]["source_address"] = scope_source(scope, self.trusted_proxies)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = 1
                message.setdefault("headers", [])
                if not any(name.lower() == b"x-request-id" for name, _ in message["headers"]):
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Outermost handler (an error SecurityHeadersMiddleware did not answer, or a response already begun)
            if status_holder.get("started"):
                log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
                raise
            status_holder["status"] = 500
            await _send_internal_error(send, exc, request_id)
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
        # Neither Content-Length nor Transfer-Encoding: no body at all (RFC 9112, 6.3), answered as an empty one
        if allowed is not None and (length > 0 or b"transfer-encoding" in headers):
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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        await _answer_unless_started(
            self.app, scope, limited_receive, send, _BodyTooLarge, lambda: _send_too_large(send, limit, request_id)
        )


class _BodyTimeout(HTTPException):
    """Raised from `receive` when a body's next bytes do not arrive in time (an HTTPException, as
    `_BodyTooLarge`, so that FastAPI's body reader lets it through and the JSON handler answers 408)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(408, _timeout_message(timeout))


def _timeout_message(timeout: float) -> str:
    return f"The request body did not arrive within {timeout:g} s."


class BodyDeadlineMiddleware:
    """A body that does not arrive in time is answered 408 (`body_timeout_seconds`), whatever the caller.

    Bodies of the JSON routes (at most `max_body_bytes`) are read whole here, before admission, within the
    deadline, then handed to the application: a slow sender never holds an admission slot, a thread or a
    connection. Uploads (`streamed` routes, up to `max_upload_bytes`) are not held in memory: each of their
    chunks must arrive within the deadline, and a late one ends the request with a 408 that frees its slot.
    uvicorn itself has no such deadline (its `timeout_keep_alive` is for idle connections between requests).
    """

    def __init__(self, app: ASGIApp, *, timeout: float, streamed: Callable[[str], bool]) -> None:
        self.app = app
        self.timeout = timeout
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id", "-")
        if self.streamed(scope["path"]):
            await self._streamed(scope, receive, send, request_id)
            return
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the caller left: nobody to answer
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            await _send_error(send, 408, "request_timeout", _timeout_message(self.timeout), request_id)
            return
        body = b"".join(chunks)
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, whenever it comes

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        complete = False

        async def deadline_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout(self.timeout) from None
            if message["type"] != "http.request" or not message.get("more_body"):
                complete = True
            return message

        await _answer_unless_started(
            self.app,
            scope,
            deadline_receive,
            send,
            _BodyTimeout,
            lambda: _send_error(send, 408, "request_timeout", _timeout_message(self.timeout), request_id),
        )


class KnownCredentials:
    """The credentials (API key, bearer token, session cookie) that authenticated in this process recently,
    kept as keyed digests (a random key of the process: nothing here is usable elsewhere).

    The admission reads it from the headers alone, before any database access: a request that carries one
    is an authenticated caller's, any other (no credential, a wrong one, or one not seen since the process
    started) is anonymous until the application has authenticated it. `app.api.deps.authenticate` adds
    each credential it accepts. Knowing a credential only chooses the pool a request waits in; the request
    is authenticated again, in full (a revoked key is refused at once)."""

    def __init__(self, ttl_seconds: float = 600.0, capacity: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.capacity = capacity
        self._key = secrets.token_bytes(32)
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()  # added to from the request threads, read from the event loop

    def _digest(self, credential: str) -> bytes:
        return hmac.new(self._key, credential.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def remember(self, credential: str) -> None:
        digest = self._digest(credential)
        with self._lock:
            self._seen[digest] = time.monotonic() + self.ttl
            self._seen.move_to_end(digest)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)

    def knows(self, credential: str) -> bool:
        digest = self._digest(credential)
        with self._lock:
            until = self._seen.get(digest)
            if until is not None and until < time.monotonic():
                del self._seen[digest]
                until = None
        return until is not None

    def known_caller(self, scope: Scope) -> bool:
        return any(self.knows(c) for c in presented_credentials(scope))


def presented_credentials(scope: Scope) -> list[str]:
    """The credentials a request carries in its headers, as `authenticate` reads them."""
    found: list[str] = []
    for name, value in scope.get("headers") or []:
        if name == b"x-api-key":
            found.append(value.decode("latin-1"))
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif name == b"cookie":
            cookie = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
            if cookie:
                found.append(cookie)
    return found


class AdmissionMiddleware:
    """Admits at most `limit` requests of authenticated callers into the application at once, and at most
    `anonymous_limit` others, in slots of their own; the others wait here, in arrival order, at no cost but
    a coroutine.

    Why a limit: a request holds its pooled database connection from authentication to its answer, across
    several calls to the thread pool. With more requests inside than connections, some wait for a connection
    while holding a thread and the others hold connections while waiting for a thread: a deadlock until the
    pool timeout (seen at 20 clients, bench/BENCHMARKS.md). The pools are sized above both limits (app/db.py).
    Why two: requests without a known credential (`KnownCredentials`: anyone, a first call after a restart,
    the webhooks and download links) must never take a slot an authenticated caller needs (issue #23). An
    upload without any credential is refused here (401) before its body: every upload route needs one.
    Why three: a request that calls a partner (France Travail) may wait for it up to its deadline; those
    requests have slots of their own (`partner_limit`), so that thirty slow refreshes never hold back a person's
    read or a worklist (issue #24 item 5). Probes (`/health`, `/ready`) are never held back. A source address
    over its limit of refused attempts (`RefusalLimiter`, issue #23) is answered 429 here when its request
    carries no credential at all (one it carries is checked by the application, whose refusal is then a 429
    too); known callers pass.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        anonymous_limit: int,
        known: KnownCredentials,
        streamed: Callable[[str], bool],
        exempt: frozenset[str] = frozenset({"/health", "/ready"}),
        limiter: RefusalLimiter | None = None,
        on_refused: Callable[[Scope, int, str], None] | None = None,
        partner: Callable[[str, str], bool] = lambda _method, _path: False,
        partner_limit: int = 1,
    ) -> None:
        self.app = app
        self.partner, self.partner_limit = partner, partner_limit
        self.limiter = limiter
        self.on_refused = on_refused or (lambda _scope, _status, _code: None)
        self.limit = limit
        self.anonymous_limit = anonymous_limit
        self.known = known
        self.streamed = streamed
        self.exempt = exempt
        self._semaphores: tuple[asyncio.Semaphore, asyncio.Semaphore, asyncio.Semaphore] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        # the request's deadlines count from here, its wait for a slot included (issue #24 item 5)
        scope.setdefault("state", {})["arrived_at"] = time.monotonic()
        if self._semaphores is None:
            limits = (self.limit, self.anonymous_limit, self.partner_limit)
            self._semaphores = (
                asyncio.Semaphore(limits[0]),
                asyncio.Semaphore(limits[1]),
                asyncio.Semaphore(limits[2]),
            )
        authenticated, anonymous, partner = self._semaphores
        if self.known.known_caller(scope):
            # a request that calls a partner waits in slots of its own: never ahead of a local read
            semaphore = partner if self.partner(scope["method"], scope["path"]) else authenticated
        elif not presented_credentials(scope) and (wait := await self._retry_after(scope)):
            request_id = scope.get("state", {}).get("request_id", "-")
            self.on_refused(scope, 429, TooManyRequests.code)
            await _send_too_many(send, wait, request_id, scope)
            return
        elif scope["method"] in BODY_METHODS and self.streamed(scope["path"]) and not presented_credentials(scope):
            request_id = scope.get("state", {}).get("request_id", "-")
            if self.limiter is not None:
                source = scope.get("state", {}).get("source_address")
                await off_loop(self.limiter.remote, self.limiter.refuse, source)
            self.on_refused(scope, 401, Unauthenticated.code)
            message = "Authentication required: send an API key (X-API-Key) or a bearer token."
            await _send_error(send, 401, Unauthenticated.code, message, request_id, www_authenticate=True)
            return
        else:
            semaphore = anonymous
        async with semaphore:
            await self.app(scope, receive, send)

    async def _retry_after(self, scope: Scope) -> int:
        if self.limiter is None:
            return 0
        source = scope.get("state", {}).get("source_address")
        return await off_loop(self.limiter.remote, self.limiter.retry_after, source)  # a shared store: in a thread


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

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
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

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            # The 500 is answered here, inside this middleware, so that it carries the headers too (Starlette's
            # ServerErrorMiddleware, and RequestContextMiddleware, sit outside it).
            await _send_internal_error(send_with_headers, exc, scope.get("state", {}).get("request_id", "-"))
