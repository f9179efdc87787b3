"""Validation of the OIDC bearer tokens (JWT) people present: signature, issuer, audience, expiry."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.settings import Settings


class TokenInvalid(Exception):
    """The token cannot be trusted; the message says why (never includes the token)."""


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    claims: dict[str, Any]


class JwksProvider:
    """Loads the identity provider's public keys from a file or a URL; caches and refreshes them."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self._settings = settings
        self._http = http
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._loaded_at = 0.0
        self.loads = 0  # how many times the keys were (re)loaded

    def _load(self) -> KeySet:
        if self._settings.oidc_jwks_file is not None:
            data = json.loads(self._settings.oidc_jwks_file.read_text())
        elif self._settings.oidc_jwks_url:
            client = self._http or httpx.Client(timeout=5.0)
            try:
                response = client.get(self._settings.oidc_jwks_url)
                response.raise_for_status()
                data = response.json()
            finally:
                if self._http is None:
                    client.close()
        else:
            raise TokenInvalid("no JWKS is configured for OIDC tokens")
        return KeySet.import_key_set(data)

    def get(self, force: bool = False) -> KeySet:
        """The keys, reloaded when the cache expired, or when `force`d (a token names a key we do not know:
        the provider may have rotated) but then at most once every `oidc_jwks_min_refresh_seconds` whatever
        the key id: tokens with made-up key ids never make the service hammer the provider."""
        with self._lock:
            age = time.monotonic() - self._loaded_at
            expired = age > self._settings.oidc_jwks_cache_seconds
            forced = force and age >= self._settings.oidc_jwks_min_refresh_seconds
            if self._keys is None or expired or forced:
                self.loads += 1
                try:
                    self._keys = self._load()
                except (OSError, ValueError, httpx.HTTPError, JoseError) as exc:
                    if self._keys is None:
                        raise TokenInvalid(
                            f"the identity provider's keys could not be loaded ({type(exc).__name__})"
                        ) from exc
                self._loaded_at = time.monotonic()
            return self._keys


class OidcVerifier:
    def __init__(self, settings: Settings, jwks: JwksProvider | None = None) -> None:
        self._settings = settings
        self._jwks = jwks or JwksProvider(settings)

    @property
    def configured(self) -> bool:
        return bool(self._settings.oidc_issuer and self._settings.oidc_audience)

    def verify(self, token: str) -> VerifiedToken:
        if not self.configured:
            raise TokenInvalid("bearer tokens are not accepted: no identity provider is configured")
        keys = self._jwks.get()
        try:
            try:
                decoded = jwt.decode(token, keys, algorithms=self._settings.oidc_algorithms)
            except JoseError as exc:
                # An unknown key id may mean the provider rotated its keys: reload once.
                if "kid" not in str(exc).lower() and "key" not in str(exc).lower():
                    raise
                decoded = jwt.decode(token, self._jwks.get(force=True), algorithms=self._settings.oidc_algorithms)
            registry = jwt.JWTClaimsRegistry(
                leeway=self._settings.oidc_leeway_seconds,
                iss={"essential": True, "value": str(self._settings.oidc_issuer)},
                aud={"essential": True, "value": str(self._settings.oidc_audience)},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise TokenInvalid(f"invalid bearer token: {exc.description or exc.error}") from exc
        except (ValueError, TypeError) as exc:
            raise TokenInvalid("malformed bearer token") from exc
        return VerifiedToken(subject=str(decoded.claims["sub"]), claims=dict(decoded.claims))
