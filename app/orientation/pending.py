"""Events kept aside while no flux has brought their person (SPEC §3: "an event that arrives before the file
that brings its person is kept aside and applied, with its own date, when the person arrives").

The person reference and the event are stored encrypted with the NIR keys (like webhook bodies), found by
keyed hashes only; the same event sent twice is kept once. They are applied after each flux
(app.orientation.arrivals), listed and dropped by an operator (`passerelle orientations pending`,
`drop-pending`, `GET /api/v1/events/pending`).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import record_action
from app.errors import Conflict, NotFound, Unprocessable
from app.models import OrientationEvent, PendingEvent
from app.models.base import utcnow
from app.orientation.references import PersonRef
from app.persons.keys import key_hash
from app.security.nir import NirProtector
from app.settings import Settings

PENDING, APPLIED, DROPPED = "pending", "applied", "dropped"
WAITING_REASON = "no person known with this reference (yet): applied when a flux brings them"
KNOWN_BY_EXTERNAL_ID, KNOWN_BY_CONTENT = "known_by_external_id", "known_by_content"
# what makes two events the same, whatever their external_id (the EventIn fields)
CONTENT_FIELDS = (
    "type",
    "date",
    "organisme",
    "type_parcours",
    "accompagnement_global",
    "structure",
    "referent",
    "channel",
    "presence",
    "contrat",
    "reason",
    "supersedes",
    "supersedes_id",
)


def content_hash(settings: Settings, departement: str, ref: PersonRef, event: dict[str, Any]) -> str:
    content = {name: event.get(name) for name in CONTENT_FIELDS}
    raw = json.dumps([departement, ref.as_dict(), content], sort_keys=True, default=str)
    return key_hash(settings.hmac_key, "pending-event|" + raw)


def _protector(settings: Settings) -> NirProtector:
    return NirProtector(settings.encryption_keys, settings.hmac_key)


def payload(settings: Settings, row: PendingEvent) -> tuple[PersonRef, dict[str, Any]]:
    """The reference and the event fields a pending row holds (decrypted)."""
    data = json.loads(_protector(settings).decrypt(row.payload_encrypted))
    return PersonRef.from_dict(data["person"]), data["event"]


def keep(
    session: Session,
    settings: Settings,
    departement: str,
    ref: PersonRef,
    event: dict[str, Any],
    *,
    source: str,
    recorded_by: str,
) -> tuple[PendingEvent, str]:
    """Keep an event aside for a person not known yet (`event`: the EventIn fields, JSON-ready). Returns the
    row and PENDING (kept now) or why it was known already: the same external_id with the same content, or
    the same content as an event kept aside before (still waiting, or dropped by an operator: re-sending
    the same file does not bring it back). An external_id already used for another event is a conflict."""
    digest = content_hash(settings, departement, ref, event)
    external_id = event.get("external_id")
    if external_id:
        used = session.scalar(
            select(OrientationEvent.id).where(
                OrientationEvent.departement_code == departement, OrientationEvent.external_id == external_id
            )
        )
        if used is not None:
            raise Conflict(f"external_id {external_id!r} is already used for another person's event")
        same_id = session.scalar(
            select(PendingEvent).where(
                PendingEvent.departement_code == departement,
                PendingEvent.external_id == external_id,
                PendingEvent.status != APPLIED,
            )
        )
        if same_id is not None:
            if same_id.content_hash == digest:
                return same_id, KNOWN_BY_EXTERNAL_ID
            raise Conflict(
                f"external_id {external_id!r} is already used for another event; "
                "send a correction with its own external_id and `supersedes`."
            )
    twin = session.scalar(
        select(PendingEvent)
        .where(
            PendingEvent.departement_code == departement,
            PendingEvent.content_hash == digest,
            PendingEvent.status != APPLIED,
        )
        .order_by(PendingEvent.id)
        .limit(1)
    )
    if twin is not None:
        return twin, KNOWN_BY_CONTENT
    row = PendingEvent(
        departement_code=departement,
        source=source,
        person_key=ref.key(settings),
        payload_encrypted=_protector(settings).encrypt(
            json.dumps({"person": ref.as_dict(), "event": event}, sort_keys=True, default=str)
        ),
        content_hash=digest,
        external_id=external_id,
        event_type=event["type"],
        event_date=date.fromisoformat(str(event["date"])),
        recorded_by=recorded_by[:120],
        status=PENDING,
        reason=WAITING_REASON,
    )
    session.add(row)
    session.flush()
    return row, PENDING


def describe(row: PendingEvent) -> dict[str, Any]:
    """A pending event as an operator sees it: never the person reference."""
    return {
        "id": row.id,
        "departement": row.departement_code,
        "source": row.source,
        "type": row.event_type,
        "date": row.event_date.isoformat(),
        "external_id": row.external_id,
        "status": row.status,
        "reason": row.reason,
        "received_at": row.received_at.isoformat() if row.received_at else None,
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "person_id": row.person_id,
        "event_id": row.event_id,
    }


def listing(
    session: Session, departements: list[str] | None, status: str | None = PENDING, limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    """Events kept aside, oldest first, in these départements (None: all, for an operator)."""
    query = select(PendingEvent)
    if departements is not None:
        query = query.where(PendingEvent.departement_code.in_(departements))
    if status is not None:
        query = query.where(PendingEvent.status == status)
    rows = session.scalars(query.order_by(PendingEvent.id).limit(limit).offset(offset)).all()
    return [describe(r) for r in rows]


def get(session: Session, departements: list[str] | None, pending_id: int, *, for_update: bool = False) -> PendingEvent:
    """One event kept aside, if it is of these départements (None: any, for an operator)."""
    row = session.get(PendingEvent, pending_id, with_for_update=for_update)
    if row is None or (departements is not None and row.departement_code not in departements):
        raise NotFound(f"no pending event {pending_id}")
    return row


def drop(session: Session, departements: list[str] | None, pending_id: int, reason: str, by: str) -> PendingEvent:
    """An operator drops an event kept aside (a wrong reference, a person who will never come): audited."""
    row = get(session, departements, pending_id, for_update=True)  # not while a flux applies it
    if row.status != PENDING:
        raise Conflict(f"pending event {pending_id} is {row.status} already")
    reason = reason.strip()
    if not reason:
        raise Unprocessable("give the reason the event is dropped")
    row.status, row.reason = DROPPED, reason[:300]
    row.resolved_at, row.resolved_by = utcnow(), by[:120]
    record_action(
        session,
        by,
        "orientation.pending_drop",
        row.departement_code,
        detail={"pending": row.id, "type": row.event_type},
    )
    session.flush()
    return row
