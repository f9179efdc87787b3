"""Partners' webhooks: RDV-Insertion (docs/integrations.md). The route's names are fixed: RDV-Insertion's
configuration points at them. No API key: the signature over the raw body is the authentication."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from app.api import refusals
from app.api.deps import Authorized, SessionDep, SettingsDep, run_write
from app.db import write_transaction
from app.errors import NotFound
from app.integrations.rdv_insertion import webhooks as rdv_insertion
from app.security.auth import DEPARTEMENT_RE, Principal
from app.security.scopes import Scope

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/webhooks/rdv-insertion", tags=["webhooks"])


@router.get("/unmatched", summary="Received from RDV-Insertion, not (yet) given to a person, and why")
def list_unmatched(
    session: SessionDep, principal: Annotated[Principal, Authorized(Scope.orientation_write)]
) -> dict[str, Any]:
    return {"items": rdv_insertion.unmatched(session, sorted(principal.departements))}


@router.post(
    "/{departement}",
    summary="RDV-Insertion's signed webhook (Rdv, Invitation) for a département",
    responses={
        200: {"description": "Received (processed, duplicate or older: RDV-Insertion must not re-send)"},
        401: {"description": "Missing or wrong X-RDVI-SIGNATURE: nothing stored (the attempt is counted)"},
        429: {"description": "Too many refused attempts from this address (`Retry-After`)"},
        404: {"description": "No RDV-Insertion secret is configured for this département"},
        422: {"description": "Well signed but unreadable: kept for inspection"},
    },
)
async def receive(
    departement: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    x_rdvi_signature: Annotated[str | None, Header(description="hex HMAC-SHA256 of the raw body")] = None,
) -> JSONResponse:
    secret = settings.rdv_insertion_secret(departement) if DEPARTEMENT_RE.match(departement) else None
    if secret is None:
        raise NotFound("no such route")
    body = await request.body()
    if not rdv_insertion.verify(secret, body, x_rdvi_signature):
        # an attempt, said without its body (it may hold anything, personal data included)
        log.warning(
            "webhook_signature_refused",
            source=rdv_insertion.SOURCE,
            departement=departement,
            size=len(body),
            signature_given=x_rdvi_signature is not None,
        )
        # counted against the source address, and recorded once a minute with the count (issue #23)
        wait = await refusals.count_against_source_off_loop(request)
        refusals.record(request.scope, 401, "signature", principal_id=rdv_insertion.WEBHOOK_PRINCIPAL,
                        action="webhook.delivery", departement=departement)  # fmt: skip
        if wait:
            raise refusals.too_many(wait)
        return JSONResponse({"error": "unauthorized", "message": "missing or wrong X-RDVI-SIGNATURE"}, status_code=401)

    def write() -> tuple[int, dict[str, Any]]:
        with write_transaction(session):
            return rdv_insertion.process(session, settings, departement, body)

    status, answer = await run_write(request, write)
    return JSONResponse(answer, status_code=status)
