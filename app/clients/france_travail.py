"""France Travail's partner APIs (shared/formats/france-travail-api.md), first part of issue #12: the
token, the agent headers, retries and the circuit breaker, and the three calls in France Travail's shapes.

- **Token**: OAuth2 client credentials through authlib's httpx client (`client_secret_post`, the realm in
  the token URL), one token per API's scopes, cached and renewed a minute before it expires, one renewal
  at a time; an API's 401 renews it once.
- **Headers**: `pa-nom-agent`, `pa-prenom-agent`, `pa-identifiant-agent` from the acting agent, or a batch
  (`BATCH` and the job's name); a `|` in them is refused before any call. `ft-jeton-usager` on per-person
  calls. Redirects are never followed: a 302 means a missing `pa-*` header, an error.
- **Retries** with exponential back-off and jitter on 429 (its `Retry-After`, 60 s without, capped),
  502/503/504, `R999` and connection errors; never on S002/S003/R001/R002/R997/R998 or 404.
- **Circuit breaker**: after N consecutive failures, calls stop for a cool-down and fail at once
  (`FranceTravailUnavailable`, with when to retry).

Not yet here (issue #12 stays open): stored facts, the API routes, `ft sync`, rate cap and concurrency
bounds, the orientation push.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

from app.settings import Settings

log = structlog.get_logger(__name__)

RETRY_STATUS = frozenset({429, 502, 503, 504})
TOKEN_LEEWAY_SECONDS = 60
DEFAULT_RETRY_AFTER = 60.0


class FranceTravailError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class FranceTravailUnavailable(FranceTravailError):
    """France Travail does not answer (circuit open, or retries exhausted): try again after `retry_after`."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, status=503, code="france_travail_unavailable")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Agent:
    """Who acts, as France Travail wants to know it (never with a `|`)."""

    identifiant: str
    nom: str
    prenom: str

    @classmethod
    def batch(cls, job: str) -> Agent:
        return cls("BATCH", job, "passerelle")

    def headers(self) -> dict[str, str]:
        values = {"pa-identifiant-agent": self.identifiant, "pa-nom-agent": self.nom, "pa-prenom-agent": self.prenom}
        for name, value in values.items():
            if not value or not value.strip():
                raise FranceTravailError(f"{name} is empty")
            if "|" in value:
                raise FranceTravailError(f"{name} holds a '|', which France Travail refuses")
        return values


@dataclass(frozen=True)
class SearchResult:
    code: str  # S001 found, S002 none, S003 several
    certified: bool | None  # topIdentiteCertifiee O / N / "null" or null
    jeton: str | None
    jeton_expires_ms: int | None


def jeton_expiry(jeton: str) -> int | None:
    """The `expire` (epoch ms) inside a jetonUsager (base64 JSON), or None if unreadable."""
    try:
        return int(json.loads(base64.b64decode(jeton))["expire"])
    except (ValueError, KeyError, TypeError):
        return None


def _certified(value: Any) -> bool | None:
    return {"O": True, "N": False}.get(value) if isinstance(value, str) else None


class _Circuit:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        self.limit, self.cooldown, self.clock = failures, cooldown, clock
        self.failures = 0
        self.open_until = 0.0
        self.lock = threading.Lock()

    def check(self) -> None:
        with self.lock:
            left = self.open_until - self.clock()
            if left > 0:
                raise FranceTravailUnavailable("France Travail is unavailable (circuit open)", left)

    def success(self) -> None:
        with self.lock:
            self.failures = 0

    def failure(self) -> None:
        with self.lock:
            self.failures += 1
            if self.failures >= self.limit:
                self.open_until = self.clock() + self.cooldown
                self.failures = 0
                log.warning("france_travail_circuit_open", cooldown_seconds=self.cooldown)


class FranceTravailClient:
    def __init__(
        self,
        settings: Settings,
        http: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (settings.ft_auth_url and settings.ft_api_url and settings.ft_client_id and settings.ft_client_secret):
            raise FranceTravailError(
                "France Travail is not configured (PASSERELLE_FT_AUTH_URL, _API_URL, _CLIENT_ID, _CLIENT_SECRET)"
            )
        self.settings = settings
        timeout = httpx.Timeout(settings.ft_read_timeout_seconds, connect=settings.ft_connect_timeout_seconds)
        self.http = http or httpx.Client(timeout=timeout, follow_redirects=False)
        self.sleep, self.clock = sleep, clock
        self.circuit = _Circuit(settings.ft_circuit_failures, settings.ft_circuit_cooldown_seconds, clock)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_lock = threading.Lock()
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret

    def close(self) -> None:
        self.http.close()

    # -- token ---------------------------------------------------------------------------------

    def _scope(self, api: str) -> str:
        scope = self.settings.ft_scopes[api]
        prefix = self.settings.ft_scope_prefix.replace("{client_id}", self.settings.ft_client_id or "")
        return f"{prefix} {scope}".strip() if prefix else scope

    def token(self, api: str, *, renew: bool = False) -> str:
        with self._token_lock:  # one renewal at a time
            cached = self._tokens.get(api)
            if cached is not None and not renew and cached[1] - TOKEN_LEEWAY_SECONDS > self.clock():
                return cached[0]
            s = self.settings
            assert s.ft_client_secret is not None
            oauth = OAuth2Client(
                client_id=s.ft_client_id,
                client_secret=s.ft_client_secret.get_secret_value(),
                token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
                scope=self._scope(api),
                timeout=httpx.Timeout(s.ft_read_timeout_seconds, connect=s.ft_connect_timeout_seconds),
            )
            realm = urlencode({"realm": s.ft_realm})
            url = f"{s.ft_auth_url.rstrip('/')}/connexion/oauth2/access_token?{realm}"  # type: ignore[union-attr]
            try:
                fetched = oauth.fetch_token(url, grant_type="client_credentials")
            except Exception as exc:  # authlib raises OAuthError or httpx errors
                raise FranceTravailError(
                    f"the token endpoint refused: {getattr(exc, 'error', type(exc).__name__)}", code="token"
                ) from None
            finally:
                oauth.close()
            value = str(fetched["access_token"])
            self._tokens[api] = (value, self.clock() + float(fetched.get("expires_in", 0)))
            return value

    # -- calls ---------------------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and response.status_code == 429:
            raw = response.headers.get("retry-after")
            try:
                wait = float(raw) if raw is not None else DEFAULT_RETRY_AFTER
            except ValueError:
                wait = DEFAULT_RETRY_AFTER
            return min(wait, self.settings.ft_retry_after_cap_seconds)
        base = self.settings.ft_backoff_seconds * (2**attempt)
        return float(min(base + self._rng.uniform(0, base), self.settings.ft_retry_after_cap_seconds))

    def request(
        self, api: str, method: str, path: str, agent: Agent, *, body: Any = None, jeton: str | None = None
    ) -> httpx.Response:
        """One call, with the retries and the circuit breaker; returns the final answer (any status the
        caller must interpret) or raises `FranceTravailUnavailable`."""
        self.circuit.check()
        headers = {"Accept": "application/json"} | agent.headers()
        if jeton:
            headers["ft-jeton-usager"] = jeton
        url = f"{self.settings.ft_api_url.rstrip('/')}{path}"  # type: ignore[union-attr]
        renewed = False
        attempt = 0
        while True:
            token = self.token(api)
            response: httpx.Response | None = None
            try:
                response = self.http.request(
                    method, url, json=body, headers=headers | {"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                retryable, reason = True, type(exc).__name__
            else:
                if response.status_code == 401 and not renewed:
                    self.token(api, renew=True)  # renew once
                    renewed = True
                    continue
                code = _code(response)
                retryable = response.status_code in RETRY_STATUS or code == "R999"
                reason = f"HTTP {response.status_code}" + (f" {code}" if code else "")
                if response.status_code == 302:
                    self.circuit.success()
                    raise FranceTravailError("France Travail redirected: an agent header is missing", status=302)
                if not retryable:
                    self.circuit.success()
                    return response
            attempt += 1
            if attempt >= self.settings.ft_max_attempts:
                self.circuit.failure()
                raise FranceTravailUnavailable(
                    f"France Travail did not answer ({reason}) after {attempt} attempts",
                    self.settings.ft_circuit_cooldown_seconds,
                )
            wait = self._delay(attempt - 1, response)
            log.info("france_travail_retry", api=api, attempt=attempt, reason=reason, wait_seconds=round(wait, 2))
            self.sleep(wait)

    def search_by_nir(self, nir: str, birth_date: str, agent: Agent) -> SearchResult:
        response = self.request(
            "rechercher-usager",
            "POST",
            "/rechercher-usager/v2/usagers/par-datenaissance-et-nir",
            agent,
            body={"nir": nir, "dateNaissance": birth_date},
        )
        if response.status_code == 404:
            return SearchResult("S002", None, None, None)  # what rdv-insertion reads as "not found"
        data = _json(response)
        code = str(data.get("codeRetour") or "")
        if response.status_code != 200 or code not in ("S001", "S002", "S003"):
            raise FranceTravailError(
                f"Rechercher usager answered {response.status_code} {code}",
                status=response.status_code,
                code=code or None,
            )
        jeton = data.get("jetonUsager") if code == "S001" else None
        return SearchResult(
            code, _certified(data.get("topIdentiteCertifiee")), jeton, jeton_expiry(jeton) if jeton else None
        )

    def statut(self, jeton: str, agent: Agent) -> dict[str, Any] | None:
        response = self.request("contrat-usager", "GET", "/contrat-usager/v2/contrat", agent, jeton=jeton)
        if response.status_code == 204:
            return None
        data = _json(response)
        if response.status_code != 200:
            raise FranceTravailError(
                f"Statut answered {response.status_code}", status=response.status_code, code=_code(response)
            )
        contrat = data.get("m_contrat")
        return contrat if isinstance(contrat, dict) else None

    def dossier(self, jeton: str, agent: Agent) -> dict[str, Any] | None:
        response = self.request("diagnosticargumente", "GET", "/diagnosticargumente/v4/dossiers", agent, jeton=jeton)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise FranceTravailError(
                f"Diagnostic answered {response.status_code}", status=response.status_code, code=_code(response)
            )
        return _json(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise FranceTravailError(
            f"France Travail answered {response.status_code} with malformed JSON", status=response.status_code
        ) from None
    if not isinstance(data, dict):
        raise FranceTravailError(
            "France Travail answered something else than a JSON object", status=response.status_code
        )
    return data


def _code(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return str(data.get("codeRetour")) if isinstance(data, dict) and data.get("codeRetour") else None
