"""Review of issue #27 (request cost, events kept aside during a file on SQLite, the early reading process): each
test shows a defect found in review (SQLite and PostgreSQL: PASSERELLE_TEST_DATABASE_URL)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.clock import today
from app.db import get_engine
from app.flux.envelope import FluxRejected
from tests.orientation.test_events_aside import _headers, _person_a, _post, file_being_applied
from tests.orientation.test_events_aside import sqlite as sqlite


def test_events_kept_aside_during_a_file_that_is_then_rejected_are_applied_after_it(
    sqlite,
    app,
    make_api_key,
    tmp_path,
):
    """A file that held SQLite's writer and then failed (rejected at its end, a broken record, a crash) kept
    the events posted meanwhile aside like an applied one; they must be applied once it ends, not left
    queued until someone posts again or the server restarts (only the applied path drained them)."""
    db = sqlite
    pid = _person_a(db, tmp_path)
    key = make_api_key(["orientation:write", "persons:read"])
    with TestClient(app, raise_server_exceptions=False) as http:
        with file_being_applied(db, tmp_path, FluxRejected("a broken record at the end of the file"), "rejected"):
            kept = _post(http, key, pid, "aside-rejected", date=today(db).isoformat())
            assert kept.status_code == 202, kept.text
        state = http.get(kept.headers["Location"], headers=_headers(key)).json()
        assert state["status"] == "applied", state


def test_the_purge_of_a_person_takes_their_events_kept_aside_and_outcomes(db, tmp_path):
    """Retention (`passerelle purge`): a person past retention goes "with everything held about them". An
    event kept aside for them (`queued_events`: the event's body, the agent's name, in the journal on SQLite)
    and its outcome (`queued_event_outcomes`) stayed forever."""
    from sqlalchemy import func, select

    from app.admin.purge import purge
    from app.models import QueuedEvent, QueuedEventOutcome
    from tests.admin.test_purge import _scene

    ids = _scene(db, tmp_path)
    gone = ids["ANCIEN"]
    from app.db import session_scope

    with session_scope(db) as s:
        caller = {"agent": ["a1", "DUPONT", "JEAN"], "kind": "client", "name": "c", "scopes": [], "departements": []}
        s.add(QueuedEvent(id=1, departement_code="055", person_id=gone, principal_id="client:1",
                          idempotency_key="k", request={"event": {"type": "invitation"}, "caller": caller},
                          status="done"))  # fmt: skip
        s.add(QueuedEventOutcome(queued_id=1, departement_code="055", person_id=gone, status="refused",
                                 status_code=409, error={"error": "conflict"}))  # fmt: skip
    purge(get_engine(db), db)
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(QueuedEvent).where(QueuedEvent.person_id == gone)) == 0
        outcomes = select(func.count()).select_from(QueuedEventOutcome).where(QueuedEventOutcome.person_id == gone)
        assert s.scalar(outcomes) == 0


def test_a_queued_events_id_is_never_given_twice(db):
    """The newest kept event deleted (its person purged), the next one gets a new id: an old Location
    (`/api/v1/events/queued/{id}`) never names another event (SQLite reuses the largest rowid otherwise)."""
    from sqlalchemy import delete, insert, select

    from app.models import QueuedEvent

    table = QueuedEvent.__table__
    row = {
        "departement_code": "055", "person_id": 1, "principal_id": "client:1", "idempotency_key": "k",
        "request": {}, "status": "done",
    }  # fmt: skip
    with get_engine(db).begin() as conn:
        first = conn.execute(insert(table).values(**row).returning(table.c.id)).scalar_one()
        conn.execute(delete(table).where(table.c.id == first))
        second = conn.execute(insert(table).values(**row).returning(table.c.id)).scalar_one()
        conn.execute(delete(table))
        assert conn.execute(select(table.c.id)).first() is None
    assert second > first
