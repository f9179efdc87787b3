"""RDV-Insertion's users export (`orientations import --format rdv-insertion`, or detected from the header):
each row becomes events — the orientation (date: the start of the accompaniment, else the orientation
date: a setting), its type (label → parcours: a setting), its structure and référent(s), the last RDV with
its status, the invitations' dates. Idempotent across re-imports of a newer export: each event's
`external_id` comes from the row's identity (a keyed hash: no identifier in clear) and its date; a last RDV
whose status changed supersedes the one imported before.

Format (RDV-Insertion's exporters): `;`, UTF-8 with BOM, dates jj/mm/aaaa, Oui/Non, LF."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clock import today
from app.errors import PasserelleError
from app.integrations.rdv_insertion.webhooks import KeyMaker, match, organismes_of
from app.kit.csv import csv_rows, decode_csv
from app.models import OrientationEvent, Person
from app.orientation.service import EventIn, ImportReport, record_event, record_import
from app.persons.keys import key_hash
from app.settings import Settings

FIRST_COLUMNS = ("Civilité", "Nom", "Prénom", "Numéro CAF")
STATUSES = {
    "Rendez-vous honoré": "present",
    "Absence non excusée": "absent",
    "Annulé (excusé)": "excuse",
    "Annulé (par le service)": "annule",
    "RDV à venir": "prevu",
    "Statut du RDV à préciser": "prevu",
}
ROLES = {"demandeur": "demandeur", "conjoint": "conjoint"}
# The organisme an orientation structure belongs to, read from its name (else AUTRE: never guessed as the
# Département). Documented in docs/integrations.md.
ORGANISMES = (
    (re.compile(r"france\s*travail|p[oô]le\s*emploi", re.I), "FRANCE_TRAVAIL"),
    (re.compile(r"mission\s*locale", re.I), "MISSION_LOCALE"),
    (re.compile(r"cap\s*emploi", re.I), "CAP_EMPLOI"),
    (re.compile(r"\bccas\b|centre communal", re.I), "CCAS"),
    (re.compile(r"\bspip\b", re.I), "SPIP"),
    (re.compile(r"d[ée]partement|conseil d[ée]partemental|\bcd\s?\d{2}\b|maison de la solidarit", re.I), "DEPARTEMENT"),
)


def is_rdv_insertion_export(text: str) -> bool:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    return [c.strip() for c in first.split(";")[:4]] == list(FIRST_COLUMNS)


def _day(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    found = re.match(r"^(\d{2})/(\d{2})/(\d{4})$", value)
    if not found:
        raise ValueError(f"{value[:20]!r} is not a date jj/mm/aaaa")
    d, m, y = found.groups()
    return date(int(y), int(m), int(d)).isoformat()


def _organisme(structure: str | None) -> str:
    for pattern, code in ORGANISMES:
        if structure and pattern.search(structure):
            return code
    return "AUTRE"


def import_export(
    session: Session, settings: Settings, departement: str, data: bytes | str, recorded_by: str
) -> ImportReport:
    report = ImportReport()
    text, report.encoding = decode_csv(data)
    report.separator = ";"
    if not is_rdv_insertion_export(text):
        raise PasserelleError(
            "this is not an RDV-Insertion users export (its header starts Civilité;Nom;Prénom;Numéro CAF)"
        )
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=";")
    keys = KeyMaker(settings, organismes_of(session.connection(), departement))
    for line, raw in enumerate(csv_rows(reader), start=2):
        report.rows += 1
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        try:
            user = {
                "affiliation_number": row.get("Numéro CAF"),
                "role": ROLES.get(row.get("Rôle", "").lower()),
                "first_name": row.get("Prénom"),
                "last_name": row.get("Nom"),
                "birth_date": _day(row.get("Date de naissance")),
            }
            person_id, reason = match(session.connection(), departement, keys.keys(user))
            if person_id is None:
                raise ValueError(reason or "unknown person")
            person = session.get(Person, person_id)
            assert person is not None
            identity = key_hash(
                settings.hmac_key,
                "rdvi-export|"
                + "|".join(
                    str(user[k] or "") for k in ("affiliation_number", "role", "last_name", "first_name", "birth_date")
                ),
            )[:16]
            base = f"rdvi-export:{departement}:{identity}"
            applied = 0
            for fields in _events(row, settings, report, line):
                with session.begin_nested():
                    applied += _record(session, settings, person, base, fields, recorded_by)
            report.applied += applied
            if not applied:
                report.already_known += 1
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())
            report.rejected.append({"line": line, "reason": reasons})
        except (ValueError, PasserelleError) as exc:
            report.rejected.append({"line": line, "reason": getattr(exc, "message", str(exc))})
    record_import(session, recorded_by, departement, report)
    return report


def _events(row: dict[str, str], settings: Settings, report: ImportReport, line: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for column in ("Première invitation envoyée le", "Dernière invitation envoyée le"):
        day = _day(row.get(column))
        if day and all(e["date"] != day for e in out):
            out.append({"type": "invitation", "date": day, "_key": f"invitation:{day}"})
    rdv_day = _day(row.get("Date du dernier RDV"))
    if rdv_day:
        status = row.get("Statut du rdv", "")
        presence = STATUSES.get(status)
        if presence is None and status:
            report.warnings.append({"line": line, "message": f"RDV status {status[:40]!r} unknown: presence not set"})
        kind = (
            "rdv_orientation" if "orientation" in row.get("Motif du dernier RDV", "").lower() else "rdv_accompagnement"
        )
        rdv: dict[str, Any] = {"type": kind, "date": rdv_day, "_key": f"rdv:{rdv_day}", "_status": presence or "-"}
        if presence:
            rdv["presence"] = presence
        out.append(rdv)
    start = _day(row.get("Date de début d'accompagnement"))
    oriented = _day(row.get("Date d'orientation"))
    day = (
        (start or oriented)
        if settings.rdv_insertion_orientation_date == "debut_accompagnement"
        else (oriented or start)
    )
    if day:
        label = row.get("Type d'orientation", "")
        parcours = settings.rdv_insertion_parcours.get(label)
        if parcours is None:
            raise ValueError(f"Type d'orientation {label[:40]!r} is not in PASSERELLE_RDV_INSERTION_PARCOURS")
        structure = row.get("Structure d'orientation") or None
        orientation: dict[str, Any] = {
            "type": "orientation",
            "date": day,
            "organisme": _organisme(structure),
            "type_parcours": parcours,
            "_key": f"orientation:{day}",
        }
        if structure:
            orientation["structure"] = structure[:200]
        referents = row.get("Référent(s)")
        if referents:
            orientation["referent"] = referents[:200]
        out.append(orientation)
    return out


def _record(
    session: Session, settings: Settings, person: Person, base: str, fields: dict[str, Any], recorded_by: str
) -> int:
    """Record one event (1), or nothing if this export's event is known (0); a last RDV whose status
    changed since the previous export supersedes it."""
    key, status = fields.pop("_key"), fields.pop("_status", None)
    external = f"{base}:{key}" + (f":{status}" if status else "")
    if date.fromisoformat(fields["date"]) > today(settings):
        return 0  # an RDV to come: the next export says how it went
    earlier = session.scalar(
        select(OrientationEvent.external_id)
        .where(
            OrientationEvent.person_id == person.id,
            OrientationEvent.external_id.like(f"{base}:{key}:%"),
            OrientationEvent.external_id != external,
        )
        .order_by(OrientationEvent.id.desc())
        .limit(1)
    )
    if earlier is not None:
        fields["supersedes"] = earlier
    _row, created = record_event(
        session, settings, person, EventIn.model_validate(fields | {"external_id": external}), recorded_by, "import"
    )
    return int(created)
