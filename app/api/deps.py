"""Dependencies shared by the routers: the request's unit of work, settings, and the authenticated caller."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Annotated, Any, TypeVar

import anyio
import structlog
from fastapi import Depends, Header, Path, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from pydantic import AfterValidator, BaseModel, BeforeValidator
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.api.errors import LoginRequired
from app.db import on_replica, unit_of_work
from app.errors import TooManyRequests, Unauthenticated, Unprocessable
from app.kit.validation import day_range_problem
from app.security import login
from app.security.auth import (
    Agent,
    Principal,
    authenticate_api_key,
    authenticate_bearer,
    header_text,
    parse_agent,
    require_scope,
)
from app.security.scopes import Scope
from app.settings import Settings

log = structlog.get_logger(__name__)


T = TypeVar("T")
PURPOSE_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


async def get_settings_dep(request: Request) -> Settings:  # async: no hop to a thread for an attribute
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work, one per request (authentication and the handler share it, so a request
    never holds two pooled connections). Committed when the handler returns, rolled back on any error.

    Begun in the event loop (a session without a connection yet: no I/O), ended in a thread, as FastAPI
    ends a synchronous one (`contextmanager_in_threadpool`: a limiter of its own, never waiting for the
    request threads): one hop to a thread fewer per request (issue #27)."""
    work = unit_of_work(request.app.state.session_factory)
    session = work.__enter__()
    ending = anyio.CapacityLimiter(1)
    try:
        yield session
    except Exception as exc:
        if not await anyio.to_thread.run_sync(work.__exit__, type(exc), exc, exc.__traceback__, limiter=ending):
            raise
    else:
        await anyio.to_thread.run_sync(work.__exit__, None, None, None, limiter=ending)


# scope="function": the session is committed (or rolled back) when the handler returns, before the response
# is sent. A 2xx therefore always follows its commit, and a failed commit answers an error (issue #8).
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def aggregate_read(request: Request, session: Session, work: Callable[[Connection], T]) -> T:
    """An aggregate read (tables, indicator, dashboard: no personal data) on the read replica when one is set
    and has caught up with the primary (`app.db.on_replica`), else on the primary."""
    state = request.app.state
    return on_replica(session, state.read_engine, state.settings.database_read_max_wait_ms, work)


def model_response(model: BaseModel) -> Response:
    """The answer of a synchronous handler whose `response_model` is `model`'s class, serialised in the
    handler's thread: the bytes FastAPI would send (its `dump_json` of the response model, by alias, the same
    `application/json` response), without its check of the returned value again in another hop to a thread
    (the model was validated when built; issue #27). The route keeps `response_model`: the OpenAPI document
    does not change."""
    return Response(type(model).__pydantic_serializer__.to_json(model, by_alias=True), media_type="application/json")


async def run_write(request: Request, work: Callable[[], T]) -> T:
    """Run the writing part of a request in the writers' own threads (`app.state.writers`: one on SQLite,
    which has one writer at a time anyway). A writer waiting for the database's write lock (an ingestion
    holds it for the length of a file) then never holds a thread that readers need: the others wait in
    the event loop, and reads go on (issue #8)."""
    return await anyio.to_thread.run_sync(work, limiter=request.app.state.writers)


api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="Machine clients: the API key.")
bearer_scheme = HTTPBearer(auto_error=False, description="People: an OIDC access token (JWT).")


def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str | None, Depends(api_key_scheme)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
    x_agent_identifiant: Annotated[
        str | None,
        Header(description="API clients acting for an agent: the agent's identifier (recorded with each access)"),
    ] = None,
    x_agent_nom: Annotated[str | None, Header(description="The agent's last name (UTF-8)")] = None,
    x_agent_prenom: Annotated[str | None, Header(description="The agent's first name (UTF-8)")] = None,
    x_purpose: Annotated[
        str | None,
        Header(description="Why the caller accesses the data (recorded with each access; 1-200 characters)"),
    ] = None,
) -> Principal:
    if x_purpose is not None and not PURPOSE_RE.match(header_text(x_purpose)):  # spaces only: refused, as documented
        raise Unprocessable(
            "X-Purpose must be 1-200 printable characters (no control character).",
            [{"loc": ["header", "X-Purpose"], "msg": "1-200 printable characters"}],
            code="invalid_purpose_header",
        )
    keys = request.app.state.api_key_cache  # keys accepted in the last seconds (app.security.auth.ApiKeyCache)
    page = request.method == "GET" and request.url.path.startswith(login.PAGES)
    cookie = login.session_content(settings, session, request.cookies.get(login.SESSION_COOKIE)) if page else None
    if api_key:
        principal, credential = authenticate_api_key(session, settings, api_key, keys), api_key
    elif bearer is not None and bearer.credentials.startswith("prsa_"):
        principal, credential = authenticate_api_key(session, settings, bearer.credentials, keys), bearer.credentials
    elif bearer is not None:
        principal = authenticate_bearer(request.app.state.oidc, settings, bearer.credentials)
        credential = bearer.credentials
    elif cookie and cookie.get("token"):  # a person logged in through the browser (pages only)
        principal = authenticate_bearer(request.app.state.oidc, settings, str(cookie["token"]))
        credential = request.cookies[login.SESSION_COOKIE]
    elif cookie:  # a person let in by a single-use link (pages only, issue #26)
        principal = link_principal(cookie)
        credential = request.cookies[login.SESSION_COOKIE]
    elif page and login.configured(settings):
        raise LoginRequired(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    else:
        raise Unauthenticated("Authentication required: send an API key (X-API-Key) or a bearer token.")
    # Its next requests wait in the authenticated callers' slots (app.api.middleware.AdmissionMiddleware)
    request.app.state.known_credentials.remember(credential)
    if principal.kind == "client":
        agent = parse_agent(x_agent_identifiant, x_agent_nom, x_agent_prenom)
        if agent is not None:
            principal = dataclasses.replace(principal, agent=agent)
    structlog.contextvars.bind_contextvars(
        client_id=principal.log_id(), agent_id=principal.agent.identifiant if principal.agent else None
    )
    request.state.principal = principal  # known before its 429 or 403: the refusal is recorded as its own
    wait = request.app.state.rate_limiter.take(principal.id)
    if wait:
        log.warning("rate_limited", retry_after=wait)
        raise TooManyRequests(f"Too many requests from this client; retry in {wait} s.", wait)
    for scope in security_scopes.scopes:
        require_scope(principal, scope)
    return principal


def link_principal(cookie: dict[str, Any]) -> Principal:
    """The person a single-use link let in: the dashboard (`pilotage:read`) of its one département."""
    name = str(cookie.get("name") or "-")
    prenom, _, nom = name.partition(" ")
    return Principal(
        kind="user",
        id=f"lien:{int(cookie['link'])}",
        name=name,
        scopes=frozenset({Scope.pilotage_read.value}),
        departements=frozenset({str(cookie["dep"])}),
        agent=Agent(identifiant=f"lien:{int(cookie['link'])}", nom=nom or "-", prenom=prenom or "-"),
    )


def Authorized(scope: str) -> Any:
    """`principal: Annotated[Principal, Authorized("persons:read")]`: authenticate and require `scope`."""
    return Security(authenticate, scopes=[scope])


# Identifiers in paths: bounded to what the columns hold (an out-of-range id is a 422, not a driver error).
PersonId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A person's id")]
FileId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A flux file's id")]


def _iso_day(value: Any) -> Any:
    """A date in a query string is written YYYY-MM-DD, nothing else: pydantic would also take `0` (a Unix
    timestamp, 1970-01-01) or `2026-12-06T10:00`, and a figure would silently be computed for another day."""
    if isinstance(value, date) or (isinstance(value, str) and ISO_DAY_RE.fullmatch(value)):
        return value
    raise ValueError("a date is written YYYY-MM-DD")


def _day_in_range(value: date) -> date:
    problem = day_range_problem(value)
    if problem:
        raise ValueError(problem)
    return value


ISO_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
IsoDate = Annotated[date, BeforeValidator(_iso_day), AfterValidator(_day_in_range)]
"""Every date of a query string or a form: YYYY-MM-DD, between app.kit.validation's FIRST_DAY and LAST_DAY
(otherwise a 422 naming the parameter)."""
