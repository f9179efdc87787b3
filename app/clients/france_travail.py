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

- **Bounds**: at most `ft_max_concurrency` calls in flight and `ft_rate_per_second` calls started per second
  (spaced evenly, so no one-second window ever holds more), shared by every thread of the process, and with
  PASSERELLE_REDIS_URL by every process of the service, as is the token (app.clients.ft_shared, issue #27).
- **Deadlines**: a call made for an API request carries a deadline (`ft_request_deadline_seconds`): no
  attempt, wait or retry goes beyond it, so a slow France Travail never holds the server's threads.
- **Trace**: each call appends what happened (`Call`: API, status, code, attempts, duration) to the list
  the caller gives, which the service stores (`ft_calls`).

The client speaks France Travail's shapes; `app.france_travail.mapping` turns them into the convention's
vocabulary.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - sets its warnings to "always": first
import httpx
import structlog

with warnings.catch_warnings():
    # authlib announces a move of its httpx integration to "httpx2"; the one used here works and is tested
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

# the client's errors and rate cap, where its callers have always found them
from app.clients.ft_errors import FranceTravailError as FranceTravailError
from app.clients.ft_errors import FranceTravailNotConfigured as FranceTravailNotConfigured
from app.clients.ft_errors import FranceTravailUnavailable as FranceTravailUnavailable
from app.clients.ft_errors import MalformedAnswer as MalformedAnswer
from app.clients.ft_errors import TokenRefused as TokenRefused
from app.clients.ft_shared import TOKEN_LEEWAY_SECONDS, SharedRateCap, SharedTokens
from app.clients.ft_shared import RateCap as RateCap
from app.kit.shared import backend
from app.settings import Settings

log = structlog.get_logger(__name__)

RETRY_STATUS = frozenset({429, 502, 503, 504})
DEFAULT_RETRY_AFTER = 60.0


def _host(url: str) -> str:
    """The host (and port) of a URL, to name in a message: never its path or query."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or url


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


@dataclass
class Call:
    """One call to France Travail as it went: for the stored trace (never the jeton, never a body)."""

    api: str
    operation: str
    status: int | None = None
    code: str | None = None
    attempts: int = 0
    duration_ms: int = 0
    outcome: str = "ok"  # ok | retried_out | unavailable | error


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
        if not settings.ft_configured:
            raise FranceTravailNotConfigured(
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
        self.in_flight = threading.BoundedSemaphore(settings.ft_max_concurrency)
        url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        shared = backend(url, settings.redis_prefix)  # the token and the rate cap, for every process (issue #27)
        self.shared_tokens = SharedTokens(settings, shared) if shared is not None else None
        rate = settings.ft_rate_per_second
        self.rate = SharedRateCap(rate, clock, sleep, shared) if shared is not None else RateCap(rate, clock, sleep)

    def close(self) -> None:
        self.http.close()

    # -- token ---------------------------------------------------------------------------------

    def _scope(self, api: str) -> str:
        scope = self.settings.ft_scopes[api]
        prefix = self.settings.ft_scope_prefix.replace("{client_id}", self.settings.ft_client_id or "")
        return f"{prefix} {scope}".strip() if prefix else scope

    def token(self, api: str, *, renew: bool = False, deadline: float | None = None) -> str:
        """The API's token (cached); fetched or renewed by one thread at a time. `deadline`: the wait for
        another thread's renewal and the fetch itself end by then (a token endpoint that does not answer
        never holds an API request longer than its own deadline)."""
        left = self._remaining(deadline)
        if not self._token_lock.acquire(timeout=-1 if left is None else left):  # one renewal at a time
            raise FranceTravailUnavailable("France Travail's token endpoint is slow (a renewal is under way)", 1.0)
        try:
            cached = self._tokens.get(api)
            if cached is not None and not renew and cached[1] - TOKEN_LEEWAY_SECONDS > self.clock():
                return cached[0]

            def fetch() -> tuple[str, float]:
                return self._fetch_token(api, self._remaining(deadline))

            if self.shared_tokens is None:
                value, expires_in = fetch()
            else:  # the one every process uses, unless France Travail refused it (then a new one, once)
                rejected = cached[0] if renew and cached is not None else None
                value, expires_in = self.shared_tokens.get(
                    self._scope(api), rejected, fetch, lambda: self._remaining(deadline), self.sleep
                )
            self._tokens[api] = (value, self.clock() + expires_in)
            return value
        finally:
            self._token_lock.release()

    def _fetch_token(self, api: str, left: float | None) -> tuple[str, float]:
        """A new token from France Travail's token endpoint, and the seconds it is valid for."""
        s = self.settings
        assert s.ft_client_secret is not None
        read, connect = s.ft_read_timeout_seconds, s.ft_connect_timeout_seconds
        if left is not None:
            read, connect = min(read, left), min(connect, left)
        oauth = OAuth2Client(
            client_id=s.ft_client_id,
            client_secret=s.ft_client_secret.get_secret_value(),
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
            scope=self._scope(api),
            timeout=httpx.Timeout(read, connect=connect),
        )
        realm = urlencode({"realm": s.ft_realm})
        url = f"{s.ft_auth_url.rstrip('/')}/connexion/oauth2/access_token?{realm}"  # type: ignore[union-attr]
        try:
            fetched = oauth.fetch_token(url, grant_type="client_credentials")
        except httpx.TransportError as exc:
            self.circuit.failure()  # a token endpoint that does not answer is France Travail not answering
            raise FranceTravailUnavailable(
                f"France Travail's token endpoint {_host(url)} does not answer ({type(exc).__name__})",
                s.ft_circuit_cooldown_seconds,
            ) from None
        except Exception as exc:  # authlib's OAuthError (invalid_client, invalid_scope...) or a bad answer
            error = str(getattr(exc, "error", type(exc).__name__))
            raise TokenRefused(
                f"France Travail's token endpoint refused: {error}"
                " (check PASSERELLE_FT_CLIENT_ID, _CLIENT_SECRET, _REALM, _SCOPES)",
                code="token_refused",
                error=error,
                api=api,
            ) from None
        finally:
            oauth.close()
        return str(fetched["access_token"]), float(fetched.get("expires_in", 0))

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
        self,
        api: str,
        method: str,
        path: str,
        agent: Agent,
        *,
        body: Any = None,
        jeton: str | None = None,
        deadline: float | None = None,
        trace: list[Call] | None = None,
        operation: str = "",
    ) -> httpx.Response:
        """One call, with the retries, the bounds and the circuit breaker; returns the final answer (any
        status the caller must interpret) or raises `FranceTravailUnavailable`. `deadline` (on this
        client's clock): nothing is attempted or waited for beyond it."""
        call = Call(api, operation or f"{method} {path}")
        if trace is not None:
            trace.append(call)
        started = self.clock()
        try:
            return self._request(api, method, path, agent, body, jeton, deadline, call)
        except FranceTravailUnavailable:
            if call.attempts:
                self.circuit.failure()  # retries exhausted, or the deadline passed: France Travail failed
            if call.outcome == "ok":
                call.outcome = "unavailable"
            raise
        except FranceTravailError:
            call.outcome = "error"
            raise
        finally:
            call.duration_ms = int((self.clock() - started) * 1000)

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - self.clock()
        if left <= 0:
            raise FranceTravailUnavailable("France Travail did not answer before the deadline", 1.0)
        return left

    def _request(
        self,
        api: str,
        method: str,
        path: str,
        agent: Agent,
        body: Any,
        jeton: str | None,
        deadline: float | None,
        call: Call,
    ) -> httpx.Response:
        self.circuit.check()
        headers = {"Accept": "application/json"} | agent.headers()
        if jeton:
            headers["ft-jeton-usager"] = jeton
        url = f"{self.settings.ft_api_url.rstrip('/')}{path}"  # type: ignore[union-attr]
        renewed = False
        while True:
            token = self.token(api, deadline=deadline)
            response: httpx.Response | None = None
            left = self._remaining(deadline)
            if not self.in_flight.acquire(timeout=left):
                raise FranceTravailUnavailable("every France Travail slot stayed busy until the deadline", 1.0)
            try:
                self.rate.wait(deadline)
                left = self._remaining(deadline)
                timeout: httpx.Timeout | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
                if left is not None:
                    s = self.settings
                    timeout = httpx.Timeout(
                        min(s.ft_read_timeout_seconds, left), connect=min(s.ft_connect_timeout_seconds, left)
                    )
                call.attempts += 1
                response = self.http.request(
                    method, url, json=body, headers=headers | {"Authorization": f"Bearer {token}"}, timeout=timeout
                )
            except httpx.TransportError as exc:
                retryable, reason = True, type(exc).__name__
            finally:
                self.in_flight.release()
            if response is not None:
                call.status, call.code = response.status_code, _code(response)
                if response.status_code == 401 and not renewed:
                    self.token(api, renew=True, deadline=deadline)  # renew once
                    renewed = True
                    continue
                retryable = response.status_code in RETRY_STATUS or call.code == "R999"
                reason = f"HTTP {response.status_code}" + (f" {call.code}" if call.code else "")
                if response.status_code == 302:
                    self.circuit.success()
                    raise FranceTravailError("France Travail redirected: an agent header is missing", status=302)
                if not retryable:
                    self.circuit.success()
                    if response.status_code >= 400 and response.status_code != 404:
                        call.outcome = "error"  # answered, with an error (R001, R997...): the caller decides
                    return response
            else:
                call.status, call.code = None, reason
            if call.attempts >= self.settings.ft_max_attempts:
                call.outcome = "retried_out"
                raise FranceTravailUnavailable(
                    f"France Travail {_host(url)} did not answer ({reason}) after {call.attempts} attempts",
                    self.settings.ft_circuit_cooldown_seconds,
                )
            wait = self._delay(call.attempts - 1, response)
            if deadline is not None and self.clock() + wait >= deadline:
                call.outcome = "retried_out"
                raise FranceTravailUnavailable(
                    f"France Travail did not answer ({reason}) and its retry would pass the deadline", wait
                )
            log.info("france_travail_retry", api=api, attempt=call.attempts, reason=reason, wait_seconds=round(wait, 2))
            self.sleep(wait)

    def search_by_nir(
        self, nir: str, birth_date: str, agent: Agent, *, deadline: float | None = None, trace: list[Call] | None = None
    ) -> SearchResult:
        """Rechercher usager v2 by NIR and birth date. S001/S002/S003 (and a 404, read as S002) are answers;
        anything else raises `FranceTravailError` with its status and code."""
        response = self.request(
            "rechercher-usager",
            "POST",
            "/rechercher-usager/v2/usagers/par-datenaissance-et-nir",
            agent,
            body={"nir": nir, "dateNaissance": birth_date},
            deadline=deadline,
            trace=trace,
            operation="rechercher-usager",
        )
        if response.status_code == 404:
            return SearchResult("S002", None, None, None)  # what rdv-insertion reads as "not found"
        data = _json(response)
        code = str(data.get("codeRetour") or "")
        if response.status_code != 200 or code not in ("S001", "S002", "S003"):
            raise FranceTravailError(
                f"Rechercher usager answered {response.status_code} {code}".strip(),
                status=response.status_code,
                code=code or None,
            )
        jeton = data.get("jetonUsager") if code == "S001" else None
        if code == "S001" and not (isinstance(jeton, str) and jeton):
            raise MalformedAnswer("Rechercher usager found the person but gave no jetonUsager", status=200)
        return SearchResult(
            code, _certified(data.get("topIdentiteCertifiee")), jeton, jeton_expiry(jeton) if jeton else None
        )

    def _person_get(
        self, api: str, path: str, jeton: str, agent: Agent, deadline: float | None, trace: list[Call] | None, what: str
    ) -> dict[str, Any] | None:
        response = self.request(api, "GET", path, agent, jeton=jeton, deadline=deadline, trace=trace, operation=what)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise FranceTravailError(
                f"{what} answered {response.status_code}", status=response.status_code, code=_code(response)
            )
        return _json(response)

    def statut(
        self, jeton: str, agent: Agent, *, deadline: float | None = None, trace: list[Call] | None = None
    ) -> dict[str, Any] | None:
        """contrat-usager v2: the `m_contrat` object, or None when France Travail has no data (204)."""
        data = self._person_get("contrat-usager", "/contrat-usager/v2/contrat", jeton, agent, deadline, trace, "statut")
        if data is None:
            return None
        contrat = data.get("m_contrat")
        if not isinstance(contrat, dict):
            raise MalformedAnswer("Statut answered without an m_contrat object", status=200)
        return contrat

    def dossier(
        self, jeton: str, agent: Agent, *, deadline: float | None = None, trace: list[Call] | None = None
    ) -> dict[str, Any] | None:
        """diagnostic argumenté v4: the whole dossier, or None when there is none (204)."""
        return self._person_get(
            "diagnosticargumente", "/diagnosticargumente/v4/dossiers", jeton, agent, deadline, trace, "diagnostic"
        )

    def _person_post(
        self,
        api: str,
        path: str,
        body: dict[str, str],
        jeton: str,
        agent: Agent,
        deadline: float | None,
        trace: list[Call] | None,
        operation: str,
        what: str,
    ) -> httpx.Response:
        response = self.request(
            api, "POST", path, agent, body=body, jeton=jeton, deadline=deadline, trace=trace, operation=operation
        )
        if response.status_code not in (200, 201):
            raise FranceTravailError(
                f"{what} answered {response.status_code}", status=response.status_code, code=_code(response)
            )
        return response

    def save_diagnostic(
        self,
        jeton: str,
        body: dict[str, str],
        agent: Agent,
        *,
        deadline: float | None = None,
        trace: list[Call] | None = None,
    ) -> dict[str, Any]:
        """The convention's "enregistrement" of a diagnostic (POST diagnostic argumenté v4 /diagnostics)."""
        response = self._person_post(
            "diagnosticargumente",
            "/diagnosticargumente/v4/diagnostics",
            body,
            jeton,
            agent,
            deadline,
            trace,
            "diagnostic.enregistrement",
            "Diagnostic (enregistrement)",
        )
        return _json(response) if response.content else {}

    def read_orientation(
        self, jeton: str, agent: Agent, *, deadline: float | None = None, trace: list[Call] | None = None
    ) -> list[dict[str, Any]] | None:
        """Orientation usager v1, lectureOrientation: the orientations France Travail knows of the person (a
        list of objects; one object alone, or `{"orientations": [...]}`, is read as that list), or None (204).
        Anything else is `MalformedAnswer`."""
        path = "/orientationusager/v1/lectureOrientation"
        response = self.request(
            "orientationusager",
            "GET",
            path,
            agent,
            jeton=jeton,
            deadline=deadline,
            trace=trace,
            operation="orientation",
        )
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise FranceTravailError(
                f"orientation answered {response.status_code}", status=response.status_code, code=_code(response)
            )
        try:
            data = response.json()
        except ValueError:
            raise MalformedAnswer("lectureOrientation answered 200 with malformed JSON", status=200) from None
        if isinstance(data, dict):
            data = data["orientations"] if isinstance(data.get("orientations"), list) else [data]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise MalformedAnswer("lectureOrientation answered something else than a list of objects", status=200)
        return data

    def push_orientation(
        self, jeton: str, body: dict[str, str], agent: Agent, *, trace: list[Call] | None = None
    ) -> None:
        """Orientation usager v1: send the Département's orientation decision (201 when taken, with France
        Travail's JSON answer: anything else, a 200 page of a proxy included, is `MalformedAnswer`)."""
        response = self._person_post(
            "orientationusager",
            "/orientationusager/v1/orientation",
            body,
            jeton,
            agent,
            None,
            trace,
            "orientation.envoi",
            "Orientation usager",
        )
        if response.status_code != 201 or response.content:
            _json(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise MalformedAnswer(
            f"France Travail answered {response.status_code} with malformed JSON", status=response.status_code
        ) from None
    if not isinstance(data, dict):
        raise MalformedAnswer("France Travail answered something else than a JSON object", status=response.status_code)
    return data


def _code(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return str(data.get("codeRetour")) if isinstance(data, dict) and data.get("codeRetour") else None
