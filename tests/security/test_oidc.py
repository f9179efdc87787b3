"""OIDC bearer tokens: signature, issuer, audience, expiry, against a locally generated JWKS."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc.jwk import RSAKey


def _me(client, token):
    return client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})


def test_valid_token_maps_roles_to_scopes(client, make_token):
    r = _me(client, make_token(roles=["passerelle-data-scientist"], departements=["055"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "user"
    assert body["scopes"] == ["exports:read", "persons:read", "pilotage:read"]
    assert body["departements"] == ["055"]
    assert body["agent"]["identifiant"] == "c.analyste"


def test_role_grants_scope_and_forbids_others(client, make_token):
    token = make_token(roles=["passerelle-auditor"])
    assert client.get("/api/v1/admin/clients", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    admin = make_token(roles=["passerelle-admin"])
    assert client.get("/api/v1/admin/clients", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"exp_in": -120}, "exp"),
        ({"iss": "https://evil.example/realms/x"}, "iss"),
        ({"aud": "another-app"}, "aud"),
    ],
)
def test_invalid_claims_are_refused(client, make_token, kwargs, reason):
    r = _me(client, make_token(**kwargs))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    assert reason in r.json()["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_expiry_within_leeway_is_accepted(client, make_token):
    assert _me(client, make_token(exp_in=-5)).status_code == 200


def test_bad_signature_is_refused(client, make_token, jwk):
    impostor = RSAKey.generate_key(2048, parameters={"kid": jwk.kid})
    r = _me(client, make_token(key=impostor))
    assert r.status_code == 401


def test_unknown_kid_is_refused(client, make_token):
    other = RSAKey.generate_key(2048, parameters={"kid": "unknown"})
    assert _me(client, make_token(key=other)).status_code == 401


def test_unsigned_and_garbage_tokens_are_refused(client):
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    none_alg = f"{b64({'alg': 'none'})}.{b64({'sub': 'x', 'iss': 'a'})}."
    for token in [none_alg, "not-a-jwt", "a.b.c", "eyJ" + "A" * 30]:
        r = _me(client, token)
        assert r.status_code == 401, (token, r.text)
        assert r.json()["error"] == "unauthenticated" and r.headers["WWW-Authenticate"] == "Bearer", (token, r.text)


def test_departements_claim_filters_invalid_codes(client, make_token):
    r = _me(client, make_token(departements=["055", "5", "DROP TABLE"]))
    assert r.json()["departements"] == ["055"]


def test_no_identity_provider_configured(db, make_token):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = db.model_copy(update={"oidc_issuer": None})
    with TestClient(create_app(settings)) as c:
        r = c.get("/api/v1/me", headers={"Authorization": f"Bearer {make_token()}"})
    assert r.status_code == 401
    assert "no identity provider" in r.json()["message"]


def test_jwks_from_a_url_is_cached_and_reloaded_on_rotation(db, jwk, make_token):
    import httpx
    from joserfc.jwk import KeySet

    from app.security.oidc import JwksProvider, OidcVerifier

    rotated = RSAKey.generate_key(2048, parameters={"kid": "test-key-2"})
    served = {"keys": KeySet([jwk]).as_dict(private=False)}
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        assert request.url == "https://idp.test.local/jwks"
        return httpx.Response(200, json=served["keys"])

    settings = db.model_copy(update={"oidc_jwks_file": None, "oidc_jwks_url": "https://idp.test.local/jwks",
                                     "oidc_jwks_min_refresh_seconds": 0})  # fmt: skip
    verifier = OidcVerifier(settings, JwksProvider(settings, httpx.Client(transport=httpx.MockTransport(handler))))
    assert verifier.verify(make_token()).subject == "agent-42"
    assert verifier.verify(make_token()).subject == "agent-42"
    assert calls["n"] == 1, "keys are cached"
    served["keys"] = KeySet([jwk, rotated]).as_dict(private=False)
    assert verifier.verify(make_token(key=rotated)).subject == "agent-42"
    assert calls["n"] == 2, "an unknown key id reloads the keys once"


def test_tokens_with_unknown_key_ids_reload_the_keys_at_most_once_a_minute(db, jwk, make_token):
    """50 tokens naming 50 made-up key ids made 50 fetches of the provider's keys (issue #14)."""
    import httpx
    from joserfc.jwk import KeySet

    from app.security.oidc import JwksProvider, OidcVerifier, TokenInvalid

    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(200, json=KeySet([jwk]).as_dict(private=False))

    settings = db.model_copy(update={"oidc_jwks_file": None, "oidc_jwks_url": "https://idp.test.local/jwks"})
    verifier = OidcVerifier(settings, JwksProvider(settings, httpx.Client(transport=httpx.MockTransport(handler))))
    assert verifier.verify(make_token()).subject == "agent-42"
    stranger = RSAKey.generate_key(2048).as_dict(private=True)
    for n in range(50):
        with pytest.raises(TokenInvalid, match="kid"):
            verifier.verify(make_token(key=RSAKey.import_key({**stranger, "kid": f"made-up-{n}"})))
    assert calls["n"] == 1, calls
