"""Test fixtures: a real database (SQLite by default, PostgreSQL when PASSERELLE_TEST_DATABASE_URL is set),
built by the real migrations, emptied between tests; the real app over HTTP; a local identity provider."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import authlib.deprecate  # noqa: F401 - sets its warnings to "always" on import: filtered just below
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from app import migrate as migrations
from app.db import dispose_engines, session_scope
from app.settings import Settings
from tests.support.database import AUDIENCE, ISSUER, Database, make_settings, truncate
from tests.support.processes import stop_all

# fixtures shared across domains: the fake France Travail (a separate process), the SMTP sink, a real Redis
pytest_plugins = ["tests.support.ftsupport", "tests.support.smtp", "tests.support.redisupport"]

warnings.filterwarnings("ignore", message="The httpx module is deprecated")  # authlib's (pyproject.toml)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """Every process a test started (tests.support.processes.spawn) is stopped when it ends, pass or fail."""
    yield
    stop_all()


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(tmp_path_factory.mktemp("db"), "main")
    yield db
    dispose_engines()
    db.drop()


@pytest.fixture(scope="session")
def jwk() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory: pytest.TempPathFactory, jwk: RSAKey) -> Path:
    path = tmp_path_factory.mktemp("idp") / "jwks.json"
    path.write_text(json.dumps(KeySet([jwk]).as_dict(private=False)))
    return path


@pytest.fixture(scope="session")
def settings(database: Database, tmp_path_factory: pytest.TempPathFactory, jwks_file: Path) -> Settings:
    s = make_settings(database.url, tmp_path_factory.mktemp("data"), jwks_file)
    migrations.upgrade(s)
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Settings]:
    """An empty database at head (tables emptied after the test)."""
    truncate(settings)
    yield settings
    truncate(settings)


@pytest.fixture
def app(db: Settings) -> Any:
    from app.main import create_app

    return create_app(db)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def make_api_key(db: Settings) -> Callable[..., str]:
    from app.admin.clients import create_client

    counter = {"n": 0}

    def factory(scopes: list[str], departements: list[str] | None = None, name: str | None = None) -> str:
        counter["n"] += 1
        with session_scope(db, write=True) as session:  # a writer says so (app.db.claim_write)
            created = create_client(
                session,
                db,
                name=name or f"client-{counter['n']}",
                departements=departements or ["055"],
                scopes=scopes,
            )
        return created.key

    return factory


@pytest.fixture
def make_token(jwk: RSAKey) -> Callable[..., str]:
    def factory(
        *,
        roles: list[str] | None = None,
        departements: list[str] | None = None,
        iss: str = ISSUER,
        aud: str = AUDIENCE,
        exp_in: int = 300,
        key: RSAKey | None = None,
        sub: str = "agent-42",
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "sub": sub,
            "iat": now,
            "exp": now + exp_in,
            "roles": roles or [],
            "departements": departements or ["055"],
            "preferred_username": "c.analyste",
            "family_name": "Analyste",
            "given_name": "Claire",
        }
        claims.update(extra or {})
        signing = key or jwk
        return jwt.encode({"alg": "RS256", "kid": signing.kid}, claims, signing)

    return factory
