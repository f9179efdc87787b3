"""SQLite's audit journal missing (issue #23 item 13): `/ready` answers 503 and the commands name it, exit 3;
nothing recreates it but the migrations (and then empty: still named, never taken for a journal)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import migrate as migrations
from app.db import audit_path, dispose_engines
from app.main import create_app
from tests.support.cli import run_cli
from tests.support.database import PG_ENV, make_settings


@pytest.fixture
def sqlite_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(PG_ENV, raising=False)  # the journal is SQLite's: a file beside the database
    settings = make_settings(f"sqlite:///{(tmp_path / 'own.db').as_posix()}", tmp_path)
    migrations.upgrade(settings)
    dispose_engines()
    yield settings
    dispose_engines()


def _ready(settings):
    with TestClient(create_app(settings)) as client:
        response = client.get("/ready")
    dispose_engines()
    return response


def test_a_missing_journal_is_named_by_ready_and_verify_and_never_recreated(sqlite_settings, monkeypatch):
    journal = audit_path(str(sqlite_settings.sqlite_path))
    assert _ready(sqlite_settings).status_code == 200
    assert run_cli(sqlite_settings, monkeypatch, "audit", "verify").exit_code == 0
    dispose_engines()

    for suffix in ("", "-wal", "-shm"):
        (sqlite_settings.sqlite_path.parent / f"own-audit.db{suffix}").unlink(missing_ok=True)
    response = _ready(sqlite_settings)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "audit journal missing"}
    result = run_cli(sqlite_settings, monkeypatch, "audit", "verify")
    assert result.exit_code == 3, result.output
    assert f"the audit journal {journal} is missing" in result.output
    assert run_cli(sqlite_settings, monkeypatch, "audit", "seal").exit_code == 3
    dispose_engines()
    assert not (sqlite_settings.sqlite_path.parent / "own-audit.db").exists()  # nothing recreated it

    # the migrations create the file, empty: still named, never taken for the journal
    upgraded = run_cli(sqlite_settings, monkeypatch, "db", "upgrade")
    assert upgraded.exit_code == 3 and "has no audit tables" in upgraded.output
    dispose_engines()
    assert _ready(sqlite_settings).status_code == 503
    result = run_cli(sqlite_settings, monkeypatch, "audit", "verify")
    assert result.exit_code == 3 and "has no audit tables" in result.output
