"""Test fixtures: a real database (SQLite by default, PostgreSQL when PASSERELLE_TEST_DATABASE_URL is set),
built by the real migrations, emptied between tests; the real app over HTTP; a local identity provider."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import authlib.deprecate  # noqa: F401 - sets its warnings to "always" on import: filtered just below
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import migrate as migrations
from app.db import dispose_engines, get_engine, session_scope
from app.models.base import Base
from app.settings import Settings
from tests.support.processes import stop_all

warnings.filterwarnings("ignore", message="The httpx module is deprecated")  # authlib's (pyproject.toml)

PG_ENV = "PASSERELLE_TEST_DATABASE_URL"
ISSUER = "https://idp.test.local/realms/departement"
AUDIENCE = "passerelle-rsa"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode()


def _pg_schema_url(base_url: str, schema: str) -> str:
    url = make_url(base_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def _ensure_pg(base_url: str) -> None:
    engine = create_engine(base_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        # A run asked for PostgreSQL: an unreachable server is a failure, never a skip.
        pytest.exit(f"PostgreSQL at {make_url(base_url).render_as_string()} is unreachable: {exc}", returncode=3)
    finally:
        engine.dispose()


class Database:
    """A throw-away database: a SQLite file, or a fresh schema in the PostgreSQL test database."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.pg_base = os.environ.get(PG_ENV)
        if self.pg_base:
            _ensure_pg(self.pg_base)
            self.schema = f"t_{name}_{uuid.uuid4().hex[:8]}"
            with create_engine(self.pg_base).begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = _pg_schema_url(self.pg_base, self.schema)
        else:
            self.url = f"sqlite:///{(tmp / f'{name}.db').as_posix()}"

    @property
    def is_postgres(self) -> bool:
        return bool(self.pg_base)

    def drop(self) -> None:
        if self.pg_base:
            engine = create_engine(self.pg_base)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            engine.dispose()


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


def make_settings(database_url: str, data_dir: Path, jwks_file: Path | None = None, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "data_dir": data_dir,
        "nir_encryption_keys": f"k1:{_b64(32)}",
        "nir_hmac_key": _b64(32),
        "api_key_pepper": _b64(32),
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_file": jwks_file,
        "log_json": True,
    }
    values.update(over)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(database: Database, tmp_path_factory: pytest.TempPathFactory, jwks_file: Path) -> Settings:
    s = make_settings(database.url, tmp_path_factory.mktemp("data"), jwks_file)
    migrations.upgrade(s)
    return s


def _truncate(settings: Settings) -> None:
    engine = get_engine(settings)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if settings.is_sqlite:
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            # the audit events' guard (migration 0015) refuses TRUNCATE: the superuser of the tests sets it aside
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in tables) + " RESTART IDENTITY CASCADE"))


@pytest.fixture
def db(settings: Settings) -> Iterator[Settings]:
    """An empty database at head (tables emptied after the test)."""
    _truncate(settings)
    yield settings
    _truncate(settings)


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
