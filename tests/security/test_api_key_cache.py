"""The cache of accepted API keys (issue #27, item 1): a request of a known key costs no query, a key revoked
by another process is refused within the cache's TTL at most, one revoked in this process at once, and the
cache never answers for a key it did not verify."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, update

from app.models import ApiClient
from app.models.base import utcnow
from app.security.auth import ApiKeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _revoke_elsewhere(db: Any, name: str) -> None:
    """Revoke as another process does (`passerelle clients revoke` from cron): a connection of its own, and
    none of this process's in-process notice."""
    engine = create_engine(db.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(ApiClient).where(ApiClient.name == name).values(revoked_at=utcnow()))
    finally:
        engine.dispose()


@contextmanager
def _queries_on_api_clients(app: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_clients" in statement:
            seen.append(statement)

    event.listen(app.state.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(app.state.engine, "before_cursor_execute", before)


def test_a_known_key_costs_no_query_and_a_revocation_elsewhere_is_honoured_within_the_ttl(
    app, client, db, make_api_key
):
    clock = Clock()
    app.state.api_key_cache = ApiKeyCache(30.0, clock=clock)
    key = make_api_key(["persons:read"], name="plateforme")
    with _queries_on_api_clients(app) as seen:
        assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
        read_once = len(seen)
        assert read_once >= 1, "the first request reads the client"
        for _ in range(3):
            assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
        assert len(seen) == read_once, "the next ones are served from the cache"

        _revoke_elsewhere(db, "plateforme")
        clock.now += 29.0  # within the TTL: the bound documented (PASSERELLE_API_KEY_CACHE_SECONDS)
        assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
        clock.now += 1.5  # past it: read again, refused
        r = client.get("/api/v1/me", headers={"X-API-Key": key})
        assert r.status_code == 401 and "revoked" in r.json()["message"]
        clock.now += 100.0
        assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 401, "a refusal is not cached"


def test_a_revocation_in_this_process_is_honoured_at_once(app, client, db, make_api_key):
    from app.admin.clients import revoke_client
    from app.db import session_scope

    app.state.api_key_cache = ApiKeyCache(3600.0)
    key = make_api_key(["persons:read"], name="a-revoquer")
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    with session_scope(db, write=True) as session:
        revoke_client(session, "a-revoquer")
    r = client.get("/api/v1/me", headers={"X-API-Key": key})
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_no_cache_reads_the_client_on_every_request(app, client, db, make_api_key):
    app.state.api_key_cache = ApiKeyCache(0.0)
    key = make_api_key(["persons:read"], name="sans-cache")
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    _revoke_elsewhere(db, "sans-cache")
    assert client.get("/api/v1/me", headers={"X-API-Key": key}).status_code == 401


def test_the_cache_never_answers_for_another_key(app, client, make_api_key):
    app.state.api_key_cache = ApiKeyCache(3600.0)
    first = make_api_key(["persons:read"], departements=["055"], name="premier")
    second = make_api_key(["persons:read", "orientation:write"], departements=["054"], name="second")
    me_first = client.get("/api/v1/me", headers={"X-API-Key": first}).json()
    me_second = client.get("/api/v1/me", headers={"X-API-Key": second}).json()
    assert (me_first["name"], me_first["departements"]) == ("premier", ["055"])
    assert (me_second["name"], me_second["departements"], me_second["scopes"]) == (
        "second",
        ["054"],
        ["orientation:write", "persons:read"],
    )
    # the same prefix with another secret: never the cached client, refused
    forged = first[: first.rindex("_") + 1] + ("A" * 43 if not first.endswith("A" * 43) else "B" * 43)
    assert client.get("/api/v1/me", headers={"X-API-Key": forged}).status_code == 401
    # a one-character change of a cached key, also as a bearer token
    tampered = first[:-1] + ("A" if first[-1] != "A" else "B")
    assert client.get("/api/v1/me", headers={"X-API-Key": tampered}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    assert client.get("/api/v1/me", headers={"X-API-Key": first}).json()["name"] == "premier"
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {second}"}).json()["name"] == "second"


def test_the_cache_is_bounded_and_forgets_the_oldest():
    from app.security.auth import Principal

    clock = Clock()
    cache = ApiKeyCache(60.0, capacity=2, clock=clock)
    principal = Principal(kind="client", id="client:1", name="x", scopes=frozenset(), departements=frozenset())
    from app.security import auth

    for digest in ("a", "b", "c"):
        cache.put(digest, principal, None, auth._revocations)
    assert cache.get("a") is None
    assert cache.get("b") is not None and cache.get("c") is not None
    clock.now += 60.0
    assert cache.get("b") is None, "expired at its TTL"
