"""The FastAPI application: routers, middleware, error handlers and shared resources."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from app import __version__
from app.api import audit, exports, flux, france_travail, health, me, orientation, persons, pilotage, webhooks
from app.clients.france_travail import FranceTravailClient
from app.db import get_engine, session_factory
from app.errors import install_error_handlers
from app.logging import configure_logging
from app.middleware import AdmissionMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from app.security.oidc import OidcVerifier
from app.settings import Settings, get_settings

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
        try:
            yield
        finally:
            if app.state.ft_client is not None:
                app.state.ft_client.close()

    app = FastAPI(
        title="Passerelle RSA",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = get_engine(settings)
    app.state.session_factory = session_factory(settings)
    app.state.oidc = OidcVerifier(settings)
    # Writes have threads of their own (app.api.deps.run_write): SQLite has one writer at a time.
    app.state.writers = anyio.CapacityLimiter(1 if settings.is_sqlite else settings.effective_request_threads)
    # Calls to France Travail wait in threads of their own, never in the request threads (issue #12).
    app.state.ft_threads = anyio.CapacityLimiter(settings.ft_max_concurrency)
    app.state.ft_client = None

    def limit_for(path: str) -> int:
        if any(p.match(path) for p in UPLOAD_ROUTES):
            return settings.max_upload_bytes
        return settings.max_body_bytes

    def content_types_for(_method: str, path: str) -> tuple[str, ...]:
        if any(p.match(path) for p in UPLOAD_ROUTES):
            return ("multipart/form-data",)
        return ("application/json",)

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for, content_types_for=content_types_for)
    app.add_middleware(AdmissionMiddleware, limit=settings.max_concurrent_requests)
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(flux.router)
    app.include_router(persons.router)
    app.include_router(orientation.router)
    app.include_router(france_travail.router)
    app.include_router(exports.router)
    app.include_router(exports.return_router)
    app.include_router(audit.router)
    app.include_router(pilotage.router)
    app.include_router(webhooks.router)
    return app
