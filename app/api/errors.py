"""The HTTP shell's one error handling: any `PasserelleError` (app.errors) answered with its status, code
and message as `{"error", "message", "details"}`; request validation, the database being busy and
Starlette's own HTTP errors in the same form; a page opened without a session sent to the login."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import pages
from app.api.refusals import refusals_remote, refused
from app.errors import PasserelleError, error_body
from app.kit.shared import off_loop

log = structlog.get_logger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


class LoginRequired(Exception):
    """A person opened a page without a session: sent to the login (`/connexion`), then back to `next`."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may hold a NIR or a name.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


HINTS = {"mois": "AAAA-MM, par exemple 2026-03", "as_of": "AAAA-MM-JJ, par exemple 2026-03-31",
         "departement": "un code de département, par exemple 055"}  # fmt: skip


def html_error(request: Request, status: int, message: str | None = None,
               headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    """The French page a browser gets instead of the API's JSON error (issue #26)."""
    from app.security.login import configured

    text = pages.error_page(status, message, configured(request.app.state.settings))
    return HTMLResponse(text, status_code=status, headers=headers)


def _french_validation(details: list[dict[str, Any]]) -> str:
    names = [d["loc"][-1] for d in details if d["loc"]]
    said = "; ".join(f"« {n} » (attendu : {HINTS[n]})" if n in HINTS else f"« {n} »" for n in dict.fromkeys(names))
    return f"Paramètre incorrect : {said}." if said else "La demande est incorrecte."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/connexion?suite={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(PasserelleError)
    async def _passerelle_error(request: Request, exc: PasserelleError) -> Response:
        # a refused or missing access is recorded (issue #23); 429 past the limit (a shared limiter: in a thread)
        exc = await off_loop(refusals_remote(request), refused, request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else exc.headers
        if pages.wants_html(request):  # the French page; only the dashboard's own 422 messages are French
            return html_error(request, exc.status_code, exc.message if exc.status_code == 422 else None, headers)
        return error_response(exc.status_code, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc)
        if pages.wants_html(request):
            return html_error(request, 422, _french_validation(details))
        if any(d["type"] == "json_invalid" for d in details):
            return error_response(400, "malformed_json", "The request body is not valid JSON.", details)
        where = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(422, "invalid_input", f"The request is invalid ({where}).", details)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # Busy beyond the timeout (SQLite's writer, a PostgreSQL statement or lock timeout), unreachable, or
        # no pooled connection in time. Raised before the commit completed: nothing of the request is stored.
        log.error("database_unavailable", error_type=type(exc).__name__, reason=_reason(exc))
        if pages.wants_html(request):
            return html_error(request, 503, None, {"Retry-After": "5"})
        return error_response(
            503,
            "database_unavailable",
            "The database is busy or unreachable; nothing was recorded. Retry in a moment.",
            None,
            {"Retry-After": "5"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        if pages.wants_html(request):
            return html_error(request, exc.status_code, None, dict(exc.headers or {}) or None)
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, dict(exc.headers or {}) or None)


def _reason(exc: Exception) -> str | None:
    """What the driver said, never a value: SQLite's own message ("database is locked", "disk I/O error": no
    data in them), PostgreSQL's SQLSTATE only (its messages may quote a value)."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return None
    if type(orig).__module__.startswith("sqlite3"):
        return str(orig)[:200]
    sqlstate = getattr(orig, "sqlstate", None)
    return f"sqlstate {sqlstate}" if sqlstate else type(orig).__name__
