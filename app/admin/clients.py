"""Machine clients: creation (key shown once), revocation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.admin.departements import ensure_departement, not_a_departement, unknown_departements
from app.audit.chain import record_action
from app.errors import ExitCode, Unprocessable
from app.models import ApiClient
from app.models.base import utcnow
from app.security.apikeys import generate_key, hash_key
from app.security.auth import forget_api_keys
from app.security.scopes import parse_scopes
from app.settings import Settings


class ClientError(Unprocessable, ValueError):
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CreatedClient:
    client_id: int
    key: str


def create_client(
    session: Session, settings: Settings, *, name: str, departements: list[str], scopes: list[str]
) -> CreatedClient:
    name = name.strip()
    if not name or len(name) > 100:
        raise ClientError("a client name has 1 to 100 characters")
    if not departements:
        raise ClientError("a client needs at least one département (--departement)")
    if not scopes:
        raise ClientError("a client needs at least one scope (--scope)")
    if unknown := unknown_departements(departements, settings):
        raise ClientError(not_a_departement(unknown))
    try:
        scope_list = parse_scopes(scopes)
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    if session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
        raise ClientError(f"a client named {name!r} already exists")
    generated = generate_key()
    client = ApiClient(
        name=name,
        key_prefix=generated.prefix,
        key_hash=hash_key(generated.key, settings.pepper),
        scopes=scope_list,
        departements=[ensure_departement(session, code) for code in sorted(set(departements))],
    )
    session.add(client)
    session.flush()
    for code in sorted(set(departements)):
        record_action(
            session,
            "job:clients",
            "client.create",
            code,
            detail={"client": client.id, "name": name, "scopes": scope_list},
        )
    return CreatedClient(client_id=client.id, key=generated.key)


def list_clients(session: Session) -> list[ApiClient]:
    """Every machine client, revoked ones included, in the order they were created."""
    return list(session.scalars(select(ApiClient).order_by(ApiClient.id)))


def revoke_client(session: Session, name_or_id: str) -> ApiClient:
    query = select(ApiClient).where(ApiClient.name == name_or_id)
    if name_or_id.isdigit():
        query = select(ApiClient).where((ApiClient.id == int(name_or_id)) | (ApiClient.name == name_or_id))
    client = session.scalar(query)
    if client is None:
        raise ClientError(f"no client {name_or_id!r}")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        # this process's caches of accepted keys forget them now and once it is committed (a request may
        # read the row in between); other processes' within `api_key_cache_seconds`
        forget_api_keys()
        event.listen(session, "after_commit", lambda _session: forget_api_keys(), once=True)
        for dep in client.departements:
            record_action(session, "job:clients", "client.revoke", dep.code, detail={"client": client.id})
    return client
