"""Events kept aside (app.orientation.pending) applied when a flux brings their person: after each ingestion
commits (app.flux.loader), in their own transaction, each with its own date, so that the episodes are those
of the same facts received in any order."""

from __future__ import annotations

import time

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import job_principal, record_action
from app.db import get_engine, one_of, session_scope
from app.errors import PasserelleError
from app.models import PendingEvent, Person
from app.models.base import utcnow
from app.orientation import episodes as episode_service
from app.orientation import pending
from app.orientation.references import AMBIGUOUS, find_many
from app.orientation.service import EventIn, record_once
from app.settings import Settings

log = structlog.get_logger(__name__)

PRINCIPAL = job_principal("orientations pending")
SOURCE = {"csv": "import", "api": "api"}
CHUNK = 500  # orientation_events.source of what each kind of pending became


def apply_pending(settings: Settings, departement: str) -> int:
    """Apply the events kept aside in the département whose person is now known (one, not several). Returns
    how many were applied (recorded, or found recorded already). Called after a flux commits; if it fails,
    they stay pending for the next flux."""
    with get_engine(settings).connect() as conn:
        waiting_any = conn.execute(
            select(PendingEvent.id)
            .where(PendingEvent.departement_code == departement, PendingEvent.status == pending.PENDING)
            .limit(1)
        ).first()
    if waiting_any is None:
        return 0
    started = time.perf_counter()
    applied = waiting = 0
    last = 0
    while True:
        # a short transaction per chunk: writers (event posts) wait at most one chunk, as for episode refreshes
        with session_scope(settings, write=True) as session:
            done, left, last = _apply_chunk(session, settings, departement, last)
        applied, waiting = applied + done, waiting + left
        if not last:
            break
    log.info(
        "pending_events_applied",
        departement=departement,
        applied=applied,
        waiting=waiting,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
    return applied


def _apply_chunk(session: Session, settings: Settings, departement: str, after: int) -> tuple[int, int, int]:
    """One chunk of the events kept aside (ids after `after`, in the order received): (applied, still
    waiting, the chunk's last id or 0 when it was the last chunk)."""
    rows = session.scalars(
        select(PendingEvent)
        .where(
            PendingEvent.departement_code == departement,
            PendingEvent.status == pending.PENDING,
            PendingEvent.id > after,
        )
        .order_by(PendingEvent.id)
        .limit(CHUNK)
        .with_for_update()  # PostgreSQL: two files' re-matchings never apply the same event twice
    ).all()
    decoded = []
    for row in rows:
        try:
            decoded.append((row, *pending.payload(settings, row)))
        except Exception as exc:  # a row no key in force decrypts: kept, said, never dropped
            row.reason = f"unreadable with the keys in force ({type(exc).__name__}): restore its key, then re-run"
    found = find_many(session.connection(), settings, departement, [ref for _row, ref, _event in decoded])
    matched = sorted({ids[0] for ids in found.values() if len(ids) == 1})
    persons = {p.id: p for p in session.scalars(select(Person).where(one_of(session.connection(), Person.id, matched)))}
    touched: list[int] = []
    for row, ref, fields in decoded:
        ids = found[ref]
        if len(ids) != 1:
            if ids:
                row.reason = AMBIGUOUS
            continue
        person = persons[ids[0]]
        try:
            with session.begin_nested():
                event, status = record_once(
                    session,
                    settings,
                    person,
                    EventIn.model_validate(fields),
                    row.recorded_by,
                    SOURCE.get(row.source, row.source),
                    refresh=False,
                    kept_aside=True,  # checked when kept: a CER dated 2025 kept before the refusal is applied
                )
        except (PasserelleError, ValidationError, ValueError) as exc:
            row.status, row.person_id = pending.DROPPED, person.id
            row.reason = f"could not be applied: {getattr(exc, 'message', exc)}"[:300]
            row.resolved_at, row.resolved_by = utcnow(), PRINCIPAL
            continue
        row.status, row.person_id, row.event_id = pending.APPLIED, person.id, event.id
        row.reason = None if status == "applied" else f"applied already ({status})"
        row.resolved_at, row.resolved_by = utcnow(), PRINCIPAL
        touched.append(person.id)
        record_action(
            session,
            PRINCIPAL,
            "orientation.pending_apply",
            departement,
            person_id=person.id,
            detail={"pending": row.id, "event": event.id, "status": status},
        )
    session.flush()
    episode_service.refresh(session.connection(), touched)
    return len(touched), len(rows) - len(touched), rows[-1].id if len(rows) == CHUNK else 0
