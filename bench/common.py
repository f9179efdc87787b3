"""What the benchmarks share: a fresh database to run in (a SQLite file, or a PostgreSQL schema)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from app.db import audit_path


def fresh_pg_schema(base_url: str, schema: str) -> str:
    """Drop and create `schema` in the database at `base_url`; the URL whose connections work in it."""
    engine = create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{base_url}?options=-csearch_path%3D{schema}"


def drop_pg_schema(base_url: str, schema: str) -> None:
    engine = create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def fresh_sqlite(path: Path) -> str:
    """Remove a SQLite database and its audit journal (with their WAL files); the URL of a new one there."""
    for base in (path, Path(audit_path(str(path)))):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"
