"""Orientation events from the platform (API and CSV import): validated, idempotent, never overwritten."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import job_principal, record_action
from app.clock import today
from app.db import wait_for_ingestion
from app.errors import Conflict, NotFound, Unprocessable
from app.kit.csv import csv_fieldnames, csv_rows, decode_csv, iso_date
from app.kit.validation import InputModel, control_character_problem
from app.models import OrientationEvent, PendingEvent, Person
from app.orientation import episodes as episode_service
from app.orientation import pending
from app.orientation.references import PersonRef, find_person, reference
from app.rules.episodes import CE, CE_IN_FORCE, CONTRAT_ENGAGEMENT
from app.security.nir import InvalidNir, normalize_nir
from app.settings import Settings

EventType = Literal[
    "orientation",
    "referent",
    "invitation",
    "rdv_orientation",
    "rdv_accompagnement",
    "contrat",
    "contrat_engagement",
    "suivi_clos",
]
Organisme = Literal["FRANCE_TRAVAIL", "DEPARTEMENT", "MISSION_LOCALE", "CAP_EMPLOI", "CCAS", "SPIP", "AUTRE"]
TypeParcours = Literal["social", "socio-professionnel", "professionnel"]

# Which fields each event type takes (required, optional); any other field given is an error.
FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "orientation": ({"organisme", "type_parcours"}, {"accompagnement_global", "structure", "referent"}),
    # a référent belongs to a structure, or at least to an organisme (checked in EventIn)
    "referent": (set(), {"structure", "referent", "organisme", "type_parcours", "accompagnement_global"}),
    "invitation": (set(), {"channel"}),
    "rdv_orientation": (set(), {"presence", "structure"}),
    "rdv_accompagnement": (set(), {"presence", "structure", "referent"}),
    "contrat": ({"contrat"}, {"structure"}),
    # the contrat d'engagement (loi n° 2023-1196), since 1 January 2025: its date is the signature's, its
    # organisme the organisme référent it is signed with (stored with contrat_type "CE")
    "contrat_engagement": ({"organisme"}, {"structure"}),
    "suivi_clos": (set(), {"reason"}),
}
OPTIONAL_FIELDS = (
    "organisme",
    "type_parcours",
    "accompagnement_global",
    "structure",
    "referent",
    "channel",
    "presence",
    "contrat",
    "reason",
)


class EventIn(InputModel):
    multiline_fields: ClassVar[frozenset[str]] = frozenset({"reason"})
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: EventType
    date: dt.date = Field(description="The event's own date (for an orientation: the day the letter/e-mail was sent)")
    external_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w.:/-]+$")
    supersedes: str | None = Field(
        default=None, min_length=1, max_length=100, description="external_id of the event this one corrects"
    )
    supersedes_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="or our id of the event this one corrects"
    )
    organisme: Organisme | None = None
    type_parcours: TypeParcours | None = None
    accompagnement_global: bool | None = None
    structure: str | None = Field(default=None, min_length=1, max_length=200)
    referent: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Literal["courrier", "email", "sms", "telephone", "autre"] | None = None
    presence: Literal["present", "absent", "excuse", "annule", "prevu"] | None = Field(
        default=None, description="present, absent, excuse; annule (cancelled by the service), prevu (to come)"
    )
    contrat: Literal["CER", "PPAE"] | None = Field(
        default=None, description="CER or PPAE, signed before 2025-01-01 (since then: a contrat_engagement event)"
    )
    reason: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> EventIn:
        required, optional = FIELDS[self.type]
        given = {name for name in OPTIONAL_FIELDS if getattr(self, name) is not None}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"a {self.type} event needs {', '.join(missing)}")
        extra = sorted(given - required - optional)
        if extra:
            raise ValueError(f"a {self.type} event does not take {', '.join(extra)}")
        if self.type == "referent" and self.structure is None and self.organisme is None:
            raise ValueError("a referent event needs structure or organisme")
        if self.date < date(2000, 1, 1):
            raise ValueError("date is before 2000")
        return self

    @property
    def contrat_type(self) -> str | None:
        """The contract's kind as stored (`orientation_events.contrat_type`): CER, PPAE, or CE."""
        return CE if self.type == CONTRAT_ENGAGEMENT else self.contrat


def refuse_replaced_contract(event: EventIn) -> None:
    """Since 1 January 2025 the contrat d'engagement replaces the CER and the PPAE: a NEW `contrat` dated since
    is refused (422), and so is a `contrat_engagement` dated before (it did not exist). Checked where an event
    would be stored or kept aside (`record_event`,
    `record_by_reference`), not in `EventIn`: a replay of one stored, or kept aside, before the service refused
    them (same external_id, or same content) is answered as known; one kept aside then is applied when its
    person arrives (`record_once(..., kept_aside=True)`)."""
    if event.type == "contrat" and event.date >= CE_IN_FORCE:
        raise Unprocessable(
            f"a contrat {event.contrat} dated {event.date.isoformat()} is refused: since 2025-01-01 the contrat"
            " d'engagement replaces the CER and the PPAE; send a contrat_engagement event (with its organisme)",
            [{"loc": ["body", "contrat"], "msg": "CER and PPAE are refused from 2025-01-01"}],
        )
    if event.type == "contrat_engagement" and event.date < CE_IN_FORCE:
        raise Unprocessable(
            f"a contrat_engagement dated {event.date.isoformat()} is refused: the contrat d'engagement exists from"
            " 2025-01-01 (loi n° 2023-1196); a contract signed before is a contrat (CER or PPAE)",
            [{"loc": ["body", "date"], "msg": "a contrat_engagement is dated from 2025-01-01"}],
        )


def check_without_database(event: EventIn, settings: Settings) -> None:
    """What refuses an event before any database is read (422): its date, a replaced contract. An event kept
    aside while a file is applied (app.orientation.aside) is checked so before its 202."""
    _check_date(event, settings)
    refuse_replaced_contract(event)


def _check_date(event: EventIn, settings: Settings) -> None:
    if event.date > today(settings):
        raise Unprocessable(f"date {event.date} is in the future", [{"loc": ["body", "date"], "msg": "in the future"}])


def _same(row: OrientationEvent, event: EventIn) -> bool:
    return (
        row.type == event.type
        and row.event_date == event.date
        and row.organisme == event.organisme
        and row.type_parcours == event.type_parcours
        and row.accompagnement_global == event.accompagnement_global
        and row.structure == event.structure
        and row.presence == event.presence
        and row.contrat_type == event.contrat_type
    )


def record_event(
    session: Session,
    settings: Settings,
    person: Person,
    event: EventIn,
    recorded_by: str,
    source: str = "api",
    *,
    refresh: bool = True,
    kept_aside: bool = False,
) -> tuple[OrientationEvent, bool]:
    """Store the event (or find it again by its external_id); recompute the person's episodes (unless the
    caller does it for many persons at once: `refresh=False`).

    Returns (event, created). A replay with the same external_id and content is a no-op; with another
    content it is a conflict: corrections are new events that supersede. `kept_aside`: an event kept aside
    (`pending`), checked by the rules in force when it was kept (`refuse_replaced_contract`).
    """
    _check_date(event, settings)
    dep = person.departement_code
    if event.external_id:
        existing = session.scalar(
            select(OrientationEvent).where(
                OrientationEvent.departement_code == dep, OrientationEvent.external_id == event.external_id
            )
        )
        if existing is not None:
            if existing.person_id == person.id and _same(existing, event):
                return existing, False
            raise Conflict(
                f"external_id {event.external_id!r} is already used for another event; "
                "send a correction with its own external_id and `supersedes`."
            )
    supersedes_id = None
    if event.supersedes or event.supersedes_id:
        query = select(OrientationEvent).where(
            OrientationEvent.departement_code == dep, OrientationEvent.person_id == person.id
        )
        query = (
            query.where(OrientationEvent.external_id == event.supersedes)
            if event.supersedes
            else query.where(OrientationEvent.id == event.supersedes_id)
        )
        target = session.scalar(query)
        if target is None:
            raise Unprocessable("supersedes: no such event for this person", [{"loc": ["body", "supersedes"]}])
        supersedes_id = target.id
    if not kept_aside:
        refuse_replaced_contract(event)
    row = OrientationEvent(
        person_id=person.id,
        departement_code=dep,
        type=event.type,
        event_date=event.date,
        external_id=event.external_id,
        supersedes_id=supersedes_id,
        organisme=event.organisme,
        type_parcours=event.type_parcours,
        accompagnement_global=event.accompagnement_global,
        structure=event.structure,
        referent=event.referent,
        channel=event.channel,
        presence=event.presence,
        contrat_type=event.contrat_type,
        reason=event.reason,
        source=source,
        recorded_by=recorded_by,
    )
    session.add(row)
    session.flush()
    if refresh:
        episode_service.refresh(session.connection(), [person.id])
    # Imported here: the outbox brings the France Travail client (httpx, authlib, redis), which a flux
    # ingestion, importing this module, never needs (issue #27 item 2; tests/cli/test_cli_imports.py).
    from app.france_travail import outbox as ft_outbox

    ft_outbox.enqueue_orientation(session, settings, row)  # France Travail, if the push is on (issue #12)
    return row, True


def _is(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def known_by_content(session: Session, person: Person, event: EventIn) -> OrientationEvent | None:
    """An event of the person identical to this one in every field but its external_id, superseded or not: a
    platform re-sending yesterday's export changes nothing, and never brings back what a correction replaced
    (a correction itself is never the same as what it corrects: None when `event` supersedes something)."""
    if event.supersedes or event.supersedes_id:
        return None
    oe = OrientationEvent
    return session.scalar(
        select(oe)
        .where(
            oe.person_id == person.id,
            oe.source != "france_travail",  # France Travail's own orientation is no platform's event
            oe.type == event.type,
            oe.event_date == event.date,
            _is(oe.organisme, event.organisme),
            _is(oe.type_parcours, event.type_parcours),
            _is(oe.accompagnement_global, event.accompagnement_global),
            _is(oe.structure, event.structure),
            _is(oe.referent, event.referent),
            _is(oe.channel, event.channel),
            _is(oe.presence, event.presence),
            _is(oe.contrat_type, event.contrat_type),
            _is(oe.reason, event.reason),
        )
        .order_by(oe.id)
        .limit(1)
    )


APPLIED, KNOWN_BY_EXTERNAL_ID, KNOWN_BY_CONTENT = "applied", pending.KNOWN_BY_EXTERNAL_ID, pending.KNOWN_BY_CONTENT


def record_once(
    session: Session,
    settings: Settings,
    person: Person,
    event: EventIn,
    recorded_by: str,
    source: str,
    *,
    refresh: bool = True,
    kept_aside: bool = False,
) -> tuple[OrientationEvent, str]:
    """`record_event` for events sent by person reference (CSV rows, `POST /api/v1/events`, events kept
    aside): the same external_id is the same event (or a conflict, as in `record_event`), and so is an
    event identical in content to one recorded and not superseded, external_id or not. Returns the event
    and APPLIED, KNOWN_BY_EXTERNAL_ID or KNOWN_BY_CONTENT (nothing stored)."""
    if event.external_id:
        used = session.scalar(
            select(OrientationEvent.id).where(
                OrientationEvent.departement_code == person.departement_code,
                OrientationEvent.external_id == event.external_id,
            )
        )
        if used is not None:
            row, _ = record_event(
                session, settings, person, event, recorded_by, source, refresh=refresh, kept_aside=kept_aside
            )
            return row, KNOWN_BY_EXTERNAL_ID
    twin = known_by_content(session, person, event)
    if twin is not None:
        return twin, KNOWN_BY_CONTENT
    row, _ = record_event(session, settings, person, event, recorded_by, source, refresh=refresh, kept_aside=kept_aside)
    return row, APPLIED


class PersonReferenceIn(InputModel):
    """A person named as the CAF/MSA files name them: the NIR (13 or 15 characters) and, optionally, the
    birth date; or the matricule and role."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    nir: str | None = Field(default=None, min_length=13, max_length=15, pattern=r"^[0-9AB]{13}([0-9]{2})?$")
    date_naissance: dt.date | None = Field(default=None, description="with the NIR: the person's birth date")
    matricule: str | None = Field(default=None, min_length=1, max_length=15, pattern=r"^[0-9A-Za-z]+$")
    role: Literal["DEM", "CJT"] | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> PersonReferenceIn:
        if self.nir is not None:
            if self.matricule is not None or self.role is not None:
                raise ValueError("give the nir (and date_naissance) or the matricule and role, not both")
            try:
                normalize_nir(self.nir)
            except InvalidNir as exc:
                raise ValueError(f"nir: {exc}") from None
        elif self.matricule is None or self.role is None:
            raise ValueError("give the nir (and date_naissance) or the matricule and role")
        elif self.date_naissance is not None:
            raise ValueError("date_naissance goes with the nir")
        return self

    def ref(self) -> PersonRef:
        return reference(self.nir, self.date_naissance, self.matricule, self.role)


class EventByReferenceIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    person: PersonReferenceIn
    event: EventIn
    departement: str | None = Field(
        default=None, pattern=r"^(\d{3}|02[AB])$", description="needed when the caller serves several départements"
    )


@dataclass
class ReferenceOutcome:
    """What became of an event sent by person reference: recorded for a known person (or known already),
    or kept aside for a person not known yet (or kept already)."""

    status: str  # applied | known_by_external_id | known_by_content | pending (+ pending_known_*)
    person: Person | None = None
    event: OrientationEvent | None = None
    pending: PendingEvent | None = None


def record_by_reference(
    session: Session,
    settings: Settings,
    departement: str,
    ref: PersonRef,
    event: EventIn,
    recorded_by: str,
    source: str,
    *,
    refresh: bool = True,
) -> ReferenceOutcome:
    """Record an event for the person a reference designates in the département, or keep it aside while no
    flux has brought them (`pending.keep`). Several persons designated: Unprocessable (use the NIR)."""
    _check_date(event, settings)
    person_id = find_person(session.connection(), settings, departement, ref)
    if person_id is None and wait_for_ingestion(session.connection(), departement):
        # unknown: unless a file being applied brings them (waited for its commit: look again)
        person_id = find_person(session.connection(), settings, departement, ref)
    if person_id is not None:
        person = session.get(Person, person_id)
        assert person is not None
        row, status = record_once(
            session, settings, person, event, recorded_by, "import" if source == "csv" else source, refresh=refresh
        )
        return ReferenceOutcome(status, person=person, event=row)
    refuse_replaced_contract(event)
    fields = event.model_dump(mode="json", exclude_none=True)
    kept, status = pending.keep(session, settings, departement, ref, fields, source=source, recorded_by=recorded_by)
    return ReferenceOutcome("pending" if status == pending.PENDING else f"pending_{status}", pending=kept)


# -- CSV import -------------------------------------------------------------------------------

CSV_COLUMNS = {
    "nir",
    "date_naissance",
    "matricule",
    "role",
    "evenement",
    "date",
    "organisme",
    "type_parcours",
    "accompagnement_global",
    "presence",
    "external_id",
    "structure",
    "referent",
}


PERSON_COLUMNS = {"nir", "date_naissance", "matricule", "role"}
EVENT_COLUMNS = CSV_COLUMNS - PERSON_COLUMNS - {"evenement", "date"}  # what a row may say of its event


@dataclass
class ImportReport:
    rows: int = 0
    applied: int = 0
    already_known: int = 0  # the two below, and what other importers count so
    already_known_by_external_id: int = 0
    already_known_by_content: int = 0
    pending: int = 0  # "en attente d'une personne": kept aside until a flux brings the person
    pending_rows: list[dict[str, Any]] = field(default_factory=list)  # line and pending id
    rejected: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    encoding: str = "utf-8"
    separator: str = ";"


_TRUE, _FALSE = frozenset({"1", "oui", "true", "vrai", "o"}), frozenset({"0", "non", "false", "faux", "n"})


def _separator(text: str) -> str:
    first = text.split("\n", 1)[0]
    semicolons, commas = first.count(";"), first.count(",")
    if not semicolons and not commas:
        raise Unprocessable("the header must name at least the columns evenement and date (separator ; or ,)")
    return ";" if semicolons >= commas else ","


def _boolean(value: str, column: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{column}: {value[:20]!r} is not 0/1, oui/non or true/false")


def _tolerant_payload(row: dict[str, str], line: int, warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """The event a CSV row describes. Every column is on every row and people fill them: a value in a
    column that does not concern the row's event type is ignored with a warning (an organisme on an RDV row
    is kept as the RDV's structure); only what the event type takes is validated, strictly."""
    kind = row["evenement"]
    payload: dict[str, Any] = {"type": kind, "date": iso_date(row["date"], "date")}
    given = {c: row[c] for c in sorted(EVENT_COLUMNS) if row.get(c)}
    if kind == "contrat" and given.get("type_parcours") in ("CER", "PPAE"):
        payload["contrat"] = given.pop("type_parcours")
    elif kind == "contrat" and given.get("type_parcours") == CE:  # a CE written as contrats were: the same event
        kind = payload["type"] = CONTRAT_ENGAGEMENT
        given.pop("type_parcours")
    if kind not in FIELDS:
        payload.update(given)  # EventIn names the unknown type
        return payload
    required, optional = FIELDS[kind]
    takes = required | optional | {"external_id"}
    for column, value in given.items():
        if column in takes:
            payload[column] = _boolean(value, column) if column == "accompagnement_global" else value
        elif column == "organisme" and "structure" in takes and not given.get("structure"):
            payload["structure"] = value
            warnings.append({"line": line, "message": f"organisme kept as the {kind} event's structure"})
        else:
            warnings.append({"line": line, "message": f"column {column} ignored: a {kind} event does not take it"})
    return payload


def record_import(session: Session, recorded_by: str, departement: str, report: ImportReport) -> None:
    """An import is one audit event (`orientation.import`): its counts, with the rows it applied."""
    record_action(
        session,
        job_principal("orientations import") if recorded_by == "cli" else recorded_by,
        "orientation.import",
        departement,
        outcome="rejected" if report.rejected and not report.applied else "ok",
        detail={
            "rows": report.rows,
            "applied": report.applied,
            "already_known": report.already_known,
            "pending": report.pending,
            "rejected": len(report.rejected),
        },
    )


def _count(report: ImportReport, line: int, outcome: ReferenceOutcome) -> None:
    if outcome.status == APPLIED:
        report.applied += 1
    elif outcome.status == "pending":
        assert outcome.pending is not None
        report.pending += 1
        report.pending_rows.append({"line": line, "id": outcome.pending.id})
    else:
        report.already_known += 1
        if outcome.status.endswith(KNOWN_BY_EXTERNAL_ID):
            report.already_known_by_external_id += 1
        else:
            report.already_known_by_content += 1


def import_csv(
    session: Session, settings: Settings, departement: str, data: bytes | str, recorded_by: str
) -> ImportReport:
    """Apply a CSV of events as people and platforms write it (separator `;` or `,`, UTF-8 with or without
    BOM or Windows-1252, dates aaaa-mm-jj or jj/mm/aaaa, booleans 0/1, oui/non, true/false; columns that do
    not concern a row's event ignored with a warning). Valid rows are applied in the caller's transaction;
    invalid rows are listed with their line and reason. The JSON events API stays strict (docs).

    A row whose person no flux has brought yet is kept aside (`pending`, applied when a flux brings them); a
    row identical to an event recorded (or kept aside) already is `already_known`, external_id or not."""
    report = ImportReport()
    touched: set[int] = set()
    text, report.encoding = decode_csv(data)
    report.separator = _separator(text)
    reader = csv.DictReader(io.StringIO(text), delimiter=report.separator)
    header = {h.strip() for h in (csv_fieldnames(reader) or [])}
    unknown = sorted(header - CSV_COLUMNS)
    if not header or "evenement" not in header or "date" not in header:
        raise Unprocessable("the header must name at least the columns evenement and date (separator ; or ,)")
    if unknown:
        raise Unprocessable(f"unknown column(s): {', '.join(unknown)}")
    for line, raw in enumerate(csv_rows(reader), start=2):
        report.rows += 1
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        try:
            for column, value in row.items():
                problem = control_character_problem(value)
                if problem:
                    raise ValueError(f"{column}: {problem}")
            born = iso_date(row["date_naissance"], "date_naissance") if row.get("date_naissance") else None
            ref = reference(
                row.get("nir"), date.fromisoformat(born) if born else None, row.get("matricule"), row.get("role")
            )
            warnings: list[dict[str, Any]] = []
            event = EventIn.model_validate(_tolerant_payload(row, line, warnings))
            with session.begin_nested():
                outcome = record_by_reference(
                    session, settings, departement, ref, event, recorded_by, source="csv", refresh=False
                )
            report.warnings.extend(warnings)
            _count(report, line, outcome)
            if outcome.status == APPLIED and outcome.person is not None:
                touched.add(outcome.person.id)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())
            report.rejected.append({"line": line, "reason": reasons})
        except (ValueError, Unprocessable, Conflict, NotFound) as exc:
            report.rejected.append({"line": line, "reason": getattr(exc, "message", str(exc))})
    # the episodes of every person an applied row concerns, at once (their locks taken in one order)
    episode_service.refresh(session.connection(), sorted(touched))
    record_import(session, recorded_by, departement, report)
    return report
