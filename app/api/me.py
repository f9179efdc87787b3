"""Who am I: lets a caller check its credentials, scopes and départements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Security
from pydantic import BaseModel

from app.admin.clients import list_clients as all_clients
from app.api.deps import Authorized, SessionDep, authenticate
from app.security.auth import Principal
from app.security.scopes import Scope

router = APIRouter(prefix="/api/v1", tags=["identity"])


class AgentOut(BaseModel):
    identifiant: str
    nom: str
    prenom: str


class MeOut(BaseModel):
    kind: str
    id: str
    name: str
    scopes: list[str]
    departements: list[str]
    agent: AgentOut | None


@router.get("/me", response_model=MeOut, summary="The authenticated caller (any valid credentials)")
def me(principal: Annotated[Principal, Security(authenticate, scopes=[])]) -> MeOut:
    return MeOut(
        kind=principal.kind,
        id=principal.id,
        name=principal.name,
        scopes=sorted(principal.scopes),
        departements=sorted(principal.departements),
        agent=AgentOut(**principal.agent.__dict__) if principal.agent else None,
    )


class ClientOut(BaseModel):
    id: int
    name: str
    key_prefix: str
    scopes: list[str]
    departements: list[str]
    revoked: bool


@router.get("/admin/clients", response_model=list[ClientOut], summary="Machine clients (admin)")
def list_clients(session: SessionDep, principal: Annotated[Principal, Authorized(Scope.admin)]) -> list[ClientOut]:
    clients = all_clients(session)
    # An administrator sees the clients that share at least one of its départements.
    return [
        ClientOut(
            id=c.id,
            name=c.name,
            key_prefix=c.key_prefix,
            scopes=sorted(c.scopes),
            departements=c.departement_codes,
            revoked=c.revoked_at is not None,
        )
        for c in clients
        if set(c.departement_codes) & principal.departements
    ]
