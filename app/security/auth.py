"""Who is calling: a machine client (API key) or a person (OIDC token), with scopes and départements."""

from __future__ import annotations

import hmac
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import structlog
from sqlalchemy import Table, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import get_unpooled_engine
from app.errors import Forbidden, NotFound, PasserelleError, Unauthenticated
from app.models import ApiClient
from app.models.base import utcnow
from app.security.apikeys import hash_key, split_key
from app.security.scopes import ALL_SCOPES
from app.settings import Settings

if TYPE_CHECKING:  # the verifier brings httpx and joserfc, which the jobs importing this module never use
    from app.security.oidc import OidcVerifier

log = structlog.get_logger(__name__)

DEPARTEMENT_RE = re.compile(r"^(?:\d{3}|02[AB])$")
_AGENT_VALUE_RE = re.compile(r"^[^|\x00-\x1f\x7f]{1,100}$")


@dataclass(frozen=True)
class Agent:
    """The person on whose behalf a machine client acts; forwarded to France Travail as `pa-*` headers."""

    identifiant: str
    nom: str
    prenom: str


@dataclass(frozen=True)
class Principal:
    kind: Literal["client", "user"]
    id: str
    name: str
    scopes: frozenset[str]
    departements: frozenset[str]
    agent: Agent | None = None
    client_id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def require_departement(self, code: str) -> None:
        """A record of a département the caller is not granted does not exist for it (404, not 403)."""
        if code not in self.departements:
            raise NotFound("No such resource.")

    def chosen_departements(self, code: str | None) -> list[str]:
        """The départements a request is about: the one it names (404 if not granted), else all granted."""
        if code is None:
            return sorted(self.departements)
        self.require_departement(code)
        return [code]

    def log_id(self) -> str:
        return self.id


class InvalidAgentHeader(PasserelleError):
    status_code = 422
    code = "invalid_agent_header"


def header_text(value: str) -> str:
    """HTTP headers arrive decoded as latin-1; agents' names and purposes are sent as UTF-8 bytes (Léa,
    Françoise, « préparation du rendez-vous »)."""
    try:
        return value.encode("latin-1").decode("utf-8").strip()
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value.strip()


def parse_agent(identifiant: str | None, nom: str | None, prenom: str | None) -> Agent | None:
    given = [v for v in (identifiant, nom, prenom) if v is not None]
    if not given:
        return None
    if len(given) != 3:
        raise InvalidAgentHeader("X-Agent-Identifiant, X-Agent-Nom and X-Agent-Prenom must be given together.")
    assert identifiant is not None and nom is not None and prenom is not None
    values = [header_text(identifiant), header_text(nom), header_text(prenom)]
    for header, value in zip(("X-Agent-Identifiant", "X-Agent-Nom", "X-Agent-Prenom"), values, strict=True):
        if not _AGENT_VALUE_RE.match(value):
            raise InvalidAgentHeader(
                f"{header} must be 1-100 printable characters without '|' (no control character).",
                [{"loc": ["header", header], "msg": "1-100 printable characters without '|'"}],
            )
    return Agent(*values)


# Bumped when a client is revoked in this process (`forget_api_keys`): every cache of the process then
# forgets what it knew, so a revocation here is honoured at once; other processes within their TTL.
_revocations = 0


def forget_api_keys() -> None:
    """Make every `ApiKeyCache` of this process forget the keys it accepted (a client was revoked)."""
    global _revocations
    _revocations += 1


class ApiKeyCache:
    """API keys this process accepted recently (issue #27): the client as its row said then (id, name,
    scopes, départements, last use), for `ttl` seconds, so that the next requests of a known key cost no
    query. Keyed by the key's keyed hash (HMAC-SHA256 under the pepper, the value stored as `key_hash`): a
    request is served from here only for the very key that was verified, never for another key of the same
    prefix. Refused keys are never kept (each refusal reads the database, and counts for the refusal limit).

    The bound: a client revoked by another process (`passerelle clients revoke`) is refused by this one at
    most `ttl` seconds later (setting `api_key_cache_seconds`; 0: no cache, every request reads its row); a
    revocation in this process (`forget_api_keys`) is honoured at once."""

    def __init__(self, ttl_seconds: float, capacity: int = 10_000, clock: Any = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal, datetime | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = _revocations

    def get(self, digest: str) -> tuple[Principal, datetime | None] | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            if self._generation != _revocations:
                self._entries.clear()
                self._generation = _revocations
                return None
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[digest]
                return None
            return entry[1], entry[2]

    def put(self, digest: str, principal: Principal, last_used_at: datetime | None, generation: int) -> None:
        """Keep what a lookup found, unless a revocation happened since it began (`generation`)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != _revocations:
                return
            self._entries[digest] = (self.clock() + self.ttl, principal, last_used_at)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def authenticate_api_key(session: Session, settings: Settings, key: str, cache: ApiKeyCache | None = None) -> Principal:
    prefix = split_key(key)
    if prefix is None:
        raise Unauthenticated("Invalid API key.")
    digest = hash_key(key, settings.pepper)
    known = cache.get(digest) if cache is not None else None
    if known is not None:
        principal, last_used_at = known
    else:
        generation = _revocations
        client = session.scalar(select(ApiClient).where(ApiClient.key_prefix == prefix))
        if client is None or not hmac.compare_digest(digest, client.key_hash):
            raise Unauthenticated("Invalid API key.")
        if client.revoked_at is not None:
            raise Unauthenticated("This API key has been revoked.")
        principal = Principal(
            kind="client",
            id=f"client:{client.id}",
            name=client.name,
            scopes=frozenset(client.scopes),
            departements=frozenset(client.departement_codes),
            client_id=client.id,
        )
        last_used_at = client.last_used_at
        if cache is not None:
            cache.put(digest, principal, last_used_at, generation)
    now = utcnow()
    if (last_used_at is None or now - last_used_at > LAST_USED_EVERY) and _due(prefix):
        assert principal.client_id is not None
        _touch_last_used(settings, principal.client_id, now)
    return principal


LAST_USED_EVERY = timedelta(minutes=5)
_last_touch_attempt: dict[str, float] = {}


def _due(key_prefix: str) -> bool:
    """At most one attempt per client and per period in this process, whether it succeeded or not: a skipped
    update (the writer was busy) must not cost a connection on every request that follows."""
    now = time.monotonic()
    if now - _last_touch_attempt.get(key_prefix, -1e9) < LAST_USED_EVERY.total_seconds():
        return False
    _last_touch_attempt[key_prefix] = now
    return True


def _touch_last_used(settings: Settings, client_id: int, now: datetime) -> None:
    """Best effort, never waiting: in its own short transaction (a read request must not become a writer of
    the main database, issue #8), skipped if a writer holds the lock; the next request tries again."""
    # An unpooled connection: the request already holds one from the pool, and taking a second there could
    # starve it under load (every request waiting for its second connection).
    engine = get_unpooled_engine(settings)
    table = cast(Table, ApiClient.__table__)
    try:
        with engine.begin() as conn:  # unpooled: the connection, and its busy timeout, go with the block
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
            else:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            conn.execute(update(table).where(table.c.id == client_id).values(last_used_at=now))
    except OperationalError:
        log.debug("last_used_at_skipped", client_id=client_id)


def authenticate_bearer(verifier: OidcVerifier, settings: Settings, token: str) -> Principal:
    from app.security.oidc import TokenInvalid  # imported with the verifier already: a lookup

    try:
        verified = verifier.verify(token)
    except TokenInvalid as exc:
        raise Unauthenticated(str(exc)) from exc
    claims = verified.claims
    roles = claims.get(settings.oidc_scopes_claim) or []
    if isinstance(roles, str):
        roles = roles.split()
    scopes: set[str] = set()
    for role in roles:
        scopes.update(settings.oidc_role_scopes.get(str(role), []))
        if str(role) in ALL_SCOPES:
            scopes.add(str(role))
    deps = claims.get(settings.oidc_departements_claim) or []
    if isinstance(deps, str):
        deps = deps.split()
    departements = frozenset(str(d) for d in deps if DEPARTEMENT_RE.match(str(d)))
    agent = Agent(
        identifiant=str(claims.get("preferred_username") or verified.subject)[:100],
        nom=str(claims.get("family_name") or "-")[:100],
        prenom=str(claims.get("given_name") or "-")[:100],
    )
    return Principal(
        kind="user",
        id=f"user:{verified.subject}",
        name=str(claims.get("preferred_username") or verified.subject),
        scopes=frozenset(scopes),
        departements=departements,
        agent=agent,
    )


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"This operation needs the scope '{scope!s}'.", details={"scope": str(scope)})
