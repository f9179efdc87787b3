"""Small helpers shared by tests."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from app.api.deps import authenticate

# the probes, the API documentation (Swagger UI, ReDoc: public, as /openapi.json), the browser login
UNAUTHENTICATED_PATHS = {
    "/health",
    "/ready",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/redoc/redoc.standalone.js",  # ReDoc's script, served here (no CDN)
    "/connexion",
    "/connexion/retour",
    "/deconnexion",
    "/",  # the landing page (issue #26)
    "/connexion/lien",  # a single-use link: the token is the credential (issue #26)
}  # the browser login (dashboard)
# Routes open to any authenticated caller whatever its scopes (documented in README).
ANY_SCOPE_PATHS = {"/api/v1/me"}
# Routes authenticated by a partner's signature over the body instead of a key or token (each tested for
# 401 without or with a wrong signature: tests/integrations/rdv_insertion/test_rdv_insertion.py).
SIGNED_PATHS = {"/api/v1/webhooks/rdv-insertion/{departement}"}
# Routes whose URL is the credential: a download link e-mailed to France Travail's agents (long, random,
# expiring, recorded; each refusal tested in tests/exports/test_exports.py).
LINK_PATHS = {"/api/v1/exports/download/{token}"}


def declared_scopes(route: Any) -> list[list[str]] | None:
    """The scopes each `authenticate` dependency of a route requires, or None if it never authenticates."""
    found: list[list[str]] = []

    def walk(dependant: Any) -> None:
        for dep in dependant.dependencies:
            if dep.call is authenticate:
                found.append(list(dep.own_oauth_scopes or []))
            walk(dep)

    walk(route.dependant)
    return found or None


def api_routes(app: Any) -> list[Any]:
    """Every API route with its effective path and dependencies (routers included with prefixes)."""
    return [ctx for ctx in iter_route_contexts(app.routes) if isinstance(ctx.original_route, APIRoute)]


def example_path(path: str) -> str:
    """Fill path parameters with plausible values."""
    return re.sub(r"\{[^}]+\}", "1", path)


def upload_flux(client, key, path, **form):
    """POST a flux file as a CAF depositor does."""
    with open(path, "rb") as fh:
        return client.post(
            "/api/v1/flux",
            headers={"X-API-Key": key},
            files={"file": (path.name, fh, "application/xml")},
            data={k: str(v) for k, v in form.items()},
        )
