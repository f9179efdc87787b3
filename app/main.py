"""The FastAPI application: routers, middleware, error handlers and shared resources."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import fastapi_offline
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.admin import links
from app.api import (
    audit,
    contracts,
    dashboard,
    exports,
    flux,
    france_travail,
    health,
    me,
    orientation,
    persons,
    pilotage,
    queued_events,
    refusals,
    webhooks,
)
from app.api.errors import install_error_handlers
from app.api.france_travail import calls_partner
from app.api.middleware import (
    AdmissionMiddleware,
    BodyDeadlineMiddleware,
    BodyLimitMiddleware,
    KnownCredentials,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
)
from app.api.openapi import install as install_openapi
from app.audit.chain import Sealer
from app.audit.checkpoint import CheckpointPublisher
from app.audit.refusals import RefusalLog
from app.clients.france_travail import FranceTravailClient
from app.db import get_engine, get_read_engine, session_factory
from app.logging import configure_logging
from app.orientation import aside
from app.security.auth import ApiKeyCache
from app.security.oidc import OidcVerifier
from app.security.shared_limits import limiters
from app.settings import Settings, get_settings

log = structlog.get_logger(__name__)

# Routes that receive files (multipart) rather than JSON; they get the upload size limit.
UPLOAD_ROUTES: list[re.Pattern[str]] = [
    re.compile(r"^/api/v1/flux/?$"),
    re.compile(r"^/api/v1/orientations/import/?$"),
    re.compile(r"^/api/v1/ft-return-files/?$"),
]

DESCRIPTION = """
Passerelle RSA is the data-exchange service of a Département between the CAF/MSA (daily beneficiary
flux), its RSA orientation platform and France Travail.

Machine clients authenticate with an API key (`X-API-Key`); people with an OIDC bearer token.
Every route declares the scope it needs. Errors are JSON: `{"error", "message", "details"}`.
"""


def _drain_queued_events(settings: Settings) -> None:
    try:
        aside.drain(settings)
    except Exception as exc:  # never keeps the service from starting: the next event post applies them
        log.error("queued_events_failed", error_type=type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Route handlers are synchronous and run in this pool. Past a few threads they only compete for the
        # interpreter lock, and a writer holding the database's write lock then gets a small share of the
        # CPU, which lengthens every other writer's wait (bench/BENCHMARKS.md, load runs): requests beyond
        # this number wait in the event loop instead, in arrival order.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.effective_request_threads
        # One long-lived client per partner: France Travail's, when it is configured.
        app.state.ft_client = FranceTravailClient(settings) if settings.ft_configured else None
        # The audit events the requests write are sealed into the chain every few seconds (issue #14).
        sealer = Sealer(app.state.engine, settings, settings.audit_seal_interval_seconds)
        sealer.start()
        # ... and a signed checkpoint of the chain published for the auditor (issue #23, item 7)
        publisher = CheckpointPublisher(app.state.engine, settings, settings.audit_checkpoint_interval_seconds)
        publisher.start()
        # Refused and missing accesses, counted per minute, written once their minute ended (issue #23)
        app.state.refusals.start()
        # Events kept aside during a file (SQLite) that a stop left unapplied: applied now (issue #27, item 3)
        await anyio.to_thread.run_sync(_drain_queued_events, settings)
        try:
            yield
        finally:
            app.state.refusals.stop()  # the current minute's counts too, before the last seal
            publisher.stop()
            sealer.stop()
            if app.state.ft_client is not None:
                app.state.ft_client.close()

    app = FastAPI(
        title="Passerelle RSA",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below from the service's own files: no CDN (issue #14)
        redoc_url=None,
    )
    install_docs(app)
    install_openapi(app)
    app.state.settings = settings
    app.state.engine = get_engine(settings)
    app.state.read_engine = get_read_engine(settings)  # pilotage reads (None: the primary)
    app.state.session_factory = session_factory(settings)
    app.state.oidc = OidcVerifier(settings)
    # Writes have threads of their own (app.api.deps.run_write): SQLite has one writer at a time.
    app.state.writers = anyio.CapacityLimiter(1 if settings.is_sqlite else settings.effective_request_threads)
    # Calls to France Travail wait in threads of their own, never in the request threads (issue #12).
    app.state.ft_threads = anyio.CapacityLimiter(settings.ft_max_concurrency)
    app.state.ft_client = None
    # per client and per source address: shared by every process through Redis or PostgreSQL (issue #27)
    app.state.rate_limiter, app.state.refusal_limiter = limiters(settings, app.state.engine)
    app.state.api_key_cache = ApiKeyCache(settings.api_key_cache_seconds)
    app.state.refusals = RefusalLog(app.state.engine)

    _install_middleware(app, settings)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(flux.router)
    app.include_router(persons.router)
    app.include_router(orientation.router)
    app.include_router(queued_events.router)
    app.include_router(contracts.router)
    app.include_router(france_travail.router)
    app.include_router(exports.router)
    app.include_router(exports.return_router)
    app.include_router(audit.router)
    app.include_router(pilotage.router)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, with their scripts and styles served by the service itself
    (pinned in pyproject.toml through fastapi-offline): a Département's intranet blocks CDNs."""

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    redoc_js = redoc_without_remote_logo((assets / "redoc.standalone.js").read_text(encoding="utf-8"))

    @app.get("/redoc/redoc.standalone.js", include_in_schema=False)
    def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Passerelle RSA - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="Passerelle RSA - API",
            redoc_js_url="/redoc/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )


# ReDoc's footer shows Redocly's logo from its CDN, which the docs' Content-Security-Policy (img-src 'self')
# blocks and an intranet cannot reach: the image is dropped from the script we serve (issue #26).
_REDOC_REMOTE_LOGO = re.compile(r'\w+\?\w+\.createElement\("img",\{alt:"redocly logo",[^}]*\}\):null')
_REDOC_LOGO_URL = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def redoc_without_remote_logo(script: str) -> str:
    """ReDoc's script without the `<img>` of Redocly's logo (and, should a new release write it otherwise,
    without its URL: the image then fails as if blocked, and ReDoc hides it)."""
    return _REDOC_REMOTE_LOGO.sub("null", script).replace(_REDOC_LOGO_URL, "")


def render_openapi() -> str:
    """The OpenAPI document as committed (openapi/openapi.json): `passerelle openapi` writes it."""
    # A fixed, throw-away configuration: the document must not depend on the machine.
    settings = Settings(database_url="sqlite:///:memory:", env="test")
    schema = create_app(settings).openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """The middleware stack, from the inside out: admission (authenticated callers, partner calls and the
    others in slots of their own), the body read within its deadline, its size and type checked first of
    all, the security headers, CORS when configured, the request's context outermost."""

    def limit_for(path: str) -> int:
        if streamed(path):
            return settings.max_upload_bytes
        return settings.max_body_bytes

    def content_types_for(_method: str, path: str) -> tuple[str, ...]:
        if streamed(path):
            return ("multipart/form-data",)
        if path == links.PATH:  # the single-use link's button (issue #26): a browser's form
            return ("application/x-www-form-urlencoded",)
        return ("application/json",)

    def streamed(path: str) -> bool:
        return any(p.match(path) for p in UPLOAD_ROUTES)

    # From the inside out: admission (authenticated callers and the others in slots of their own), the body
    # read within its deadline (before admission, but for uploads), its size and type checked first of all.
    app.state.known_credentials = KnownCredentials()
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.max_concurrent_requests,
        anonymous_limit=settings.max_anonymous_requests,
        known=app.state.known_credentials,
        streamed=streamed,
        limiter=app.state.refusal_limiter,
        on_refused=lambda scope, status, code: refusals.record(scope, status, code),
        partner=calls_partner,
        partner_limit=settings.max_partner_requests,
    )
    app.add_middleware(BodyDeadlineMiddleware, timeout=settings.body_timeout_seconds, streamed=streamed)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for, content_types_for=content_types_for)
    app.add_middleware(SecurityHeadersMiddleware, hsts=(settings.public_url or "").startswith("https://"))
    if settings.cors_origins:  # off unless configured: the API is for servers, the dashboard is same-origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Purpose", "X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware, trusted_proxies=settings.trusted_networks)
