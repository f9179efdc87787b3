"""Every route declares its scope; the authorisation matrix (no key / wrong scope / right scope)."""

from __future__ import annotations

import pytest

from app.security.scopes import ALL_SCOPES
from tests.support.helpers import (
    ANY_SCOPE_PATHS,
    LINK_PATHS,
    SIGNED_PATHS,
    UNAUTHENTICATED_PATHS,
    api_routes,
    declared_scopes,
    example_path,
)


def test_every_route_requires_authentication_and_declares_a_scope(app):
    problems = []
    for route in api_routes(app):
        if route.path in UNAUTHENTICATED_PATHS | SIGNED_PATHS | LINK_PATHS:
            assert declared_scopes(route) is None, f"{route.path} takes no key or token"
            continue
        scopes = declared_scopes(route)
        if scopes is None:
            problems.append(f"{sorted(route.methods)} {route.path}: no authentication")
        elif route.path not in ANY_SCOPE_PATHS and not any(scopes):
            problems.append(f"{sorted(route.methods)} {route.path}: no scope declared")
        for group in scopes or []:
            for s in group:
                assert s in ALL_SCOPES, f"{route.path} declares unknown scope {s}"
    assert not problems, "\n".join(problems)


def _route_cases(app):
    cases = []
    for route in api_routes(app):
        scopes = declared_scopes(route)
        if not scopes or not any(scopes):
            continue
        needed = sorted({s for group in scopes for s in group})
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            cases.append((method, route.path, needed))
    return cases


def _call(client, method, path, headers):
    from app.main import UPLOAD_ROUTES

    url = example_path(path)
    kwargs = {"headers": headers}
    if method in {"POST", "PUT", "PATCH"}:
        if any(p.match(url) for p in UPLOAD_ROUTES):
            kwargs["files"] = {"file": ("x.xml", b"<x/>")}
        else:
            kwargs["json"] = {}
    return client.request(method, url, **kwargs)


def test_authorization_matrix(db, make_api_key):
    from fastapi.testclient import TestClient

    from app.main import create_app

    # two refused probes per route from one address: past `max_refused_per_minute` (60) they would be answered
    # 429 (tests/audit/test_refusals.py), not 401, as soon as the app has more than 30 scoped routes
    app = create_app(db.model_copy(update={"max_refused_per_minute": 0}))
    cases = _route_cases(app)
    assert cases, "the app has scoped routes"
    with TestClient(app, raise_server_exceptions=False) as client:
        _check_matrix(client, cases, make_api_key)


def _check_matrix(client, cases, make_api_key):
    for method, path, needed in cases:
        no_key = _call(client, method, path, {})
        assert no_key.status_code == 401, (method, path, no_key.text)
        assert no_key.json()["error"] == "unauthenticated"

        bad_key = _call(client, method, path, {"X-API-Key": "prsa_000000000000_" + "x" * 43})
        assert bad_key.status_code == 401, (method, path)

        others = sorted(ALL_SCOPES - set(needed))
        wrong = make_api_key(others)
        r = _call(client, method, path, {"X-API-Key": wrong})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden"
        assert any(f"'{n}'" in r.json()["message"] for n in needed), r.text  # the scope as clients write it

        right = make_api_key(needed)
        r = _call(client, method, path, {"X-API-Key": right})
        assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)


@pytest.mark.parametrize("header_style", ["x-api-key", "bearer"])
def test_api_key_accepted_in_both_headers(client, make_api_key, header_style):
    key = make_api_key(["admin"])
    headers = {"X-API-Key": key} if header_style == "x-api-key" else {"Authorization": f"Bearer {key}"}
    r = client.get("/api/v1/admin/clients", headers=headers)
    assert r.status_code == 200, r.text


def test_admin_sees_only_clients_of_its_departements(client, make_api_key):
    admin_055 = make_api_key(["admin"], ["055"], name="admin-055")
    make_api_key(["persons:read"], ["054"], name="reader-054")
    make_api_key(["persons:read"], ["055"], name="reader-055")
    names = {c["name"] for c in client.get("/api/v1/admin/clients", headers={"X-API-Key": admin_055}).json()}
    assert names == {"admin-055", "reader-055"}


def test_agent_identity_header(client, make_api_key):
    key = make_api_key(["persons:read"])
    headers = {
        "X-API-Key": key,
        "X-Agent-Identifiant": "AG123",
        "X-Agent-Nom": "Martin",
        "X-Agent-Prenom": "Léa".encode(),
    }
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200
    assert r.json()["agent"] == {"identifiant": "AG123", "nom": "Martin", "prenom": "Léa"}

    partial = client.get("/api/v1/me", headers={"X-API-Key": key, "X-Agent-Identifiant": "AG123"})
    assert partial.status_code == 422
    assert partial.json()["error"] == "invalid_agent_header"

    pipe = client.get("/api/v1/me", headers={**headers, "X-Agent-Nom": "Mar|tin"})
    assert pipe.status_code == 422
    assert "'|'" in pipe.json()["message"]
