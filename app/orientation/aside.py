"""Events posted while a flux file holds SQLite's writer (issue #27, item 3; docs/decisions.md, "Events during
a file on SQLite"): kept aside durably in the audit journal and answered 202, then applied in arrival order
through the normal path right after the file commits, at the server's start, and before any later event
post. PostgreSQL never keeps one aside: its writers do not wait for an ingestion.

The journal row (`queued_events`) holds the request; what became of it (`queued_event_outcomes`) is written
in the main database with the event itself, so a kill between the two commits never applies one twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from app.audit.chain import action_row
from app.audit.proof import insert_events
from app.audit.reads import PENDING_ACCESS
from app.db import AUDIT_SCHEMA, claim_write, claim_write_unless, get_engine, long_write_running, session_scope
from app.errors import PasserelleError, error_body
from app.models import OrientationEvent, Person, QueuedEvent, QueuedEventOutcome
from app.models.base import utcnow
from app.orientation.service import EventIn, check_without_database, record_event
from app.persons.keys import key_hash
from app.persons.repository import get_person, purpose_of
from app.security.auth import Agent, Principal
from app.security.source import source_of
from app.settings import Settings

log = structlog.get_logger(__name__)

QUEUED, DONE = "queued", "done"  # queued_events.status
APPLIED, REFUSED = "applied", "refused"  # queued_event_outcomes.status
CHUNK = 50  # events applied per transaction: the writer is held a fraction of a second


def location(queued_id: int) -> str:
    return f"/api/v1/events/queued/{queued_id}"


def idempotency_key(settings: Settings, person_id: int, event: EventIn) -> str:
    """The same person and the same event (external_id included): a replay is the row kept already."""
    raw = json.dumps([person_id, event.model_dump(mode="json")], sort_keys=True)
    return key_hash(settings.hmac_key, "queued-event|" + raw)


def _caller(principal: Principal, request: Any) -> dict[str, Any]:
    """What applying the event later needs of its caller: its rights, and its request's audit fields."""
    agent = principal.agent
    return {
        "kind": principal.kind,
        "name": principal.name,
        "scopes": sorted(principal.scopes),
        "departements": sorted(principal.departements),
        "client_id": principal.client_id,
        "agent": [agent.identifiant, agent.nom, agent.prenom] if agent else None,
        "endpoint": f"{request.method} {request.url.path}",
        "request_id": getattr(request.state, "request_id", None),
        "purpose": purpose_of(request),
        "source_address": source_of(request),
    }


def _principal(row: QueuedEvent) -> Principal:
    caller = row.request["caller"]
    agent = caller.get("agent")
    return Principal(
        kind=caller["kind"],
        id=row.principal_id,
        name=caller["name"],
        scopes=frozenset(caller["scopes"]),
        departements=frozenset(caller["departements"]),
        agent=Agent(*agent) if agent else None,
        client_id=caller.get("client_id"),
    )


def keep(
    session: Session, settings: Settings, principal: Principal, request: Any, person_id: int, event: EventIn
) -> tuple[int, bool]:
    """Keep an event aside, committed with `synchronous=FULL` before this returns: (its id, kept now). What
    needs no database is checked first (422 at once); the person must be one the caller reads (404 at once:
    reading never waits for the writer). A replay of an event kept aside (same person, same external_id and
    content) is that row, unless it was refused. Audited (`person.event_queued`) in the same journal transaction."""
    check_without_database(event, settings)
    person = get_person(session, principal, person_id)
    key = idempotency_key(settings, person_id, event)
    caller = _caller(principal, request)
    session.commit()  # what authentication and the person's read began
    bind = session.get_bind()
    with (bind if isinstance(bind, Engine) else bind.engine).connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute(f"PRAGMA {AUDIT_SCHEMA}.synchronous=FULL")  # outside a transaction, as SQLite requires
        try:
            with conn.begin():
                # the journal's write lock first (a no-op write): two replays at once are one row
                conn.exec_driver_sql(f"UPDATE {AUDIT_SCHEMA}.queued_events SET status = status WHERE 0")
                known = select(QueuedEvent.id).where(QueuedEvent.idempotency_key == key)
                # idempotent as the 201 path is: by external_id (two identical posts without one are two)
                replays = conn.scalars(known.order_by(QueuedEvent.id.desc())).all() if event.external_id else []
                for known_id in replays:
                    outcome = select(QueuedEventOutcome.status).where(QueuedEventOutcome.queued_id == known_id)
                    if conn.scalar(outcome) in (None, APPLIED):
                        return known_id, False
                queued_id = conn.execute(
                    insert(QueuedEvent)
                    .values(
                        received_at=utcnow(),
                        departement_code=person.departement_code,
                        person_id=person.id,
                        principal_id=principal.id[:120],
                        idempotency_key=key,
                        request={"event": event.model_dump(mode="json"), "caller": caller},
                        status=QUEUED,
                    )
                    .returning(QueuedEvent.id)
                ).scalar_one()
                row = action_row(
                    principal.id,
                    "person.event_queued",
                    person.departement_code,
                    person_id=person.id,
                    detail={"queued": queued_id},
                    endpoint=caller["endpoint"],
                    agent=principal.agent.identifiant if principal.agent else None,
                )
                insert_events(conn, [row])
            return int(queued_id), True
        finally:
            raw.execute(f"PRAGMA {AUDIT_SCHEMA}.synchronous=NORMAL")


def _queued_rows(session: Session, limit: int = CHUNK) -> list[QueuedEvent]:
    """The next events kept aside, in arrival order, read in a transaction of their own: the transaction
    that applies them must not have read the journal before it writes its audit events there (SQLite refuses
    to turn a read snapshot that others wrote past into a write)."""
    session.commit()
    rows = list(
        session.scalars(select(QueuedEvent).where(QueuedEvent.status == QUEUED).order_by(QueuedEvent.id).limit(limit))
    )
    session.commit()
    return rows


def apply_queued(session: Session, settings: Settings, rows: list[QueuedEvent]) -> list[int]:
    """Apply these events kept aside (`_queued_rows`), in arrival order, in the caller's transaction (which
    has claimed the writer): each through `record_event` (same checks, idempotency by external_id, episode
    refresh), audited as its post would have been, its outcome stored with it; one applied already (an
    outcome in the main database) is skipped. Returns the journal rows handled (to be marked done once this
    transaction commits)."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    known = set(session.scalars(select(QueuedEventOutcome.queued_id).where(QueuedEventOutcome.queued_id.in_(ids))))
    for row in rows:
        if row.id not in known:
            session.add(_apply_one(session, settings, row))
    session.flush()
    return ids


def _apply_one(session: Session, settings: Settings, row: QueuedEvent) -> QueuedEventOutcome:
    principal, caller = _principal(row), row.request["caller"]
    audit = {
        "person_id": row.person_id,
        "endpoint": caller["endpoint"],
        "agent": principal.agent.identifiant if principal.agent else None,
        "request_id": caller.get("request_id"),
        "purpose": caller.get("purpose"),
        "source_address": caller.get("source_address"),
    }
    try:
        with session.begin_nested():
            person = get_person(session, principal, row.person_id)
            event = EventIn.model_validate(row.request["event"])
            stored, created = record_event(session, settings, person, event, recorded_by=principal.id)
    except (PasserelleError, ValidationError) as exc:
        error = exc if isinstance(exc, PasserelleError) else PasserelleError(str(exc), code="invalid_input")
        status = 422 if isinstance(exc, ValidationError) else error.status_code
        session.info.setdefault(PENDING_ACCESS, []).append(
            action_row(
                principal.id,
                "person.event",
                row.departement_code,
                outcome="refused",
                detail={"queued": row.id, "error": error.code},
                **audit,
            )
        )
        return QueuedEventOutcome(
            queued_id=row.id,
            departement_code=row.departement_code,
            person_id=row.person_id,
            status=REFUSED,
            status_code=status,
            error=error_body(error.code, error.message, error.details),
        )
    session.info.setdefault(PENDING_ACCESS, []).append(
        action_row(principal.id, "person.event", row.departement_code, detail={"queued": row.id}, **audit)
    )
    return QueuedEventOutcome(
        queued_id=row.id,
        departement_code=row.departement_code,
        person_id=row.person_id,
        status=APPLIED,
        status_code=201 if created else 200,
        event_id=stored.id,
    )


def _mark_done(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(update(QueuedEvent).where(QueuedEvent.id.in_(ids)).values(status=DONE))
        session.commit()


def apply_before_write(session: Session, settings: Settings, busy: Callable[[], bool]) -> None:
    """Before a request's own event: the events kept aside earlier, applied first (arrival order), each
    chunk in its own transaction. `busy`: a long writer began meanwhile (`LongWriteRunning` raised).
    PostgreSQL: nothing is ever kept aside."""
    if session.get_bind().dialect.name != "sqlite":
        return
    while rows := _queued_rows(session):
        claim_write_unless(session, busy)
        try:
            done = apply_queued(session, settings, rows)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        _mark_done(session, done)


def drain(settings: Settings) -> int:
    """Apply every event kept aside (after a file's commit, at the server's start). Returns how many journal
    rows were handled. Skipped while a long writer holds SQLite's writer: its own end drains them."""
    engine = get_engine(settings)
    if engine.dialect.name != "sqlite" or long_write_running(engine):
        return 0
    handled = 0
    with session_scope(settings) as session:
        while rows := _queued_rows(session):
            claim_write(session)
            done = apply_queued(session, settings, rows)
            session.commit()
            _mark_done(session, done)
            handled += len(done)
            log.info("queued_events_applied", rows=len(done))
    return handled


@dataclass
class QueuedState:
    row: QueuedEvent
    outcome: QueuedEventOutcome | None
    event: OrientationEvent | None
    person: Person | None


def state(session: Session, departements: list[str], queued_id: int) -> QueuedState | None:
    """An event kept aside, if it is of these départements, and what became of it."""
    row = session.get(QueuedEvent, queued_id)
    if row is None or row.departement_code not in departements:
        return None
    outcome = session.get(QueuedEventOutcome, queued_id)
    event = session.get(OrientationEvent, outcome.event_id) if outcome and outcome.event_id else None
    return QueuedState(row, outcome, event, session.get(Person, row.person_id))
