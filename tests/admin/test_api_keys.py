"""API keys: generated once, only a keyed hash stored, revocation, CLI."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.db import session_scope
from app.models import ApiClient
from app.security.apikeys import generate_key, hash_key, split_key, verify_key
from tests.support.cli import run_cli


def test_key_format_and_hash():
    gen = generate_key()
    assert split_key(gen.key) == gen.prefix
    pepper = b"p" * 32
    h = hash_key(gen.key, pepper)
    assert len(h) == 64 and gen.key not in h
    assert verify_key(gen.key, h, pepper)
    assert not verify_key(gen.key + "x", h, pepper)
    assert not verify_key(gen.key, h, b"q" * 32), "the pepper is part of the hash"
    assert split_key("prsa_short_x") is None
    assert generate_key().key != gen.key


def test_only_the_hash_is_stored(db, make_api_key):
    key = make_api_key(["persons:read"])
    with session_scope(db) as s:
        row = s.scalar(select(ApiClient))
        assert row is not None
        assert key not in (row.key_hash, row.key_prefix)
        assert row.key_hash == hash_key(key, db.pepper)


def test_revoked_key_is_refused(client, db, make_api_key):
    key = make_api_key(["admin"], name="to-revoke")
    assert client.get("/api/v1/admin/clients", headers={"X-API-Key": key}).status_code == 200
    from app.admin.clients import revoke_client

    with session_scope(db) as s:
        revoke_client(s, "to-revoke")
    r = client.get("/api/v1/admin/clients", headers={"X-API-Key": key})
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]


def test_tampered_key_is_refused(client, make_api_key):
    key = make_api_key(["admin"])
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert client.get("/api/v1/admin/clients", headers={"X-API-Key": tampered}).status_code == 401


def test_last_used_is_recorded(client, db, make_api_key):
    key = make_api_key(["admin"])
    client.get("/api/v1/admin/clients", headers={"X-API-Key": key})
    with session_scope(db) as s:
        assert s.scalar(select(ApiClient.last_used_at)) is not None


def _cli(db, monkeypatch, *args):
    return run_cli(db, monkeypatch, *args)


def test_cli_create_list_revoke(client, db, monkeypatch):
    r = _cli(
        db,
        monkeypatch,
        "clients",
        "create",
        "--name",
        "plateforme",
        "--departement",
        "055",
        "--scope",
        "orientation:write",
        "--scope",
        "persons:read",
    )
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("prsa_")
    me = client.get("/api/v1/me", headers={"X-API-Key": key}).json()
    assert me["scopes"] == ["orientation:write", "persons:read"] and me["departements"] == ["055"]

    listed = _cli(db, monkeypatch, "clients", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["plateforme"]
    assert key not in listed.stdout

    dup = _cli(db, monkeypatch, "clients", "create", "--name", "plateforme", "--departement", "055", "--scope", "admin")
    assert dup.exit_code == 2 and "already exists" in dup.output

    bad_scope = _cli(db, monkeypatch, "clients", "create", "--name", "x", "--departement", "055", "--scope", "root")
    assert bad_scope.exit_code == 2 and "unknown scope" in bad_scope.output

    bad_dep = _cli(db, monkeypatch, "clients", "create", "--name", "y", "--departement", "55", "--scope", "admin")
    assert bad_dep.exit_code == 2 and "invalid département" in bad_dep.output

    assert _cli(db, monkeypatch, "clients", "revoke", "plateforme").exit_code == 0
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 401
    assert (
        _cli(db, monkeypatch, "clients", "revoke", "nobody").exit_code == 2
    )  # a wrong argument: usage (docs/operations.md)
