"""The test database: a throw-away SQLite file, or a fresh schema in the PostgreSQL test database when
PASSERELLE_TEST_DATABASE_URL is set; settings for it; emptying it between tests."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db import get_engine
from app.models.base import Base
from app.settings import Settings

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


def truncate(settings: Settings) -> None:
    """Empty every table (the database stays at head)."""
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
