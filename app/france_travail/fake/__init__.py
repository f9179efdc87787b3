"""A fake France Travail (issue #12): the token endpoint and the partner APIs with the shapes and codes of
shared/formats/france-travail-api.md, a population derived from the NIR (so that `flux generate`'s
persons are known, unknown, ambiguous or not certified, always the same way for a seed), header and scope
checks like the real one, and faults set at start or at runtime. Tests and demos never call the real one.

    passerelle fake-ft serve --port 8900 --seed 1

Runtime faults: `POST /_fake/faults` with a JSON object (see `Faults`); `GET /_fake/faults` reads them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

TOKEN_PATH = "/connexion/oauth2/access_token"  # noqa: S105 - a path
API = "/partenaire"
SCOPES = {
    "rechercher-usager": {"api_rechercher-usagerv2", "rechercheusager"},
    "contrat-usager": {"api_contrat-usagerv2", "statutcontratusager"},
    "diagnosticargumente": {"api_diagnosticargumentev4", "diagnosticusageragent"},
    "orientationusager": {"api_orientationusagerv1", "orientationusager"},
}
AGENT_HEADERS = ("pa-nom-agent", "pa-prenom-agent", "pa-identifiant-agent")


@dataclass
class Faults:
    """What the fake does wrong, by probability per call (0 to 1) or fixed values."""

    latency_ms: int = 0  # added to every API call
    latency_jitter_ms: int = 0
    rate_503: float = 0.0
    rate_r999: float = 0.0
    rate_429: float = 0.0
    retry_after: int | None = 1  # seconds given with a 429; None: no Retry-After header
    rate_malformed: float = 0.0  # a 200 whose body is not JSON
    rate_reset: float = 0.0  # the connection is closed without an answer
    token_latency_ms: int = 0
    token_expires_in: int = 1499
    jeton_ttl_seconds: int = 86400
    error_persons_percent: int = 0  # this share of the population is answered R998 (a service in error)


@dataclass
class FakeState:
    seed: int = 1
    client_id: str = "passerelle-fake"
    client_secret: str = "fake-secret"  # noqa: S105 - the fake's own, documented
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    calls: int = 0
    diagnostics_saved: list[dict[str, Any]] = field(default_factory=list)
    orientations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # NIR -> orientations received
    call_times: list[float] = field(default_factory=list)  # when each API call arrived (monotonic)

    def kind(self, nir13: str) -> str:
        """Who a NIR is at France Travail, the same for a seed: 70 % known and certified, 10 % known not
        certified, 10 % unknown, 5 % several matches, 5 % not attached to the caller's structure (R002);
        `error_persons_percent` of them (taken from the top) are answered R998 instead."""
        n = int(hashlib.sha256(f"{self.seed}|{nir13}".encode()).hexdigest(), 16) % 100
        if n >= 100 - self.faults.error_persons_percent:
            return "error"
        if n < 70:
            return "certified"
        if n < 80:
            return "not_certified"
        if n < 90:
            return "unknown"
        if n < 95:
            return "ambiguous"
        return "not_attached"

    def stats(self) -> dict[str, Any]:
        """Calls received, and the most started in any one-second window (to check a client's rate cap)."""
        return {
            "calls": self.calls,
            "max_calls_in_one_second": most_in_one_second(self.call_times),
            "orientations": sum(len(v) for v in self.orientations.values()),
            "diagnostics_saved": len(self.diagnostics_saved),
        }


def most_in_one_second(times: list[float]) -> int:
    """The most moments of `times` (seconds) that fall in any one-second window."""
    ordered, most, first = sorted(times), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def _jeton(nir13: str, ttl: int) -> str:
    data = {
        "vers": "1",
        "uuid": str(uuid.uuid4()),
        "expire": int((time.time() + ttl) * 1000),
        "type": "USAGER",
        "data": f"{uuid.uuid4()}#{base64.b64encode(nir13.encode()).decode()}",
    }
    return base64.b64encode(json.dumps(data).encode()).decode()


def _read_jeton(value: str) -> tuple[str, int] | None:
    try:
        data = json.loads(base64.b64decode(value))
        return base64.b64decode(data["data"].split("#", 1)[1]).decode(), int(data["expire"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def create_app(state: FakeState | None = None) -> FastAPI:
    state = state or FakeState()
    app = FastAPI(title="Fake France Travail", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = state
    rng = random.Random(state.seed)  # noqa: S311 - faults drawn reproducibly, not secrets

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

    @app.post("/_fake/reset")
    def reset_stats() -> dict[str, Any]:
        state.calls = 0
        state.call_times.clear()
        state.orientations.clear()
        state.diagnostics_saved.clear()
        return state.stats()

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        if state.faults.token_latency_ms:
            await asyncio.sleep(state.faults.token_latency_ms / 1000)
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "grant"}, status_code=400)
        if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
            return JSONResponse({"error": "invalid_client", "error_description": "client"}, status_code=400)
        if request.query_params.get("realm") not in ("/agent", "/partenaire"):
            return JSONResponse({"error": "invalid_request", "error_description": "realm"}, status_code=400)
        scopes = frozenset(str(form.get("scope") or "").split())
        known = set().union(*SCOPES.values()) | {"profil_accedant"}
        if not scopes or not scopes <= known | {s for s in scopes if s.startswith("application_")}:
            return JSONResponse({"error": "invalid_scope", "error_description": "scope"}, status_code=400)
        value = secrets.token_urlsafe(24)
        state.tokens[value] = (time.time() + state.faults.token_expires_in, scopes)
        return JSONResponse(
            {
                "scope": " ".join(sorted(scopes)),
                "expires_in": state.faults.token_expires_in,
                "token_type": "Bearer",
                "access_token": value,
            }
        )

    async def guard(request: Request, api: str) -> Response | None:
        """What the real one checks before anything: the token, its scopes, the agent headers; then the
        faults the fake was told to make."""
        state.calls += 1
        state.call_times.append(time.monotonic())
        auth = request.headers.get("authorization", "")
        known = state.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        if known is None or known[0] < time.time():
            return JSONResponse({"message": "invalid or expired token"}, status_code=401)
        if not SCOPES[api] <= known[1]:
            return JSONResponse({"message": "scope missing"}, status_code=403)
        for name in AGENT_HEADERS:
            value = request.headers.get(name)
            if value is None:
                return RedirectResponse("/login", status_code=302)  # what the real one does
            if not value.strip():
                return JSONResponse({"message": f"{name} is empty"}, status_code=401)
            if "|" in value:
                return JSONResponse({"message": f"{name} holds a forbidden character"}, status_code=400)
        f = state.faults
        if f.latency_ms or f.latency_jitter_ms:
            await asyncio.sleep((f.latency_ms + rng.randint(0, max(f.latency_jitter_ms, 0))) / 1000)
        draw = rng.random()
        if draw < f.rate_429:
            headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
            return JSONResponse({"message": "too many requests"}, status_code=429, headers=headers)
        draw -= f.rate_429
        if draw < f.rate_503:
            return JSONResponse({"codeErreur": "JCS0011G", "codeHttp": 503, "message": "unavailable"}, status_code=503)
        draw -= f.rate_503
        if draw < f.rate_r999:
            return JSONResponse({"codeRetour": "R999", "message": "service indisponible"}, status_code=503)
        draw -= f.rate_r999
        if draw < f.rate_malformed:
            return PlainTextResponse('{"codeRetour": "S0', status_code=200, media_type="application/json")
        draw -= f.rate_malformed
        if draw < f.rate_reset:
            # the connection is cut mid-answer: a body shorter than announced, which the server then drops
            return Response(b'{"codeRetour": "S0', headers={"content-length": "4096"}, media_type="application/json")
        return None

    def person(request: Request) -> tuple[str | None, Response | None]:
        value = request.headers.get("ft-jeton-usager")
        read = _read_jeton(value) if value else None
        if read is None:
            return None, JSONResponse({"codeRetour": "R997", "message": "jeton usager invalide"}, status_code=400)
        nir13, expire = read
        if expire < time.time() * 1000:
            return None, JSONResponse({"message": "jeton usager expiré"}, status_code=401)
        return nir13, None

    async def for_person(request: Request, api: str) -> tuple[str | None, Response | None]:
        """The checks of a per-person call: the guard's, then the ft-jeton-usager's."""
        refused = await guard(request, api)
        if refused is not None:
            return None, refused
        return person(request)

    @app.post(f"{API}/rechercher-usager/v2/usagers/par-datenaissance-et-nir")
    async def search(request: Request) -> Response:
        refused = await guard(request, "rechercher-usager")
        if refused is not None:
            return refused
        try:
            body = await request.json()
            nir, born = str(body["nir"]), str(body["dateNaissance"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)
        if len(nir) not in (13, 15) or len(born) != 10:
            return JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)
        kind = state.kind(nir[:13])
        if kind == "unknown":
            return JSONResponse(
                {
                    "codeRetour": "S002",
                    "message": "Aucun usager trouvé",
                    "topIdentiteCertifiee": "null",
                    "jetonUsager": None,
                }
            )
        if kind == "ambiguous":
            return JSONResponse(
                {
                    "codeRetour": "S003",
                    "message": "Plusieurs usagers trouvés",
                    "topIdentiteCertifiee": "null",
                    "jetonUsager": None,
                }
            )
        if kind == "error":
            return JSONResponse({"codeRetour": "R998", "message": "Un service a répondu en erreur"}, status_code=500)
        if kind == "not_attached":
            return JSONResponse(
                {"codeRetour": "R002", "message": "Usager non rattaché à la structure de l'appelant"}, status_code=403
            )
        return JSONResponse(
            {
                "codeRetour": "S001",
                "message": "Usager trouvé",
                "topIdentiteCertifiee": "O" if kind == "certified" else "N",
                "jetonUsager": _jeton(nir[:13], state.faults.jeton_ttl_seconds),
            }
        )

    @app.get(f"{API}/contrat-usager/v2/contrat")
    async def statut(request: Request) -> Response:
        nir13, refused = await for_person(request, "contrat-usager")
        if refused is not None:
            return refused
        assert nir13 is not None
        n = int(hashlib.sha256(f"statut|{state.seed}|{nir13}".encode()).hexdigest(), 16)
        if n % 10 == 0:
            return Response(status_code=204)
        statut_de = ("Inscrit", "Identifié", "Cessé", "Radié")[n % 4]
        return JSONResponse(
            {
                "m_contrat": {
                    "m_statut": statut_de,
                    "m_date_effet_statut": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}",
                    "m_duree_inscription_12": n % 13,
                    "m_duree_inscription_24": n % 25,
                    "m_duree_inscription_36": n % 37,
                    "m_motif_inscription_code": "11",
                    "m_motif_inscription_lib": "LICENCIEMENT ECONOMIQUE",
                    "m_categ_inscription_code": "1",
                    "m_categ_inscription_lib": "PERSONNE SANS EMPLOI DISPONIBLE DUREE INDETERMINEE PLEIN TPS",
                    "m_situation_reg_emp_code": "ADR",
                    "m_situation_reg_emp_lib": "AIDE DIFFERENTIELLE AU RECLASSEMENT",
                    "m_motif_cloture_code": None,
                    "m_motif_cloture_lib": None,
                }
            }
        )

    @app.get(f"{API}/diagnosticargumente/v4/dossiers")
    async def dossier(request: Request) -> Response:
        nir13, refused = await for_person(request, "diagnosticargumente")
        if refused is not None:
            return refused
        assert nir13 is not None
        n = int(hashlib.sha256(f"diag|{state.seed}|{nir13}".encode()).hexdigest(), 16)
        if n % 5 == 0:
            return Response(status_code=204)
        return JSONResponse(
            {
                "besoinsParDiagnostic": [
                    {
                        "diagnostic": {
                            "idDiagnostic": str(n % 10**6),
                            "typologie": "RETOUR_EMPLOI",
                            "statut": "VALIDE",
                        },
                        "thematiquesBesoins": [
                            {
                                "code": "1",
                                "libelle": "Savoirs",
                                "besoins": [
                                    {
                                        "code": "11",
                                        "libelle": "Français",
                                        "valeur": ("BESOIN", "POINT_FORT", "NON_EXPLORE")[n % 3],
                                        "dateExploration": "2025-03-01",
                                    }
                                ],
                            }
                        ],
                    }
                ],
                "thematiqueContrainte": {
                    "code": "23",
                    "libelle": "Mobilité",
                    "dateExploration": "2025-03-01",
                    "contraintes": [
                        {
                            "code": "231",
                            "libelle": "Pas de permis",
                            "valeur": ("OUI", "NON_ABORDEE", "CLOTUREE")[n % 3],
                            "estPrioritaire": n % 2 == 0,
                            "impact": "FORT",
                            "situations": [{"code": "2311", "libelle": "Permis B", "valeur": "OUI"}],
                            "objectifs": [{"code": "2312", "libelle": "Passer le permis", "valeur": "EN_COURS"}],
                        }
                    ],
                },
                "pouvoirAgir": {"confiance": "MOYENNE", "accompagnement": "OUI", "resultatAnalyse": "A_ACCOMPAGNER"},
            }
        )

    async def person_body(request: Request, api: str) -> tuple[str, Any, Response | None]:
        """A per-person POST: the checks, then its JSON body (R997 when it is not JSON)."""
        nir13, refused = await for_person(request, api)
        if refused is not None:
            return "", None, refused
        assert nir13 is not None
        try:
            return nir13, await request.json(), None
        except ValueError:
            return nir13, None, JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)

    @app.post(f"{API}/diagnosticargumente/v4/diagnostics")
    async def save_diagnostic(request: Request) -> Response:
        nir13, body, refused = await person_body(request, "diagnosticargumente")
        if refused is not None:
            return refused
        required = {"codeAppellation", "codeRome", "codeSousTypologie", "codeTypologie", "idMetierChiffre"}
        if not isinstance(body, dict) or not required <= body.keys():
            return JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)
        state.diagnostics_saved.append({"nir13": nir13, **body})
        return JSONResponse({"codeRetour": "S001", "message": "Diagnostic enregistré"})

    @app.post(f"{API}/orientationusager/v1/orientation")
    async def orientation(request: Request) -> Response:
        nir13, body, refused = await person_body(request, "orientationusager")
        if refused is not None:
            return refused
        if (
            not isinstance(body, dict)
            or body.get("parcours") not in ("PED", "PSP", "PSO")
            or not isinstance(body.get("organisme"), str)
            or not isinstance(body.get("origine"), str)
        ):
            return JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)
        received = {**body, "dateOrientation": time.strftime("%Y-%m-%d")}
        state.orientations.setdefault(nir13, []).append(received)
        return JSONResponse({"codeRetour": "S001", "message": "Orientation enregistrée"}, status_code=201)

    @app.get(f"{API}/orientationusager/v1/lectureOrientation")
    async def read_orientation(request: Request) -> Response:
        nir13, refused = await for_person(request, "orientationusager")
        if refused is not None:
            return refused
        assert nir13 is not None
        known = state.orientations.get(nir13)
        if not known:
            return Response(status_code=204)
        return JSONResponse(known[-1])

    return app


@contextmanager
def running_fake(seed: int = 1, startup_seconds: float = 20) -> Iterator[str]:
    """Start the fake as a separate process on a free loopback port; yield its base URL; stop it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PASSERELLE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: S603 - our own command, fixed arguments
        [sys.executable, "-m", "app.cli", "fake-ft", "serve", "--port", str(port), "--seed", str(seed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                if httpx.get(f"{base}/_fake/faults", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the fake France Travail did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def pointed_at(settings: Any, base: str, **over: Any) -> Any:
    """`settings` (app.settings.Settings) pointed at a fake France Travail running at `base`, with its
    default client; `over`: further settings."""
    from pydantic import SecretStr

    values = {
        "ft_auth_url": base,
        "ft_api_url": f"{base}/partenaire",
        "ft_client_id": "passerelle-fake",
        "ft_client_secret": SecretStr("fake-secret"),
    }
    return settings.model_copy(update=values | over)
