"""The contrat d'engagement's lists (issue #25, item 3): the persons oriented without one, by deadline, and the
transition (accompanied before 2025). JSON or CSV; each person listed is an audited read."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.deps import Authorized, IsoDate, SessionDep, SettingsDep
from app.api.orientation import LIST_LIMIT, _csv_response, _fr_day
from app.clock import today
from app.db import one_of
from app.models import Person
from app.orientation.contracts import transition, waiting_contract
from app.persons import repository as person_service
from app.persons.states import states_as_of
from app.rules.episodes import latest_as_of, orientations_of
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1", tags=["orientation"])


def _page(found: list[Any], offset: int, limit: int | None, format: str) -> list[Any]:
    """The rows asked: every row from `offset` in a CSV without a limit, else a page (50 by default)."""
    return found[offset:] if limit is None and format == "csv" else found[offset : offset + (limit or 50)]


def _read_persons(
    request: Request, session: Any, principal: Principal, action: str, ids: list[int], day: date
) -> tuple[dict[int, Person], dict[int, Any]]:
    """The listed persons and their states on `day`, each an audited read (`action`)."""
    persons = {p.id: p for p in session.scalars(select(Person).where(one_of(session.connection(), Person.id, ids)))}
    person_service.audit_reads(request, session, principal, action, [persons[i] for i in ids])
    return persons, states_as_of(session.connection(), ids, day)


# -- the contrat d'engagement (issue #25, item 3) -------------------------------------------------------------


class ContractWorklistItem(BaseModel):
    person_id: int
    nom: str | None
    prenom: str | None
    date_naissance: date | None
    matricule: str | None
    role: str | None
    commune: str | None
    nom_commune: str | None
    t0: date
    orientation_on: date = Field(description="the latest orientation (or re-orientation) on or before as_of")
    type_parcours: str | None = Field(description="the latest orientation's")
    organisme: str | None = Field(description="the organisme of the orientation that ended the wait")
    structure: str | None = Field(description="the structure of the orientation that ended the wait")
    contract_deadline: date = Field(description="orientation_on + 1 month (Code du travail art. D.5411-14-1)")
    days_left: int = Field(description="contract_deadline - as_of (negative: past)")
    deadline_near: bool = Field(description="the deadline falls within PASSERELLE_CONTRACT_DEADLINE_WARNING_DAYS")
    deadline_past: bool


class ContractWorklist(BaseModel):
    as_of: date
    warning_days: int
    total: int
    items: list[ContractWorklistItem]


CONTRACT_CSV_COLUMNS = (
    "id_personne",
    "nom",
    "prenom",
    "date_naissance",
    "matricule",
    "role",
    "commune",
    "nom_commune",
    "date_entree_t0",
    "date_orientation",
    "type_parcours",
    "organisme",
    "structure",
    "date_limite_contrat",
    "jours_restants",
    "echeance_proche",
    "echeance_depassee",
)


@router.get(
    "/worklist/contrats",
    response_model=ContractWorklist,
    summary="Persons oriented without a contrat d'engagement, by contract deadline (JSON or CSV)",
)
def contract_worklist(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
    as_of: Annotated[IsoDate | None, Query(description="Seen from this date (default: today)")] = None,
    past: Annotated[bool | None, Query(description="Only those past their deadline (or not)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int | None, Query(ge=1, le=10_000, description=LIST_LIMIT)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    day = as_of or today(settings)
    deps = principal.chosen_departements(departement)
    warning = settings.contract_deadline_warning_days
    found = waiting_contract(session.connection(), deps, day, warning)
    if past is not None:
        found = [w for w in found if w.past is past]
    page = _page(found, offset, limit, format)
    ids = [w.episode.person_id for w in page]
    persons, states = _read_persons(request, session, principal, "worklist.contrats", ids, day)
    items = []
    for w in page:
        e, p, s = w.episode, persons[w.episode.person_id], states.get(w.episode.person_id)
        latest = latest_as_of(orientations_of(e), day)
        items.append(
            ContractWorklistItem(
                person_id=p.id,
                nom=p.nom,
                prenom=p.prenom,
                date_naissance=p.date_naissance,
                matricule=s.matricule if s else None,
                role=s.role if s else None,
                commune=s.numcom if s else e.commune,
                nom_commune=s.nomcom if s else None,
                t0=e.t0,
                orientation_on=w.oriented_on,
                type_parcours=latest[1] if latest else e.type_parcours,
                organisme=e.organisme,
                structure=e.structure,
                contract_deadline=w.deadline,
                days_left=w.days_left,
                deadline_near=w.near,
                deadline_past=w.past,
            )
        )
    if format == "csv":
        rows = (
            [
                i.person_id,
                i.nom or "",
                i.prenom or "",
                _fr_day(i.date_naissance),
                i.matricule or "",
                i.role or "",
                i.commune or "",
                i.nom_commune or "",
                _fr_day(i.t0),
                _fr_day(i.orientation_on),
                i.type_parcours or "",
                i.organisme or "",
                i.structure or "",
                _fr_day(i.contract_deadline),
                i.days_left,
                "oui" if i.deadline_near else "non",
                "oui" if i.deadline_past else "non",
            ]
            for i in items
        )
        return _csv_response(CONTRACT_CSV_COLUMNS, rows, f"contrats_en_attente_au_{day.isoformat()}.csv")
    return ContractWorklist(as_of=day, warning_days=warning, total=len(found), items=items)


class TransitionItem(BaseModel):
    person_id: int
    nom: str | None
    prenom: str | None
    date_naissance: date | None
    matricule: str | None
    role: str | None
    commune: str | None
    origin: Literal["stock", "orientation", "referent"] = Field(
        description="accompanied before 2025 as: the initial stock (file active), an orientation, a référent"
    )
    since: date = Field(description="the date of that fact")
    organisme: str | None
    structure: str | None
    deadline: date = Field(description="PASSERELLE_CE_TRANSITION_DEADLINE")
    days_left: int


class TransitionList(BaseModel):
    as_of: date
    deadline: date
    total: int
    items: list[TransitionItem]


TRANSITION_CSV_COLUMNS = (
    "id_personne",
    "nom",
    "prenom",
    "date_naissance",
    "matricule",
    "role",
    "commune",
    "accompagne_avant_2025_par",
    "depuis_le",
    "organisme",
    "structure",
    "date_limite_contrat_engagement",
    "jours_restants",
)
ORIGIN_LABELS = {"stock": "file active (stock initial)", "orientation": "orientation", "referent": "référent"}


@router.get(
    "/worklist/transition-ce",
    response_model=TransitionList,
    summary="Persons accompanied before 2025 without a contrat d'engagement (deadline 1 January 2027)",
)
def transition_worklist(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
    as_of: Annotated[IsoDate | None, Query(description="Seen from this date (default: today)")] = None,
    departement: Annotated[str | None, Query(pattern=r"^(\d{3}|02[AB])$")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int | None, Query(ge=1, le=10_000, description=LIST_LIMIT)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    day = as_of or today(settings)
    deps = principal.chosen_departements(departement)
    deadline = settings.ce_transition_deadline
    found = transition(session.connection(), deps, day)
    page = _page(found, offset, limit, format)
    ids = [t.person_id for t in page]
    persons, states = _read_persons(request, session, principal, "worklist.transition_ce", ids, day)
    items = []
    for t in page:
        p, s = persons[t.person_id], states.get(t.person_id)
        items.append(
            TransitionItem(
                person_id=p.id,
                nom=p.nom,
                prenom=p.prenom,
                date_naissance=p.date_naissance,
                matricule=s.matricule if s else None,
                role=s.role if s else None,
                commune=s.numcom if s else None,
                origin=t.origin,
                since=t.since,
                organisme=t.organisme,
                structure=t.structure,
                deadline=deadline,
                days_left=(deadline - day).days,
            )
        )
    if format == "csv":
        rows = (
            [
                i.person_id,
                i.nom or "",
                i.prenom or "",
                _fr_day(i.date_naissance),
                i.matricule or "",
                i.role or "",
                i.commune or "",
                ORIGIN_LABELS[i.origin],
                _fr_day(i.since),
                i.organisme or "",
                i.structure or "",
                _fr_day(i.deadline),
                i.days_left,
            ]
            for i in items
        )
        return _csv_response(TRANSITION_CSV_COLUMNS, rows, f"transition_contrat_engagement_au_{day.isoformat()}.csv")
    return TransitionList(as_of=day, deadline=deadline, total=len(found), items=items)
