"""An event kept aside while a flux file held SQLite's writer (its 202): its state (app.orientation.aside)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from app.api.deps import Authorized, SessionDep
from app.api.orientation import _event_out
from app.errors import NotFound
from app.orientation import aside
from app.persons import repository as person_service
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1", tags=["orientation"])


QUEUED_EXAMPLES = {
    "queued": {"value": {"id": 12, "status": "queued", "person_id": 4521, "received_at": "2026-12-06T20:41:07+00:00"}},
    "applied": {
        "value": {
            "id": 12,
            "status": "applied",
            "person_id": 4521,
            "received_at": "2026-12-06T20:41:07+00:00",
            "resolved_at": "2026-12-06T20:41:13+00:00",
            "status_code": 201,
            "created": True,
            "event": {"id": 98765, "type": "invitation", "date": "2026-12-06", "external_id": "rdvi-123"},
        }
    },
    "refused": {
        "value": {
            "id": 13,
            "status": "refused",
            "person_id": 4521,
            "received_at": "2026-12-06T20:41:08+00:00",
            "resolved_at": "2026-12-06T20:41:13+00:00",
            "status_code": 409,
            "error": {"error": "conflict", "message": "external_id 'rdvi-123' is already used for another event; "
                      "send a correction with its own external_id and `supersedes`.", "details": None},
        }
    },
}  # fmt: skip
QueuedId = Annotated[int, Path(ge=1, le=2**63 - 1, description="An event kept aside during a file (its 202)")]


@router.get(
    "/events/queued/{queued_id}",
    summary="The state of an event kept aside while a flux file was applied (202): queued, applied or refused",
    responses={
        200: {
            "description": "queued (not applied yet); applied (`status_code` 201, or 200 when it was known "
            "already, and the event); refused (`status_code` and the `error` body the 201 path would have given)",
            "content": {"application/json": {"examples": QUEUED_EXAMPLES}},
        },
        404: {"description": "No such event kept aside in the caller's départements"},
    },
)
def get_queued_event(
    queued_id: QueuedId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.orientation_write)],
) -> dict[str, Any]:
    found = aside.state(session, sorted(principal.departements), queued_id)
    if found is None:
        raise NotFound(f"no queued event {queued_id}")
    row, outcome = found.row, found.outcome
    out: dict[str, Any] = {
        "id": row.id,
        "status": outcome.status if outcome else aside.QUEUED,
        "person_id": row.person_id,
        "received_at": row.received_at.isoformat(),
    }
    if outcome is not None:
        out |= {"resolved_at": outcome.resolved_at.isoformat(), "status_code": outcome.status_code}
        if found.event is not None:
            out |= {"created": outcome.status_code == 201, "event": _event_out(found.event)}
        else:
            out["error"] = outcome.error
    if found.person is not None:  # the event is the person's data: its read is recorded
        person_service.audit_read(request, session, principal, "person.event_state", found.person, row.departement_code)
    return out
