"""For auditors and the DPO (scope `audit:read`): who accessed which person's data, when, through what; the
refused and missing accesses too (issue #23). Their own queries are recorded like any other read. Times are
in the Département's timezone (Europe/Paris), with their offset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import Authorized, IsoDate, PersonId, SessionDep, SettingsDep
from app.audit import search as audit
from app.audit.chain import ALL_DEPARTEMENTS
from app.clock import today
from app.errors import Unprocessable
from app.kit.validation import TEXT_PATTERN
from app.persons import repository as person_service
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get(
    "/accesses",
    summary="Search the record of accesses to personal data (JSON, or CSV for a spreadsheet)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def search_accesses(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.audit_read)],
    person_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    client: Annotated[
        str | None,
        Query(
            max_length=120, pattern=TEXT_PATTERN, description="principal id: client:N, user:SUBJECT, job:..., link:N"
        ),
    ] = None,
    agent: Annotated[
        str | None, Query(max_length=100, pattern=TEXT_PATTERN, description="the acting agent's identifiant")
    ] = None,
    since: Annotated[IsoDate | None, Query(description="from this day (Europe/Paris)")] = None,
    until: Annotated[IsoDate | None, Query(description="to this day, included (Europe/Paris)")] = None,
    action: Annotated[
        str | None, Query(max_length=40, pattern=r"^[a-z_.]+\*?$", description="exact, or a prefix: ft. or export.*")
    ] = None,
    found: Annotated[bool | None, Query(description="false: searches that found nobody, and 404s")] = None,
    outcome: Annotated[
        Literal["ok", "not_found", "refused", "rejected", "error"] | None,
        Query(description="refused: 401, 403, 429, refused links and webhook signatures (counted per minute)"),
    ] = None,
    departement: Annotated[
        str | None,
        Query(
            pattern=r"^(\d{3}|02[AB]|\*)$",
            description="one of the caller's; `*`: the events of no one département (a file rejected before "
            "its département was known, refusals of anonymous callers, key rotations)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    if since and until and until < since:
        raise Unprocessable("`until` is before `since`.")
    deps = (ALL_DEPARTEMENTS,) if departement == ALL_DEPARTEMENTS else tuple(principal.chosen_departements(departement))
    criteria = audit.AuditFilter(
        deps, person_id, client, agent, since, until, action, found, outcome, settings.business_timezone
    )
    result = audit.search(session, criteria, limit, offset)
    # The search read the audit journal: its transaction ends before the journal is written (SQLite refuses
    # to turn a read of a file into a write once another writer has committed to it meanwhile).
    session.commit()
    for dep in deps:  # the auditor's own query is an access too
        person_service.audit_read(request, session, principal, "audit.search", None, dep, found=True)
    if format == "csv":
        name = f"acces_{'-'.join(deps)}_{today(settings).isoformat()}.csv"
        return Response(
            audit.to_csv(result["items"]),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Total-Count": str(result["total"])},
        )
    return result


@router.get("/persons/{person_id}", summary="Who accessed this person's data: each client and agent, when, what")
def who_accessed(
    person_id: PersonId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.audit_read)],
) -> dict[str, Any]:
    person = person_service.get_person(session, principal, person_id)
    result = audit.who_accessed(session, (person.departement_code,), person.id, settings.business_timezone)
    session.commit()  # as above: the journal was read, its write comes in a transaction of its own
    person_service.audit_read(request, session, principal, "audit.person", person, person.departement_code)
    return result
