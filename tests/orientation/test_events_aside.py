"""Events posted while a flux file holds SQLite's writer (issue #27, item 3): kept aside durably, answered 202
with a Location, applied in arrival order right after the file (same checks, idempotency, audit), their
episodes refreshed; a refused one shows the error the 201 path gives; a replay is never applied twice; one
kept when the server stopped is applied at the next start or the next post. PostgreSQL applies at once.

The file is a real ingestion in a thread, held inside its transaction (its progress callback waits) while
the test posts: the same writer lock, the same marker, as a monthly file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, long_write_running, session_scope
from app.models import AccessRecord, EntryEpisode, OrientationEvent, QueuedEvent, QueuedEventOutcome
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux
from tests.support.ftsupport import cli_env, passerelle
from tests.support.held_ingestion import ingestion_held
from tests.support.live_server import LiveServer
from tests.support.processes import stop

OTHER = {"nom": "MARTIN", "prenom": "ANNE", "sexe": "2", "dtnai": date(1985, 6, 2)}


def _person_a(db, tmp_path) -> int:
    day = today(db) - timedelta(days=10)
    directory = tmp_path / "a"
    directory.mkdir()
    ingest(db, write_flux(directory, [foyer(person(NIR_A))], day=day), received_on=day)
    with session_scope(db) as s:
        episode = s.scalar(select(EntryEpisode))
        assert episode is not None
        return episode.person_id


@contextmanager
def file_being_applied(db, tmp_path, fail: Exception | None = None, ends: str = "applied") -> Iterator[dict[str, Any]]:
    """A real ingestion (another person's file) held inside its transaction until the block ends; then it
    commits (or, given `fail`, raises it from inside the file: it ends `ends`) and its post-commit steps run
    (the kept events applied). Its report in `result["report"]`."""
    directory = tmp_path / "b"
    directory.mkdir()
    day = today(db) - timedelta(days=1)
    path = write_flux(directory, [foyer(person(NIR_B, **OTHER), matricule="0007777")], day=day)
    with ingestion_held(db, path, day, fail, ends) as result:
        yield result


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key, "X-Purpose": "suivi"}


def _post(http, key, pid, external_id, **fields) -> Any:
    # the service's day (Paris), not the host's: a UTC host is a day behind it from 23:00 UTC in winter
    day = fields.pop("date", None) or datetime.now(ZoneInfo("Europe/Paris")).date().isoformat()
    body = {"type": "invitation", "date": day, **fields}
    if external_id:
        body["external_id"] = external_id
    return http.post(f"/api/v1/persons/{pid}/events", json=body, headers=_headers(key))


@pytest.fixture
def sqlite(db):
    if get_engine(db).dialect.name != "sqlite":
        pytest.skip("SQLite's one writer: PostgreSQL applies at once (test_postgresql_applies_at_once)")
    return db


def test_an_event_posted_during_a_file_is_kept_aside_then_applied_after_it(sqlite, app, make_api_key, tmp_path):
    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write", "persons:read"])
    day = today(db)
    with TestClient(app, raise_server_exceptions=False) as http:
        taken = _post(http, key, pid, "used-1", type="rdv_orientation", presence="prevu")
        assert taken.status_code == 201
        with file_being_applied(db, tmp_path):
            assert long_write_running(get_engine(db))
            first = _post(http, key, pid, "aside-1", date=(day - timedelta(days=2)).isoformat())
            assert first.status_code == 202, first.text
            location = first.headers["Location"]
            assert location == first.json()["location"] and first.json()["status"] == "queued"
            # a replay while it is kept: the same row and location, kept once
            again = _post(http, key, pid, "aside-1", date=(day - timedelta(days=2)).isoformat())
            assert (again.status_code, again.headers["Location"], again.json()["created"]) == (202, location, False)
            # an external_id used for another event: kept, then refused as the 201 path refuses it
            conflict = _post(http, key, pid, "used-1")
            assert conflict.status_code == 202
            # what needs no database is refused at once (422), and an unknown person (404)
            future = _post(http, key, pid, "f-1", date=(day + timedelta(days=1)).isoformat())
            assert future.status_code == 422
            cer = _post(http, key, pid, "c-1", type="contrat", contrat="CER", date="2025-03-01")
            assert cer.status_code == 422
            assert _post(http, key, 999_999, "x-1").status_code == 404
            state = http.get(location, headers=_headers(key))
            assert state.status_code == 200 and state.json()["status"] == "queued"
            with session_scope(db) as s:  # not applied while the file runs
                assert s.scalar(select(func.count()).where(OrientationEvent.external_id == "aside-1")) == 0
                assert s.scalar(select(EntryEpisode.invitation_on).where(EntryEpisode.person_id == pid)) is None
        applied = http.get(location, headers=_headers(key)).json()
        assert applied["status"] == "applied" and applied["status_code"] == 201 and applied["created"] is True
        assert applied["event"]["external_id"] == "aside-1"
        refused = http.get(conflict.headers["Location"], headers=_headers(key)).json()
        direct = _post(http, key, pid, "used-1")
        assert (refused["status"], refused["status_code"], direct.status_code) == ("refused", 409, 409)
        assert refused["error"] == direct.json()
        # the other person's key cannot read it
        other = make_api_key(["orientation:write"], departements=["056"])
        assert http.get(location, headers=_headers(other)).status_code == 404
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).where(OrientationEvent.external_id == "aside-1")) == 1
        # the episodes were refreshed: the invitation is on the person's episode
        episode = s.scalar(select(EntryEpisode).where(EntryEpisode.person_id == pid))
        assert episode is not None and episode.invitation_on == day - timedelta(days=2)
        queued_id = int(location.rsplit("/", 1)[1])
        audit = s.scalars(
            select(AccessRecord).where(AccessRecord.person_id == pid, AccessRecord.action.like("person.event%"))
        ).all()
        mine = f'"queued": {queued_id}'
        kinds = [(a.action, a.outcome, a.endpoint, a.purpose) for a in audit if mine in (a.detail or "")]
        endpoint = f"POST /api/v1/persons/{pid}/events"
        expected = [("person.event", "ok", endpoint, "suivi"), ("person.event_queued", "ok", endpoint, None)]
        assert sorted(kinds) == expected
        assert any(a.action == "person.event" and a.outcome == "refused" for a in audit)


def test_concurrent_posts_during_a_file_are_all_kept_and_applied_in_arrival_order(sqlite, app, make_api_key, tmp_path):
    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    answers: list[httpx.Response] = []
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        with file_being_applied(db, tmp_path):

            def post(n: int) -> None:
                answers.append(_post(http, key, pid, f"burst-{n}"))

            threads = [threading.Thread(target=post, args=(n,)) for n in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert [a.status_code for a in answers] == [202] * 12
        states = [http.get(a.headers["Location"], headers=_headers(key)).json() for a in answers]
    assert {s["status"] for s in states} == {"applied"}
    by_arrival = sorted(states, key=lambda s: s["id"])
    event_ids = [s["event"]["id"] for s in by_arrival]
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == 12  # applied once each, in arrival order


def test_an_event_kept_when_the_server_stopped_is_applied_at_its_next_start(sqlite, app, make_api_key, tmp_path):
    """The file's own step never ran (a kill between the 202 and the file's end is the same for the kept
    row): the next start applies it."""
    from app.flux import bulk
    from app.main import create_app

    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    with TestClient(app, raise_server_exceptions=False) as http:
        holder = get_engine(db).connect()
        try:
            holder.begin()
            bulk.begin_ingestion(holder)  # what an ingestion takes; then "killed": rolled back, no post-commit step
            kept = _post(http, key, pid, "kept-1")
            assert kept.status_code == 202
        finally:
            holder.rollback()
            holder.close()
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).where(QueuedEventOutcome.queued_id > 0)) == 0
    with TestClient(create_app(db), raise_server_exceptions=False) as http:  # the next start
        state = http.get(kept.headers["Location"], headers=_headers(key)).json()
    assert state["status"] == "applied"
    with session_scope(db) as s:
        assert s.scalar(select(QueuedEvent.status)) == "done"


def _serve(db) -> tuple[Any, str]:
    """`passerelle serve` as a process of its own on the test database, ready."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = passerelle("serve", "--port", str(port), "--no-migrate", env=cli_env(db, "http://127.0.0.1:9"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def test_a_server_killed_after_its_202_applies_the_event_at_its_next_start(sqlite, make_api_key, tmp_path):
    """SIGKILL of the server that answered 202, and the file never finishes (its process killed too): the
    event is in the journal, and the next server's start applies it."""
    from app.flux import bulk

    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    holder = get_engine(db).connect()
    try:
        holder.begin()
        bulk.begin_ingestion(holder)  # what an ingestion takes
        server, base = _serve(db)
        kept = httpx.post(
            f"{base}/api/v1/persons/{pid}/events",
            json={"type": "invitation", "date": today(db).isoformat(), "external_id": "killed-1"},
            headers=_headers(key),
            timeout=60,
        )
        assert kept.status_code == 202, kept.text
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
    finally:
        holder.rollback()  # the file "killed" too: no post-commit step ran
        holder.close()
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(QueuedEventOutcome)) == 0
        assert s.scalar(select(func.count()).where(OrientationEvent.external_id == "killed-1")) == 0
    server, base = _serve(db)
    try:
        state = httpx.get(f"{base}{kept.headers['Location']}", headers=_headers(key), timeout=60).json()
    finally:
        stop(server)
    assert state["status"] == "applied" and state["event"]["external_id"] == "killed-1"


def test_an_event_kept_aside_is_applied_before_the_next_post(sqlite, app, make_api_key, tmp_path):
    from app.flux import bulk

    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    with TestClient(app, raise_server_exceptions=False) as http:
        holder = get_engine(db).connect()
        try:
            holder.begin()
            bulk.begin_ingestion(holder)
            kept = _post(http, key, pid, "first-1")
        finally:
            holder.rollback()
            holder.close()
        later = _post(http, key, pid, "second-1")
        assert (kept.status_code, later.status_code) == (202, 201)
        first = http.get(kept.headers["Location"], headers=_headers(key)).json()
    assert first["status"] == "applied" and first["event"]["id"] < later.json()["event"]["id"]


def test_postgresql_applies_at_once_during_a_file(db, app, make_api_key, tmp_path):
    if get_engine(db).dialect.name != "postgresql":
        pytest.skip("PostgreSQL's writers do not wait for an ingestion")
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write"])
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=60) as http, file_being_applied(db, tmp_path):
        assert not long_write_running(get_engine(db))
        answer = _post(http, key, pid, "pg-1")
    assert answer.status_code == 201, answer.text
    assert "Location" not in answer.headers


def test_a_post_that_gives_up_the_writer_leaves_its_connection_with_the_full_busy_timeout(sqlite):
    """`claim_write_unless` waits in 0.1 s steps; a connection it used goes back to the pool with the
    settings' busy timeout, or a reader drawing it later would give up its access record after 0.1 s."""
    import sqlite3

    from app.db import LongWriteRunning, claim_write_unless, session_factory

    db = sqlite
    engine = get_engine(db)
    other = sqlite3.connect(engine.url.database, isolation_level=None)  # another process's writer, say
    answers = iter([False, False, True])
    warm = [engine.connect() for _ in range(3)]  # several idle connections: a retry may draw another one
    for c in warm:
        c.close()
    try:
        other.execute("BEGIN IMMEDIATE")
        with session_factory(db)() as session, pytest.raises(LongWriteRunning):
            claim_write_unless(session, lambda: next(answers))
    finally:
        other.rollback()
        other.close()
    held = [engine.connect() for _ in range(3)]
    try:
        timeouts = {c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in held}
    finally:
        for c in held:
            c.close()
    assert timeouts == {db.sqlite_busy_timeout_seconds * 1000}
