"""Persons known from the flux: identity, foyer, current state and dated history. Every read is recorded."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Authorized, PersonId, SessionDep, SettingsDep, model_response
from app.flux import instruction_facts as instruction
from app.kit.validation import InputModel
from app.persons import repository as svc
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1/persons", tags=["persons"])


class Identity(BaseModel):
    qualite: str | None
    nom: str | None
    nom_naissance: str | None
    prenom: str | None
    date_naissance: date | None
    sexe: str | None
    nir_connu: bool = Field(description="Whether a NIR is known (it is never returned)")


class PersonSummary(BaseModel):
    id: int
    departement: str
    identite: Identity
    stock: bool
    premiere_reception: date


class PersonOut(PersonSummary):
    etat_actuel: dict[str, Any] | None
    historique: list[dict[str, Any]]
    instruction: dict[str, Any] | None = Field(
        default=None,
        description="The latest instruction flux record (contacts with their consents, SuiviAppuiOrientation, "
        "computed parcours, DSP codes), if any",
    )


class SearchBody(InputModel):
    model_config = ConfigDict(extra="forbid")

    nir: str | None = Field(
        default=None,
        min_length=13,
        max_length=15,
        pattern=r"^[1-478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])(2[AaBb]|[0-9]{2})[0-9]{6}([0-9]{2})?$",
        description="13 characters, or 15 with the check key (which must match)",
    )
    date_naissance: date | None = None
    fonorg: Literal["CAF", "MSA"] | None = None
    numorg: str | None = Field(default=None, pattern=r"^\d{3}$")
    matricule: str | None = Field(default=None, min_length=1, max_length=15)
    role: Literal["DEM", "CJT", "BEN"] | None = None


class SearchResult(BaseModel):
    items: list[PersonSummary]


def _summary(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "departement": p.departement_code,
        "identite": Identity(
            qualite=p.qual,
            nom=p.nom,
            nom_naissance=p.nomnai,
            prenom=p.prenom,
            date_naissance=p.date_naissance,
            sexe=p.sexe,
            nir_connu=p.nir_hash is not None,
        ),
        "stock": p.stock,
        "premiere_reception": p.first_received_on,
    }


@router.get("/{person_id}", response_model=PersonOut, summary="A person: identity, current state, dated history")
def get_person(
    person_id: PersonId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
) -> Response:
    conn = session.connection()  # Core reads of the columns shown: no ORM objects to build (issue #27)
    person = svc.person_row(conn, principal, person_id)
    svc.audit_read(request, session, principal, "person.read", person, person.departement_code)
    history = [
        {**svc.state_dict(state), "fichier": {"id": state.file_id, "nom": state.file_nom, "type": state.file_type}}
        for state in svc.history_rows(conn, person.id)
    ]
    return model_response(
        PersonOut(
            **_summary(person),
            etat_actuel=history[-1] if history else None,
            historique=history,
            instruction=instruction.for_person(session, person.id),
        )
    )


@router.post("/search", response_model=SearchResult, summary="Find persons by NIR, or by organisme + matricule + role")
def search_persons(
    body: SearchBody,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Authorized(Scope.persons_read)],
) -> Response:
    criteria = svc.SearchCriteria(**body.model_dump())
    found = svc.search(session, settings, principal, criteria)
    for dep in sorted(principal.departements) if not found else []:
        svc.audit_read(request, session, principal, "person.search", None, dep)
    for p in found:
        svc.audit_read(request, session, principal, "person.search", p, p.departement_code)
    return model_response(SearchResult(items=[PersonSummary(**_summary(p)) for p in found]))
