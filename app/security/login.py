"""The browser login of the dashboard (issue #15): OpenID Connect authorization code flow with PKCE against
the Département's identity provider, through authlib's client.

`/connexion` starts it (state, nonce and PKCE verifier kept in a short-lived encrypted cookie), the provider
sends the person back to `/connexion/retour`, where the code is exchanged for the tokens; the access token
is verified exactly as an API bearer token (issuer, audience, signature, expiry, roles) and kept in an
encrypted, HttpOnly, SameSite=Lax cookie (Secure behind https or in prod) for at most
`PASSERELLE_DASHBOARD_SESSION_HOURS` (8 h), never beyond the token's own expiry (issue #23: a token valid
until 2083 made a cookie valid until 2083). That cookie authenticates GET requests to the pages only
(`/tableau-de-bord`), never the API (no cookie-driven writes, hence no CSRF surface). `/deconnexion` ends the
session on the server (its random `sid` recorded as revoked until it would have expired): the same cookie,
copied before, opens nothing any more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - sets its warnings to "always": first
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.models import BrowserSessionRevocation
from app.settings import Environment, Settings

with warnings.catch_warnings():
    # authlib announces a move of its httpx integration to "httpx2"; the one used here works and is tested
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.common.security import generate_token  # type: ignore[import-untyped]
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

SESSION_COOKIE = "passerelle_session"
FLOW_COOKIE = "passerelle_connexion"
FLOW_SECONDS = 600
PAGES = ("/tableau-de-bord",)
CALLBACK = "/connexion/retour"


class LoginError(Exception):
    """The login could not complete: said to the person in French, without any token."""


def configured(settings: Settings) -> bool:
    return bool(
        settings.oidc_issuer
        and settings.oidc_authorization_endpoint
        and settings.oidc_token_endpoint
        and settings.oidc_client_id
        and settings.public_url
    )


def _key(settings: Settings) -> bytes:
    return hmac.new(settings.pepper, b"passerelle browser session", hashlib.sha256).digest()


def seal(settings: Settings, data: dict[str, Any]) -> str:
    nonce = os.urandom(12)
    body = AESGCM(_key(settings)).encrypt(nonce, json.dumps(data).encode(), b"session")
    return base64.urlsafe_b64encode(nonce + body).decode().rstrip("=")


def unseal(settings: Settings, value: str | None) -> dict[str, Any] | None:
    """The cookie's content, or None if absent, tampered with or expired."""
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data: dict[str, Any] = json.loads(AESGCM(_key(settings)).decrypt(raw[:12], raw[12:], b"session"))
    except Exception:
        return None
    return data if data.get("exp", 0) > time.time() else None


def _client(settings: Settings) -> Any:
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    return OAuth2Client(
        settings.oidc_client_id,
        secret,
        code_challenge_method="S256",
        redirect_uri=f"{str(settings.public_url).rstrip('/')}{CALLBACK}",
        scope="openid",
        timeout=10.0,
    )


def safe_next(value: str | None) -> str:
    """Where to go after the login: a path of this service only (never another site)."""
    parsed = urlparse(value or "")
    # a backslash is a slash to a browser (`/\\evil.example` is `//evil.example`): never in the way back
    local = value and not parsed.scheme and not parsed.netloc and value.startswith("/") and not value.startswith("//")
    if local and value and "\\" not in value:
        return value
    return PAGES[0]


@dataclass
class Started:
    url: str
    cookie: str


def start(settings: Settings, next_url: str | None) -> Started:
    verifier, state, nonce = generate_token(48), generate_token(24), generate_token(24)
    with _client(settings) as client:
        url, _state = client.create_authorization_url(
            settings.oidc_authorization_endpoint, state=state, code_verifier=verifier, nonce=nonce
        )
    flow = {"state": state, "verifier": verifier, "next": safe_next(next_url), "exp": time.time() + FLOW_SECONDS}
    return Started(url, seal(settings, flow))


def finish(settings: Settings, code: str | None, state: str | None, flow_cookie: str | None) -> tuple[str, str]:
    """Exchange the code; returns (access token, where to go). Raises LoginError."""
    flow = unseal(settings, flow_cookie)
    if flow is None:
        raise LoginError("La connexion a expiré ou n'a pas été commencée ici : recommencez.")
    if not state or not hmac.compare_digest(str(flow["state"]), state) or not code:
        raise LoginError("La réponse du fournisseur d'identité ne correspond pas à cette connexion : recommencez.")
    try:
        with _client(settings) as client:
            token = client.fetch_token(
                settings.oidc_token_endpoint, code=code, code_verifier=flow["verifier"], state=state
            )
    except Exception as exc:
        raise LoginError(f"Le fournisseur d'identité a refusé la connexion ({type(exc).__name__}).") from None
    access = token.get("access_token")
    if not access:
        raise LoginError("Le fournisseur d'identité n'a pas donné de jeton d'accès.")
    return str(access), str(flow["next"])


@dataclass
class BrowserSession:
    cookie: str  # the sealed value
    expires: int  # epoch seconds: the cookie's Expires, and its content's `exp`
    max_age: int  # seconds from now: the cookie's Max-Age


def open_session(settings: Settings, token: str, token_expiry: float, now: float | None = None) -> BrowserSession:
    """A session for a verified access token: it lasts `dashboard_session_hours` at most, and never beyond
    the token's own expiry; a random `sid` lets `/deconnexion` end it on the server."""
    now = time.time() if now is None else now
    expires = int(min(token_expiry, now + settings.dashboard_session_hours * 3600))
    sid = secrets.token_hex(16)
    cookie = seal(settings, {"token": token, "exp": expires, "sid": sid})
    return BrowserSession(cookie, expires, max(0, expires - int(now)))


def open_link_session(settings: Settings, session_id: str, link_id: int, departement: str, name: str,
                      now: float | None = None) -> BrowserSession:  # fmt: skip
    """A session opened by a single-use link (app.admin.links, issue #26): for `dashboard_session_hours`,
    naming the link, the person and the département instead of a token."""
    now = time.time() if now is None else now
    expires = int(now + settings.dashboard_session_hours * 3600)
    cookie = seal(settings, {"link": link_id, "dep": departement, "name": name, "exp": expires, "sid": session_id})
    return BrowserSession(cookie, expires, max(0, expires - int(now)))


def session_content(settings: Settings, session: Session, value: str | None) -> dict[str, Any] | None:
    """A live session cookie's content (`token`, or `link`, `dep` and `name`): None if absent, tampered with,
    expired, without a `sid` (sealed before sessions could be ended) or ended by `/deconnexion`."""
    data = unseal(settings, value)
    if not data or not isinstance(data.get("sid"), str) or not (data.get("token") or data.get("link")):
        return None
    if session.get(BrowserSessionRevocation, data["sid"][:64]) is not None:
        return None
    return data


def session_token(settings: Settings, session: Session, value: str | None) -> str | None:
    """The access token of a live session cookie opened by the identity provider (None otherwise)."""
    data = session_content(settings, session, value)
    return str(data["token"]) if data and data.get("token") else None


def end_session(settings: Settings, session: Session, value: str | None) -> bool:
    """`/deconnexion`: the session's `sid` recorded as revoked until the session would have expired (the
    expired ones purged meanwhile). Returns whether a live session was ended. Inside the caller's write
    transaction."""
    session.execute(delete(BrowserSessionRevocation).where(BrowserSessionRevocation.expires_at < datetime.now(UTC)))
    data = unseal(settings, value)
    if not data or not isinstance(data.get("sid"), str):
        return False
    expires = datetime.fromtimestamp(float(data["exp"]), UTC)
    session.merge(BrowserSessionRevocation(session_id=data["sid"][:64], expires_at=expires))
    return True


def secure_cookies(settings: Settings) -> bool:
    """Cookies only over https: behind an https PUBLIC_URL, and always in production."""
    return settings.env is Environment.prod or str(settings.public_url or "").startswith("https://")
