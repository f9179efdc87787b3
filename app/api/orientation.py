"""The orientation platform's side: record events, explain a person's episodes, the worklist."""

from __future__ import annotations

import io
from datetime import date
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.api.deps import Authorized, IsoDate, PersonId, SessionDep, SettingsDep, model_response, run_write
from app.audit.chain import record_action
from app.clock import today
from app.db import LongWriteRunning, long_write_running, write_transaction
from app.errors import Unprocessable
from app.kit.csv import write_csv
from app.models import EntryEpisode, OrientationEvent
from app.orientation import aside, pending
from app.orientation.episodes import FT_SOURCE
from app.orientation.reads import person_episodes, stored_episodes
from app.orientation.service import (
    APPLIED,
    EventByReferenceIn,
    EventIn,
    ReferenceOutcome,
    record_by_reference,
    record_event,
)
from app.orientation.worklist import LegalFilter, Sort, WorklistEntry, preconisation_text, worklist_page
from app.persons import repository as person_service
from app.rules.deadlines import (
    deadline_15_days,
    deadline_one_month,
    legal_deadline_near,
    legal_deadline_past,
    oriented_within_six_weeks,
    overdue_15_days,
)
from app.rules.episodes import (
    ORIENTED,
    WAITING,
    contract_after_orientation_as_of,
    contract_deadline_as_of,
    known_as_of,
    orientations_of,
    outcome_as_of,
)
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1", tags=["orientation"])


def _event_out(row: OrientationEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "date": row.event_date.isoformat(),
        "external_id": row.external_id,
        "supersedes_id": row.supersedes_id,
        "organisme": row.organisme,
        "type_parcours": row.type_parcours,
        "accompagnement_global": row.accompagnement_global,
        "structure": row.structure,
        "referent": row.referent,
        "channel": row.channel,
        "presence": row.presence,
        "contrat": row.contrat_type,
        "reason": row.reason,
        "source": row.source,
        # France Travail's own orientation (source france_travail, read by ft sync): its codes; only a DECIDE
        # with a parcours orients ("orienté par France Travail"), a PRECONISE is shown only
        "france_travail": {
            "statut": row.ft_statut,
            "parcours": row.ft_parcours,
            "organisme": row.ft_organisme,
            "etat": row.ft_etat,
            "etat_decision": row.ft_etat_decision,
            "date_decision": row.ft_decision_on.isoformat() if row.ft_decision_on else None,
            "date_entree_parcours": row.ft_entree_parcours_on.isoformat() if row.ft_entree_parcours_on else None,
            "code_safir": row.ft_code_safir,
            "code_aurore": row.ft_code_aurore,
            "libelle": preconisation_text(row) if row.ft_statut == "PRECONISE" else "orienté par France Travail",
        }
        if row.source == FT_SOURCE
        else None,
        "recorded_at": row.recorded_at.isoformat(),
    }


def _episode_out(ep: Any, as_of: date) -> dict[str, Any]:
    """An episode as seen on as_of (the one reading: `rules.outcome_as_of`)."""
    outcome = outcome_as_of(ep, as_of)
    decided = outcome != WAITING
    left_on = known_as_of(ep.left_on, as_of)
    return {
        "rank": ep.rank,
        "t0": ep.t0.isoformat(),
        "t0_file_id": ep.t0_file_id,
        "deadline_15_days": deadline_15_days(ep.t0).isoformat(),
        "deadline_one_month": deadline_one_month(ep.t0).isoformat(),
        "outcome": outcome,
        "end_on": ep.end_on.isoformat() if decided and ep.end_on else None,
        "left_on": left_on.isoformat() if left_on else None,
        # why, and the file that showed it (received on left_on): docs/rules.md, "Why a person left"
        "left_reason": ep.left_reason if left_on else None,
        "left_file_id": ep.left_file_id if left_on else None,
        "oriented_by": ep.oriented_by if decided else None,
        # the orientation's own date: before T0 for one that belongs to the entry (end_on is then T0)
        "orientation_on": ep.orientation_on.isoformat() if decided and ep.orientation_on else None,
        "delay_days": ep.delay_days if decided else None,
        "within_15_days": ep.within_15_days if decided else None,
        "within_one_month": ep.within_one_month if decided else None,
        "organisme": ep.organisme if decided else None,
        "type_parcours": ep.type_parcours if decided else None,
        "accompagnement_global": ep.accompagnement_global if decided else None,
        # CASF art. D.262-65-2 (docs/rules.md, "The legal deadline"): the clock, why (or why none), the first
        # day France Travail may orient, and whether the orientation came before it
        "legal_clock": ep.legal_clock,
        "legal_clock_reason": ep.legal_clock_reason,
        "legal_deadline": ep.legal_deadline.isoformat() if ep.legal_deadline else None,
        "oriented_within_six_weeks": oriented_within_six_weeks(ep.legal_deadline, ep.end_on)
        if outcome == ORIENTED
        else None,
        # the contrat d'engagement (docs/rules.md): every orientation known on as_of (re-orientations
        # included), the contract's deadline (the latest + 1 month) and the contract answering it, if signed
        "orientations": [[on.isoformat(), parcours] for on, parcours in orientations_of(ep) if on <= as_of]
        if outcome == ORIENTED
        else [],
        "contract_deadline": _iso(contract_deadline_as_of(ep, as_of)) if outcome == ORIENTED else None,
        "contract_signed_on": _iso(contract_after_orientation_as_of(ep, as_of)) if outcome == ORIENTED else None,
        "criteria": ep.criteria,
    }


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


EXTERNAL_ID_CONFLICT = (
    "The external_id is already used for another event (`conflict`): a correction has an external_id of its own "
    "and names the event it corrects in `supersedes`"
)


@router.post(
    "/persons/{person_id}/events",
    summary="Record an orientation-side event (idempotent by external_id; corrections supersede)",
    responses={
        201: {"description": "Recorded"},
        200: {"description": "Already recorded (same external_id)"},
        202: {
            "description": "SQLite only, while a flux file is being applied: the event is kept aside durably and "
            "will be applied right after the file, in arrival order; `Location` gives its state (queued, then "
            "applied or refused with the answer the 201 path would have given). A replay while it is kept "
            "answers the same location. Never on PostgreSQL.",
            "headers": {
                "Location": {"schema": {"type": "string"}, "description": "/api/v1/events/queued/{id}: its state"}
            },
            "content": {
                "application/json": {
                    "example": {
                        "status": "queued",
                        "queued_id": 12,
                        "created": True,
                        "location": "/api/v1/events/queued/12",
                    }
                }
            },
        },
        409: {"description": EXTERNAL_ID_CONFLICT},
    },
)
async def post_event(
    person_id: PersonId,
    body: EventIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.orientation_write)],
) -> JSONResponse:
    engine = request.app.state.engine

    def busy() -> bool:  # SQLite: a flux file holds the writer (never on PostgreSQL)
        return long_write_running(engine)

    def write() -> tuple[OrientationEvent, bool, list[EntryEpisode]]:
        aside.apply_before_write(session, settings, busy)  # events kept aside earlier come first
        with write_transaction(session, unless=busy):
            person = person_service.get_person(session, principal, person_id)
            row, created = record_event(session, settings, person, body, recorded_by=principal.id)
            person_service.audit_read(request, session, principal, "person.event", person, person.departement_code)
            episodes = stored_episodes(session, person.id)
        return row, created, episodes

    def keep() -> tuple[int, bool]:
        return aside.keep(session, settings, principal, request, person_id, body)

    try:
        if busy():
            raise LongWriteRunning()
        row, created, episodes = await run_write(request, write)
    except LongWriteRunning:
        # kept aside durably (committed, synchronous=FULL) before answering; applied right after the file
        queued_id, kept = await anyio.to_thread.run_sync(keep)
        return JSONResponse(
            {"status": aside.QUEUED, "queued_id": queued_id, "created": kept, "location": aside.location(queued_id)},
            status_code=202,
            headers={"Location": aside.location(queued_id)},
        )
    # committed: the answer below is only built once the event is stored
    day = today(settings)
    return JSONResponse(
        {"event": _event_out(row), "created": created, "episodes": [_episode_out(e, day) for e in episodes]},
        status_code=201 if created else 200,
    )


PendingId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A pending event's id")]


def _one_departement(principal: Principal, departement: str | None) -> str:
    deps = principal.chosen_departements(departement)
    if len(deps) != 1:
        raise Unprocessable(
            "this client serves several départements: say which one in `departement`",
            [{"loc": ["body", "departement"], "msg": "required for a client of several départements"}],
        )
    return deps[0]


@router.post(
    "/events",
    summary="Record an event for a person named by NIR or matricule + role; kept aside if not known yet",
    responses={
        201: {"description": "Recorded for the person"},
        200: {"description": "Already recorded (same external_id, or same content)"},
        202: {
            "description": "No person known with this reference yet: kept aside",
            "headers": {
                "Location": {"schema": {"type": "string"}, "description": "/api/v1/events/pending/{id}: its state"}
            },
        },
        409: {"description": EXTERNAL_ID_CONFLICT},
    },
)
async def post_event_by_reference(
    body: EventByReferenceIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.orientation_write)],
) -> JSONResponse:
    departement = _one_departement(principal, body.departement)

    def write() -> tuple[ReferenceOutcome, list[EntryEpisode]]:
        with write_transaction(session):
            outcome = record_by_reference(
                session, settings, departement, body.person.ref(), body.event, principal.id, source="api"
            )
            episodes: list[EntryEpisode] = []
            if outcome.person is not None:
                person_service.audit_read(request, session, principal, "person.event", outcome.person, departement)
                episodes = stored_episodes(session, outcome.person.id)
            else:
                assert outcome.pending is not None
                record_action(
                    session,
                    principal.id,
                    "orientation.pending_keep",
                    departement,
                    detail={"pending": outcome.pending.id, "status": outcome.status},
                    endpoint=f"{request.method} {request.url.path}",
                    agent=principal.agent.identifiant if principal.agent else None,
                )
        return outcome, episodes

    outcome, episodes = await run_write(request, write)
    # committed: the answer below is only built once the event is stored (or kept aside)
    if outcome.pending is not None:
        location = f"/api/v1/events/pending/{outcome.pending.id}"
        return JSONResponse(
            {
                "status": outcome.status,
                "created": outcome.status == "pending",
                "pending": pending.describe(outcome.pending),
            },
            status_code=202,
            headers={"Location": location},
        )
    assert outcome.person is not None and outcome.event is not None
    day = today(settings)
    return JSONResponse(
        {
            "status": outcome.status,
            "created": outcome.status == APPLIED,
            "person_id": outcome.person.id,
            "event": _event_out(outcome.event),
            "episodes": [_episode_out(e, day) for e in episodes],
        },
        status_code=201 if outcome.status == APPLIED else 200,
    )


@router.get("/events/pending", summary="Events kept aside while their person is not known (never the reference)")
def list_pending_events(
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.orientation_write)],
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    status: Annotated[Literal["pending", "applied", "dropped"] | None, Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    deps = principal.chosen_departements(departement)
    return {"items": pending.listing(session, deps, status, limit=limit, offset=offset)}


@router.get("/events/pending/{pending_id}", summary="The state of an event kept aside: pending, applied or dropped")
def get_pending_event(
    pending_id: PendingId,
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.orientation_write)],
) -> dict[str, Any]:
    return pending.describe(pending.get(session, sorted(principal.departements), pending_id))


@router.get("/persons/{person_id}/episodes", summary="A person's entry episodes, each criterion and its facts")
def get_episodes(
    person_id: PersonId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
    as_of: Annotated[IsoDate | None, Query(description="Seen from this date (default: today)")] = None,
) -> dict[str, Any]:
    person = person_service.get_person(session, principal, person_id)
    person_service.audit_read(request, session, principal, "person.episodes", person, person.departement_code)
    view = person_episodes(session, person.id, as_of or today(settings))
    return {
        "person_id": person.id,
        "as_of": view.as_of.isoformat(),
        "stock": view.stock,
        "follow_up_in_progress": view.followed,
        "episodes": [_episode_out(e, view.as_of) for e in view.episodes],
        "not_entries": [{"on": d.on.isoformat(), "file_id": d.file_id, "reason": d.reason} for d in view.not_entries],
        "events": [_event_out(e) for e in view.events],
    }


class WorklistItem(BaseModel):
    person_id: int
    nom: str | None
    prenom: str | None
    date_naissance: date | None
    t0: date
    days_elapsed: int
    deadline_15_days: date
    deadline_one_month: date
    overdue: bool
    caf_msa: str | None
    matricule: str | None
    role: str | None
    adresse: str | None
    code_postal: str | None
    commune: str | None
    nom_commune: str | None
    invitation_on: date | None
    rdv_orientation_on: date | None
    legal_clock: Literal["ouverture_droit", "transfert_droit"] | None = Field(
        description="CASF art. D.262-65-2: the T0 file brought the opening or the transfer of the right; null: "
        "the decree's clock does not apply (GET /persons/{id}/episodes says why)"
    )
    legal_deadline: date | None = Field(
        description="reception of the T0 file + 42 days: the first day France Travail may orient (null: no clock)"
    )
    legal_deadline_status: Literal["proche", "depassee"] | None = Field(
        description="proche: the legal deadline falls within PASSERELLE_LEGAL_DEADLINE_WARNING_DAYS days; "
        "depassee: reached (France Travail may orient)"
    )
    legal_deadline_alert: str | None = Field(
        description='"échéance légale proche" or "France Travail peut orienter depuis le JJ/MM/AAAA"'
    )
    preconisation_france_travail: str | None = Field(
        default=None,
        description="France Travail's latest préconisation known (read by ft sync), e.g. \"préconisation France "
        'Travail du 12/03/2025 (parcours social)": shown only, it orients nobody',
    )


def legal_alert(deadline: date | None, day: date, warning_days: int) -> tuple[str | None, str | None]:
    """The worklist's flag of a legal deadline seen on `day`: (status, French label), or (None, None)."""
    if deadline is not None and legal_deadline_past(deadline, day):
        return "depassee", f"France Travail peut orienter depuis le {deadline.strftime('%d/%m/%Y')}"
    if legal_deadline_near(deadline, day, warning_days):
        return "proche", "échéance légale proche"
    return None, None


def _worklist_item(entry: WorklistEntry, day: date, warning_days: int) -> WorklistItem:
    e, p, s = entry.episode, entry.person, entry.state
    status, alert = legal_alert(e.legal_deadline, day, warning_days)
    return WorklistItem(
        person_id=p.id,
        nom=p.nom,
        prenom=p.prenom,
        date_naissance=p.date_naissance,
        t0=e.t0,
        days_elapsed=(day - e.t0).days,
        deadline_15_days=deadline_15_days(e.t0),
        deadline_one_month=deadline_one_month(e.t0),
        overdue=overdue_15_days(e.t0, day),
        caf_msa=e.caf_msa,
        matricule=s.matricule if s else None,
        role=s.role if s else None,
        adresse=s.adresse if s else None,
        code_postal=s.codepos if s else None,
        commune=s.numcom if s else e.commune,
        nom_commune=s.nomcom if s else None,
        invitation_on=e.invitation_on,
        rdv_orientation_on=e.rdv_orientation_on,
        legal_clock=e.legal_clock,
        legal_deadline=e.legal_deadline,
        legal_deadline_status=status,
        legal_deadline_alert=alert,
        preconisation_france_travail=preconisation_text(entry.ft_preconisation),
    )


class Worklist(BaseModel):
    as_of: date
    total: int
    items: list[WorklistItem]


@router.get("/worklist", response_model=Worklist, summary="Persons waiting for an orientation, by deadline")
def worklist(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
    overdue: Annotated[bool | None, Query(description="Only those past the 15-day deadline (or not)")] = None,
    commune: Annotated[str | None, Query(pattern=r"^\d[\dAB]\d{3}$", description="INSEE code at T0")] = None,
    organisme: Annotated[Literal["CAF", "MSA"] | None, Query(description="Paying body")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    sort: Annotated[
        Sort, Query(description="t0 (default), or legal_deadline: the legal deadline first, those without one last")
    ] = "t0",
    legal_deadline: Annotated[
        LegalFilter | None,
        Query(description="Only those whose legal deadline is past, near (within the warning days), or either"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="A page (JSON); a CSV holds every person")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    format: Annotated[
        Literal["json", "csv"], Query(description="csv: every person the filters keep, for Excel")
    ] = "json",
) -> Any:
    day = today(settings)
    deps = principal.chosen_departements(departement)
    warning = settings.legal_deadline_warning_days

    def page_of(size: int, start: int) -> Any:
        return worklist_page(
            session,
            deps,
            day,
            overdue=overdue,
            commune=commune,
            organisme=organisme,
            sort=sort,
            legal=legal_deadline,
            warning_days=warning,
            limit=size,
            offset=start,
        )

    if format == "csv":
        items: list[WorklistItem] = []
        while True:  # every person, a thousand at a time (each page's reads audited before the next)
            chunk = page_of(1000, len(items))
            person_service.audit_reads(request, session, principal, "worklist.read", [e.person for e in chunk.entries])
            items += [_worklist_item(e, day, warning) for e in chunk.entries]
            if len(chunk.entries) < 1000:
                break
        rows = ([_csv_value(getattr(i, name)) for name in WORKLIST_CSV_FIELDS] for i in items)
        return _csv_response(tuple(WORKLIST_CSV_COLUMNS), rows, f"liste_de_travail_au_{day.isoformat()}.csv")
    page = page_of(limit, offset)
    person_service.audit_reads(request, session, principal, "worklist.read", [e.person for e in page.entries])
    items = [_worklist_item(e, day, warning) for e in page.entries]
    return model_response(Worklist(as_of=day, total=page.total, items=items))


# The worklist's CSV: French headers, dates jj/mm/aaaa, oui/non (the JSON's fields, in this order)
WORKLIST_CSV = {
    "person_id": "id_personne", "nom": "nom", "prenom": "prenom", "date_naissance": "date_naissance",
    "matricule": "matricule", "role": "role", "adresse": "adresse", "code_postal": "code_postal",
    "commune": "commune", "nom_commune": "nom_commune", "caf_msa": "caf_msa", "t0": "date_entree_t0",
    "days_elapsed": "jours_ecoules", "deadline_15_days": "echeance_15_jours",
    "deadline_one_month": "echeance_un_mois", "overdue": "hors_delai_15_jours", "invitation_on": "invitation",
    "rdv_orientation_on": "rdv_orientation", "legal_clock": "horloge_legale", "legal_deadline": "echeance_legale",
    "legal_deadline_alert": "alerte_echeance_legale", "preconisation_france_travail": "preconisation_france_travail",
}  # fmt: skip
WORKLIST_CSV_FIELDS, WORKLIST_CSV_COLUMNS = list(WORKLIST_CSV), list(WORKLIST_CSV.values())


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return "" if value is None else value


LIST_LIMIT = "rows per page: 50 by default in JSON; a CSV holds every row unless a limit is given"


def _fr_day(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def _csv_response(columns: tuple[str, ...], rows: Any, name: str) -> Response:
    out = io.BytesIO()
    write_csv(columns, rows, out)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
