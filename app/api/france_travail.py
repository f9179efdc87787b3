"""A person's France Travail side: what is known (no call), a refresh, the "enregistrement" of a diagnostic.

Our answers speak the convention's vocabulary (app.france_travail.mapping). Calls to France Travail run in
threads of their own (`app.state.ft_threads`, `PASSERELLE_FT_MAX_CONCURRENCY`), never in the request
threads, and end within `PASSERELLE_FT_REQUEST_DEADLINE_SECONDS`: a slow or absent France Travail answers
503 `france_travail_unavailable` with `Retry-After`, and the other routes are not held up. Every read and
call is recorded with the other personal-data reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from app.api.deps import Authorized, PersonId, SessionDep, SettingsDep, run_write
from app.clients.france_travail import Agent, FranceTravailClient, FranceTravailError, FranceTravailUnavailable
from app.db import write_transaction
from app.errors import Unprocessable
from app.france_travail import errors as ft_errors
from app.france_travail import service as ft
from app.kit.validation import InputModel
from app.persons import repository as person_service
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1/persons", tags=["france-travail"])


def _client(request: Request) -> FranceTravailClient:
    client: FranceTravailClient | None = getattr(request.app.state, "ft_client", None)
    if client is None:
        raise ft_errors.FranceTravailNotConfiguredError(ft_errors.NOT_CONFIGURED)
    return client


def _agent(principal: Principal) -> Agent:
    if principal.agent is None:
        raise Unprocessable(
            "France Travail must know the agent who acts: send X-Agent-Identifiant, X-Agent-Nom and X-Agent-Prenom.",
            [{"loc": ["header", "X-Agent-Identifiant"], "msg": "required for calls to France Travail"}],
            code="agent_required",
        )
    a = principal.agent
    return Agent(a.identifiant, a.nom, a.prenom)


def _read(session: Any, settings: Any, principal: Principal, person_id: int) -> tuple[Any, ft.PersonRef]:
    """The person (404 if not the caller's) and what the calls need; then the transaction ends: none stays
    open while France Travail is called."""
    person = person_service.get_person(session, principal, person_id)
    refs = ft.load_refs(session, settings, [person.id])
    session.commit()
    return person, refs[person.id]


# The routes that call France Travail (app.api.middleware.AdmissionMiddleware gives them slots of their own)
PARTNER_ROUTES = re.compile(r"^/api/v1/persons/[^/]+/france-travail/(refresh|diagnostics)$")


def calls_partner(method: str, path: str) -> bool:
    return method == "POST" and PARTNER_ROUTES.match(path) is not None


async def _with_france_travail(
    request: Request,
    session: Any,
    settings: Any,
    principal: Principal,
    person_id: int,
    work: Callable[[FranceTravailClient, ft.PersonRef, Agent, float], ft.Exchange],
    action: str,
) -> tuple[ft.Exchange, dict[int, dict[str, Any]], dict[str, Any]]:
    """What every route that calls France Travail does: the agent (422), the person (404), the client (503
    when not configured); `work` in France Travail's own threads within the request deadline, no database
    transaction open; then what it brought stored, the access recorded and the person's view read in one
    write transaction, committed before the answer; France Travail's own failure raised after that."""
    agent = _agent(principal)
    person, ref = await anyio.to_thread.run_sync(lambda: _read(session, settings, principal, person_id))
    client = _client(request)
    # from the request's arrival (its wait for a slot and for a France Travail thread included), on the
    # client's clock when it is not the monotonic one (tests)
    arrived = getattr(request.state, "arrived_at", None)
    start = arrived if arrived is not None and client.clock is time.monotonic else client.clock()
    deadline = start + settings.ft_request_deadline_seconds
    ex = await anyio.to_thread.run_sync(
        lambda: work(client, ref, agent, deadline), limiter=request.app.state.ft_threads
    )

    def write() -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
        with write_transaction(session):
            changes = ft.store(session, settings, [ex], "api", agent)
            person_service.audit_read(request, session, principal, action, person, person.departement_code)
            shown = ft.view(session, person.id)
        return changes, shown

    changes, shown = await run_write(request, write)
    ft_errors.raise_for_service(ex, settings)  # what was tried is stored (the calls' trace)
    return ex, changes, shown


@router.get(
    "/{person_id}/france-travail",
    summary="What France Travail last said of a person (identity, statut, diagnostic, with their dates); no call",
)
def get_france_travail(
    person_id: PersonId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.ft_read)],
) -> dict[str, Any]:
    person = person_service.get_person(session, principal, person_id)
    person_service.audit_read(request, session, principal, "ft.read", person, person.departement_code)
    return {"person_id": person.id, **ft.view(session, person.id)}


@router.post(
    "/{person_id}/france-travail/refresh",
    summary="Ask France Travail again: search (or reuse a valid jeton), statut, diagnostic; returns what changed",
    responses={
        502: {"description": "France Travail's token endpoint refused this service's client (`france_travail_error`)"},
        503: {"description": "France Travail unavailable (Retry-After), or not configured"},
        422: {"description": "No acting agent (X-Agent-* headers)"},
    },
)
async def refresh(
    person_id: PersonId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.ft_read)],
) -> dict[str, Any]:
    kinds = ("statut", "diagnostic", "orientation") if settings.ft_orientation_push else ("statut", "diagnostic")

    def work(client: FranceTravailClient, ref: ft.PersonRef, agent: Agent, deadline: float) -> ft.Exchange:
        # France Travail's orientation read alone: a scope it has not provisioned blocks only it (issue #25)
        return ft.exchange(client, settings, ref, agent, deadline=deadline, kinds=kinds, separate=("orientation",))

    ex, changes, shown = await _with_france_travail(
        request, session, settings, principal, person_id, work, "ft.refresh"
    )
    return {
        "person_id": person_id,
        "resultat": ex.outcome,
        "codeRetour": ex.code,
        "message": ex.message,
        "jetonReutilise": ex.jeton_reused,
        "changements": changes.get(person_id, {}),
        **shown,
    }


class DiagnosticIn(InputModel):
    """The convention's "Diagnostics Individus Enregistrement" (diagnostic argumenté v4 POST /diagnostics)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    codeAppellation: str = Field(min_length=1, max_length=10, pattern=r"^\d+$")
    codeRome: str = Field(min_length=5, max_length=5, pattern=r"^[A-Z]\d{4}$")
    codeTypologie: str = Field(min_length=1, max_length=40, pattern=r"^[\w-]+$")
    codeSousTypologie: str = Field(min_length=1, max_length=40, pattern=r"^[\w-]+$")
    idMetierChiffre: str = Field(min_length=1, max_length=300)


@router.post(
    "/{person_id}/france-travail/diagnostics",
    summary="Record (enregistrement) a diagnostic at France Travail for the person",
    responses={
        409: {
            "description": "France Travail answered about the person and recorded nothing: not known there, "
            "several, not certified, refused, or no NIR to search with (`france_travail_not_recorded`, with "
            "`details.resultat` and `details.codeRetour`)"
        },
        422: {"description": "Invalid input, or no acting agent (X-Agent-* headers)"},
        502: {
            "description": "France Travail failed: its token endpoint refused our client, it rejected the call "
            "(R997) or answered an error or a malformed answer (`france_travail_error`)"
        },
        503: {"description": "France Travail unavailable (Retry-After), or not configured"},
    },
)
async def save_diagnostic(
    person_id: PersonId,
    body: DiagnosticIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.ft_write)],
) -> dict[str, Any]:
    def work(client: FranceTravailClient, ref: ft.PersonRef, agent: Agent, deadline: float) -> ft.Exchange:
        return ft.save_diagnostic(client, settings, ref, agent, body.model_dump(), deadline=deadline)

    ex, _changes, _shown = await _with_france_travail(
        request, session, settings, principal, person_id, work, "ft.diagnostic"
    )
    ft_errors.raise_unless_recorded(ex)
    return {"person_id": person_id, "resultat": "enregistre", "codeRetour": ex.code}


__all__ = ["FranceTravailError", "FranceTravailUnavailable", "router"]
