"""The fake France Travail's web application: one small function per group of routes."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.france_travail.fake.answers import (
    dossier_answer,
    ft_today,
    orientations_answer,
    search_answer,
    statut_answer,
)
from app.france_travail.fake.gate import SCOPES, Gate, invalid_request
from app.france_travail.fake.state import FakeState

TOKEN_PATH = "/connexion/oauth2/access_token"  # noqa: S105 - a path
API = "/partenaire"


def create_app(state: FakeState | None = None) -> FastAPI:
    """The fake, on `state` (a fresh one by default): its controls, its token endpoint and the partner APIs."""
    state = state or FakeState()
    app = FastAPI(title="Fake France Travail", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = state
    gate = Gate(state)
    _add_controls(app, state)
    _add_token(app, state)
    _add_search(app, gate)
    _add_contrat(app, gate)
    _add_diagnostic(app, gate)
    _add_orientation(app, gate)
    return app


def _add_controls(app: FastAPI, state: FakeState) -> None:
    """/_fake/: the faults (read and set at runtime), the stats and their reset."""

    @app.get("/_fake/faults")
    def read_faults() -> dict[str, Any]:
        return asdict(state.faults)

    @app.post("/_fake/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        changes = await request.json()
        for name, value in changes.items():
            if not hasattr(state.faults, name):
                return JSONResponse({"error": f"unknown fault {name}"}, status_code=400)  # type: ignore[return-value]
            setattr(state.faults, name, value)
        return asdict(state.faults)

    @app.get("/_fake/stats")
    def read_stats() -> dict[str, Any]:
        return state.stats()

    @app.post("/_fake/orientations")
    async def set_orientations(request: Request) -> dict[str, Any]:
        """What lectureOrientation answers for a NIR: `{"nir13": ..., "orientations": [...] or null (204)}`."""
        body = await request.json()
        state.known_orientations[str(body["nir13"])[:13]] = body.get("orientations")
        return {"known": len(state.known_orientations)}

    @app.post("/_fake/reset")
    def reset_stats() -> dict[str, Any]:
        state.reset()
        return state.stats()


def _token_refused(request: Request, form: Any, state: FakeState) -> tuple[str, str] | None:
    """The OAuth2 error and its description a token request earns (grant, client, realm, scopes), or None."""
    if form.get("grant_type") != "client_credentials":
        return "unsupported_grant_type", "grant"
    if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
        return "invalid_client", "client"
    if request.query_params.get("realm") not in ("/agent", "/partenaire"):
        return "invalid_request", "realm"
    scopes = frozenset(str(form.get("scope") or "").split())
    known = set().union(*SCOPES.values()) | {"profil_accedant"}
    if not scopes or not scopes <= known | {s for s in scopes if s.startswith("application_")}:
        return "invalid_scope", "scope"
    if scopes & set(state.faults.refused_scopes):
        return "invalid_scope", "scope not provisioned for this client"
    return None


def _add_token(app: FastAPI, state: FakeState) -> None:
    """The client-credentials token endpoint."""

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        waited = 0.0  # the fault's latency, cut short when the fault is lifted meanwhile (a test resets it)
        while state.faults.token_latency_ms and waited < state.faults.token_latency_ms / 1000:
            await asyncio.sleep(0.1)
            waited += 0.1
        form = await request.form()
        refused = _token_refused(request, form, state)
        if refused is not None:
            error, description = refused
            return JSONResponse({"error": error, "error_description": description}, status_code=400)
        scopes = frozenset(str(form.get("scope") or "").split())
        value = secrets.token_urlsafe(24)
        state.tokens[value] = (time.time() + state.faults.token_expires_in, scopes)
        state.tokens_issued += 1
        return JSONResponse(
            {
                "scope": " ".join(sorted(scopes)),
                "expires_in": state.faults.token_expires_in,
                "token_type": "Bearer",
                "access_token": value,
            }
        )


def _add_search(app: FastAPI, gate: Gate) -> None:
    """rechercher-usager: a person searched by NIR and birth date."""

    @app.post(f"{API}/rechercher-usager/v2/usagers/par-datenaissance-et-nir")
    async def search(request: Request) -> Response:
        refused = await gate.guard(request, "rechercher-usager")
        if refused is not None:
            return refused
        try:
            body = await request.json()
            nir, born = str(body["nir"]), str(body["dateNaissance"])
        except (ValueError, KeyError, TypeError):
            return invalid_request()
        if len(nir) not in (13, 15) or len(born) != 10:
            return invalid_request()
        return search_answer(gate.state, nir[:13])


def _add_contrat(app: FastAPI, gate: Gate) -> None:
    """contrat-usager: a person's registration status."""

    @app.get(f"{API}/contrat-usager/v2/contrat")
    async def statut(request: Request) -> Response:
        return await gate.answer_person(request, "contrat-usager", lambda nir13: statut_answer(gate.state, nir13))


def _add_diagnostic(app: FastAPI, gate: Gate) -> None:
    """diagnosticargumente: a person's diagnostic read, a diagnostic saved."""
    state = gate.state

    @app.get(f"{API}/diagnosticargumente/v4/dossiers")
    async def dossier(request: Request) -> Response:
        return await gate.answer_person(request, "diagnosticargumente", lambda nir13: dossier_answer(state, nir13))

    @app.post(f"{API}/diagnosticargumente/v4/diagnostics")
    async def save_diagnostic(request: Request) -> Response:
        nir13, body, refused = await gate.person_body(request, "diagnosticargumente")
        if refused is not None:
            return refused
        required = {"codeAppellation", "codeRome", "codeSousTypologie", "codeTypologie", "idMetierChiffre"}
        if not isinstance(body, dict) or not required <= body.keys():
            return invalid_request()
        state.diagnostics_saved.append({"nir13": nir13, **body})
        return JSONResponse({"codeRetour": "S001", "message": "Diagnostic enregistré"})


def _add_orientation(app: FastAPI, gate: Gate) -> None:
    """orientationusager: an orientation sent, the last one read back."""
    state = gate.state

    @app.post(f"{API}/orientationusager/v1/orientation")
    async def orientation(request: Request) -> Response:
        nir13, body, refused = await gate.person_body(request, "orientationusager")
        if refused is not None:
            return refused
        if (
            not isinstance(body, dict)
            or body.get("parcours") not in ("PED", "PSP", "PSO")
            or not isinstance(body.get("organisme"), str)
            or not isinstance(body.get("origine"), str)
        ):
            return invalid_request()
        day = ft_today().isoformat()
        state.orientations.setdefault(nir13, []).append(
            {  # kept as lectureOrientation gives it back (snake_case, as les-emplois' mock writes it)
                "parcours": body["parcours"],
                "organisme": body["organisme"],
                "statut": "DECIDE",
                "etat": "OUVERT",
                "date_entree_parcours": day,
                "criteres_orientation": {"origine": body["origine"]},
                "decision": {"etat_decision": "VALIDEE", "date_decision": day},
            }
        )
        return JSONResponse({"codeRetour": "S001", "message": "Orientation enregistrée"}, status_code=201)

    @app.get(f"{API}/orientationusager/v1/lectureOrientation")
    async def read_orientation(request: Request) -> Response:
        return await gate.answer_person(request, "orientationusager", lambda nir13: orientations_answer(state, nir13))
