"""What the fake checks before answering a partner API call, as the real one does (the token, its scopes,
the agent headers, the ft-jeton-usager), then the faults it was told to make."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from app.france_travail.fake.jeton import read_jeton
from app.france_travail.fake.state import FakeState, Faults

SCOPES = {
    "rechercher-usager": {"api_rechercher-usagerv2", "rechercheusager"},
    "contrat-usager": {"api_contrat-usagerv2", "statutcontratusager"},
    "diagnosticargumente": {"api_diagnosticargumentev4", "diagnosticusageragent"},
    "orientationusager": {"api_orientationusagerv1", "orientationusager"},
}
AGENT_HEADERS = ("pa-nom-agent", "pa-prenom-agent", "pa-identifiant-agent")


def invalid_request() -> JSONResponse:
    """The R997 answer to a request the fake cannot read."""
    return JSONResponse({"codeRetour": "R997", "message": "requête invalide"}, status_code=400)


class Gate:
    """The checks of one fake's API calls; `rng` draws the faults reproducibly for the seed."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.rng = random.Random(state.seed)  # noqa: S311 - faults drawn reproducibly, not secrets

    async def guard(self, request: Request, api: str) -> Response | None:
        """What the real one checks before anything: the token, its scopes, the agent headers; then the
        faults the fake was told to make."""
        self.state.calls += 1
        self.state.call_times.append(time.monotonic())
        refused = self._refuse_caller(request, api)
        if refused is not None:
            return refused
        return await self._make_fault()

    def _refuse_caller(self, request: Request, api: str) -> Response | None:
        """The answer to a caller without a valid token, the API's scopes or the agent headers."""
        auth = request.headers.get("authorization", "")
        known = self.state.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
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
        return None

    async def _make_fault(self) -> Response | None:
        """The latency, then one fault drawn by its rate; None when this call is answered normally."""
        f = self.state.faults
        if f.latency_ms or f.latency_jitter_ms:
            await asyncio.sleep((f.latency_ms + self.rng.randint(0, max(f.latency_jitter_ms, 0))) / 1000)
        return _fault_drawn(f, self.rng.random())

    def person(self, request: Request) -> tuple[str | None, Response | None]:
        """The NIR of the call's ft-jeton-usager, or the answer to a missing, unreadable or expired one."""
        value = request.headers.get("ft-jeton-usager")
        read = read_jeton(value) if value else None
        if read is None:
            return None, JSONResponse({"codeRetour": "R997", "message": "jeton usager invalide"}, status_code=400)
        nir13, expire = read
        if expire < time.time() * 1000:
            return None, JSONResponse({"message": "jeton usager expiré"}, status_code=401)
        return nir13, None

    async def for_person(self, request: Request, api: str) -> tuple[str | None, Response | None]:
        """The checks of a per-person call: the guard's, then the ft-jeton-usager's."""
        refused = await self.guard(request, api)
        if refused is not None:
            return None, refused
        return self.person(request)

    async def answer_person(self, request: Request, api: str, answer: Callable[[str], Response]) -> Response:
        """A per-person GET: the checks, then `answer` for the person's NIR (13 characters)."""
        nir13, refused = await self.for_person(request, api)
        if refused is not None:
            return refused
        assert nir13 is not None
        return answer(nir13)

    async def person_body(self, request: Request, api: str) -> tuple[str, Any, Response | None]:
        """A per-person POST: the checks, then its JSON body (R997 when it is not JSON)."""
        nir13, refused = await self.for_person(request, api)
        if refused is not None:
            return "", None, refused
        assert nir13 is not None
        try:
            return nir13, await request.json(), None
        except ValueError:
            return nir13, None, invalid_request()


def _fault_drawn(f: Faults, draw: float) -> Response | None:
    """The fault that `draw` (0 to 1) falls on, the rates taken in a fixed order; None past them all."""
    if draw < f.rate_429:
        headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
        return JSONResponse({"message": "too many requests"}, status_code=429, headers=headers)
    draw -= f.rate_429
    if draw < f.rate_503:
        return JSONResponse({"codeErreur": "JCS0011G", "codeHttp": 503, "message": "unavailable"}, status_code=503)
    draw -= f.rate_503
    if draw < f.rate_500:
        return JSONResponse({"codeErreur": "JCS0001E", "codeHttp": 500, "message": "internal error"}, status_code=500)
    draw -= f.rate_500
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
