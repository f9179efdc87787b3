"""Reading persons: identity, current state and dated history, always filtered by the caller's départements,
and every read recorded for the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, bindparam, select
from sqlalchemy.orm import Session

from app.audit.chain import action_row, job_principal
from app.audit.reads import PENDING_ACCESS
from app.errors import NotFound, Unprocessable
from app.models import FluxFile, Person, PersonKey, PersonState
from app.persons.keys import key_hash, matricule_key_text
from app.persons.order import state_order
from app.security.auth import Principal, header_text
from app.security.nir import InvalidNir, NirProtector, normalize_nir
from app.security.source import source_of
from app.settings import Settings


def readable_persons(principal: Principal) -> Select[Person]:
    """Persons the caller may read: those of its départements, by construction."""
    return select(Person).where(Person.departement_code.in_(sorted(principal.departements)))


def _access_row(
    request: Any, principal: Principal, action: str, departement: str, person_id: int | None, found: bool | None = None
) -> dict[str, Any]:
    """One audit event for a read by an HTTP request: the shape every event has (`action_row`)."""
    found = person_id is not None if found is None else found
    return action_row(
        principal.id,
        action,
        departement,
        outcome="ok" if found else "not_found",
        person_id=person_id,
        endpoint=f"{request.method} {request.url.path}",
        agent=principal.agent.identifiant if principal.agent else None,
        request_id=getattr(request.state, "request_id", None),
        purpose=purpose_of(request),
        source_address=source_of(request),
    )


def purpose_of(request: Any) -> str | None:
    """The purpose the caller states for its access (`X-Purpose`), already checked by the middleware."""

    value = request.headers.get("x-purpose") if hasattr(request, "headers") else None
    return header_text(value)[:200] or None if value else None


def audit_read(
    request: Any,
    session: Session,
    principal: Principal,
    action: str,
    person: Person | None,
    departement: str,
    *,
    found: bool | None = None,
) -> None:
    """Record one read of personal data by an HTTP request (who, agent, person, endpoint, request id);
    `person=None` records a search that found nobody. Written when the request's transaction commits,
    before the answer is sent (`write_access_records`)."""
    # found=True: a read of no one person (an audit search) is not a search that found nobody
    row = _access_row(request, principal, action, departement, person.id if person is not None else None, found)
    session.info.setdefault(PENDING_ACCESS, []).append(row)


def audit_reads(request: Any, session: Session, principal: Principal, action: str, persons: list[Person]) -> None:
    """Record the reads of many persons' data by one request (one insert, at commit): one event per person,
    made from the first one's (the same instant, caller, endpoint; issue #27: built per row, they cost as much
    as the page's own reads)."""
    if not persons:
        return
    first = _access_row(request, principal, action, persons[0].departement_code, persons[0].id)
    rows = [first | {"person_id": p.id, "departement_code": p.departement_code[:3]} for p in persons]
    session.info.setdefault(PENDING_ACCESS, []).extend(rows)


def audit_job_reads(session: Session, job: str, action: str, persons: list[tuple[int | None, str]]) -> None:
    """Record the reads of persons' data by a job run from the CLI or cron (`job`: the command), one row
    per person, written at the commit of the session that also stores what the job made of them."""
    rows = [
        action_row(job_principal(job), action, departement, person_id=person_id, endpoint=f"passerelle {job}")
        for person_id, departement in persons
    ]
    session.info.setdefault(PENDING_ACCESS, []).extend(rows)


def get_person(session: Session, principal: Principal, person_id: int) -> Person:
    person = session.scalar(readable_persons(principal).where(Person.id == person_id))
    if person is None:
        raise NotFound("No such person.")
    return person


# What a person's page shows of the person (`person_row`): read as a row, not an ORM object (issue #27)
PERSON_COLUMNS = (Person.id, Person.departement_code, Person.qual, Person.nom, Person.nomnai, Person.prenom,
                  Person.date_naissance, Person.sexe, Person.nir_hash, Person.stock,
                  Person.first_received_on)  # fmt: skip


# The statements of a person's page, built once with their parameters (`deps`, `person_id`): building a
# statement and its cache key cost ~0.2 ms of CPU each, more than running it (issue #27)
_PERSON_ROW = select(*PERSON_COLUMNS).where(
    Person.departement_code.in_(bindparam("deps", expanding=True)), Person.id == bindparam("person_id")
)
_ps = cast(Table, PersonState.__table__)
_HISTORY_ROWS = (
    select(_ps, FluxFile.filename.label("file_nom"), FluxFile.type_flux.label("file_type"))
    .join(FluxFile, FluxFile.id == _ps.c.file_id)
    .where(_ps.c.person_id == bindparam("person_id"))
    .order_by(*state_order(_ps.c))
)


def person_row(conn: Connection, principal: Principal, person_id: int) -> Any:
    """The person (`PERSON_COLUMNS`, a row) if the caller may read them, else NotFound; as `get_person`."""
    row = conn.execute(_PERSON_ROW, {"deps": sorted(principal.departements), "person_id": person_id}).first()
    if row is None:
        raise NotFound("No such person.")
    return row


def history_rows(conn: Connection, person_id: int) -> list[Any]:
    """Each state of the person (every column of `person_states`, as `state_dict` reads them) with its
    file's name and type (`file_nom`, `file_type`), in the order of dated facts: rows, as `history`."""
    return list(conn.execute(_HISTORY_ROWS, {"person_id": person_id}))


def history(session: Session, person_id: int) -> list[tuple[PersonState, FluxFile]]:
    rows = session.execute(
        select(PersonState, FluxFile)
        .join(FluxFile, FluxFile.id == PersonState.file_id)
        .where(PersonState.person_id == person_id)
        .order_by(*state_order(PersonState))
    ).all()
    return [(s, f) for s, f in rows]


@dataclass(frozen=True)
class SearchCriteria:
    nir: str | None = None
    date_naissance: date | None = None
    fonorg: str | None = None
    numorg: str | None = None
    matricule: str | None = None
    role: str | None = None


# The search's statements, built once (as `_PERSON_ROW`): `deps` the caller's départements
_READABLE = Person.departement_code.in_(bindparam("deps", expanding=True))
_BY_NIR = select(*PERSON_COLUMNS).where(_READABLE, Person.nir_hash == bindparam("nir_hash"))
_BY_NIR_AND_BIRTH = _BY_NIR.where(Person.date_naissance == bindparam("date_naissance")).order_by(Person.id)
_BY_NIR = _BY_NIR.order_by(Person.id)
# keys are per département (the table's key leads with it): looked up there, not scanned (issue #27)
_BY_KEY = (
    select(*PERSON_COLUMNS)
    .where(
        _READABLE,
        Person.id.in_(
            select(PersonKey.person_id).where(
                PersonKey.departement_code.in_(bindparam("key_deps", expanding=True)),
                PersonKey.value == bindparam("key_value"),
                PersonKey.kind == "matricule",
            )
        ),
    )
    .order_by(Person.id)
)


def search(session: Session, settings: Settings, principal: Principal, criteria: SearchCriteria) -> list[Any]:
    """The persons found (`PERSON_COLUMNS`, rows as `person_row`'s: no ORM objects, issue #27)."""
    conn, deps = session.connection(), sorted(principal.departements)
    if criteria.nir is not None:
        try:
            nir13 = normalize_nir(criteria.nir).nir13
        except InvalidNir as exc:
            raise Unprocessable(f"nir: {exc}", [{"loc": ["body", "nir"], "msg": str(exc)}]) from exc
        protector = NirProtector(settings.encryption_keys, settings.hmac_key)
        params: dict[str, Any] = {"deps": deps, "nir_hash": protector.lookup_hash(nir13)}
        if criteria.date_naissance is not None:
            params["date_naissance"] = criteria.date_naissance
            return list(conn.execute(_BY_NIR_AND_BIRTH, params).all())
        return list(conn.execute(_BY_NIR, params).all())
    if not (criteria.fonorg and criteria.numorg and criteria.matricule and criteria.role):
        raise Unprocessable("Search by nir, or by fonorg, numorg, matricule and role together.")
    # The person currently holding that organisme + matricule + role key (identity across files).
    value = key_hash(
        settings.hmac_key, matricule_key_text(criteria.fonorg, criteria.numorg, criteria.matricule, criteria.role)
    )
    return list(conn.execute(_BY_KEY, {"deps": deps, "key_deps": deps, "key_value": value}).all())


def current_state(session: Session, person_id: int) -> PersonState | None:
    return session.scalar(
        select(PersonState)
        .where(PersonState.person_id == person_id)
        .order_by(*state_order(PersonState, descending=True))
        .limit(1)
    )


def _if_any(**values: Any) -> dict[str, Any] | None:
    """A dated fact of a state (motif(s) and date), or None when the state says neither."""
    return values if any(values.values()) else None


def state_dict(state: PersonState) -> dict[str, Any]:
    return {
        "received_on": state.received_on,
        "present": state.present,
        "absence_reason": state.absence_reason,
        "organisme": " ".join(x for x in (state.fonorg, state.numorg) if x) or None,
        "matricule": state.matricule,
        "numdemrsa": state.numdemrsa,
        "dtdemrsa": state.dtdemrsa,
        "role": state.role,
        "etat_dossier": state.etat,
        "soumis_droits_devoirs": state.sdd,
        "entree_droits_devoirs": state.sdd_entrant,
        "suspension_versement": _if_any(
            motifs=state.suspension_versement_motifs, depuis=state.suspension_versement_since
        ),
        "suspension_droit": _if_any(motifs=state.suspension_droit_motifs, depuis=state.suspension_droit_since),
        "refus": _if_any(motif=state.refusal_motif, date=state.refusal_date),
        "cloture": _if_any(motif=state.closure_motif, date=state.closure_date),
        "mutation_entrante": {"organisme": state.transfer_in_from, "date": state.transfer_in_date}
        if state.transfer_in_from
        else None,
        "mutation_sortante": {"organisme": state.transfer_out_to, "date": state.transfer_out_date}
        if state.transfer_out_to
        else None,
        "commune": state.numcom,
        "code_postal": state.codepos,
        "nom_commune": state.nomcom,
        "adresse": state.adresse,
        "pays": state.pays,  # only for an address abroad
        "situation_famille": state.sitfam,
        "date_debut_droit": state.ddnatdro,
        "idassedic": state.idassedic,
        "date_deces": state.death_date,
    }
