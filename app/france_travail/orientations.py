"""France Travail's own orientations, read by `ft sync` from lectureOrientation (issue #25, item 2), kept as
dated facts: rows of `orientation_events` with `source = "france_travail"`, `type = "orientation"` and
France Travail's codes in the `ft_*` columns.

- **Date**: the decision date (`decision.date_decision`), read as the notification date of the orientation
  (docs/rules.md, "Orientations decided by France Travail"); without one, the day the parcours started
  (`date_entree_parcours`); with neither, nothing is recorded (counted `undated`). A date after today is not
  recorded yet (`future`): the next sync records it once it has come.
- **Idempotent**: each orientation has an external id made of the person and what France Travail said of it
  (statut, codes, dates, structure): read again, it records nothing; a `PRECONISE` that becomes `DECIDE` is
  another fact, recorded beside it (the préconisation stays in the history).
- **Not recorded**: the Département's own orientation that the outbox pushed (the outbox's confirmation
  test, `outbox.holds_one`: same parcours, organisme, origine, dated on or after its sending: `own`), and an
  orientation equal to one the platform already recorded (same date and parcours, and the same organisme when
  both are known: `same_as_platform`). The rules drop the latter too when the platform's arrives after
  (`app.orientation.episodes.as_rule_events`), so the order of arrival changes nothing.
- Such a row is never pushed back to France Travail (`outbox.enqueue_orientation`).

Only a `DECIDE` with a parcours (PED, PSP, PSO) orients an episode (`oriented_by = "france_travail"`); a
`PRECONISE`, or a decision without a parcours (EO entretien d'orientation, IND indéterminé), is shown only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clock import today
from app.france_travail.outbox import holds_one
from app.models import FtOutboxItem, OrientationEvent
from app.settings import Settings

SOURCE = "france_travail"
RECORDED_BY = "ft sync"
# France Travail's parcours -> the convention's type de parcours (arrêté du 21 novembre 2024's three parcours):
# PED parcours emploi direct = professionnel, PSP = socio-professionnel, PSO = social; EO (entretien
# d'orientation) and IND (indéterminé) are no parcours.
PARCOURS = {"PED": "professionnel", "PSP": "socio-professionnel", "PSO": "social"}
ORGANISMES = {"FT": "FRANCE_TRAVAIL", "CD": "DEPARTEMENT", "ML": "MISSION_LOCALE", "CE": "CAP_EMPLOI"}
RESULTS = ("decide", "preconise", "unchanged", "own", "same_as_platform", "undated", "future")


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def external_id(person_id: int, o: dict[str, Any]) -> str:
    """The stable id of what France Travail said of one orientation of the person."""
    structure = o.get("structure") or {}
    said = "|".join(
        str(v or "")
        for v in (
            o.get("statut"),
            o.get("parcours"),
            o.get("organisme"),
            o.get("dateDecision"),
            o.get("dateEntreeParcours"),
            structure.get("codeSafir"),
            structure.get("codeAurore"),
        )
    )
    return f"ft:{person_id}:{o.get('statut', '')[:1]}:{hashlib.sha256(said.encode()).hexdigest()[:24]}"


def _pushed(session: Session, person_id: int) -> list[FtOutboxItem]:
    return list(
        session.scalars(
            select(FtOutboxItem).where(
                FtOutboxItem.person_id == person_id, FtOutboxItem.status.in_(("sent", "sending", "pending"))
            )
        )
    )


def _platform_has(session: Session, person_id: int, on: date, parcours: str | None, organisme: str | None) -> bool:
    rows = session.scalars(
        select(OrientationEvent).where(
            OrientationEvent.person_id == person_id,
            OrientationEvent.type == "orientation",
            OrientationEvent.source != SOURCE,
            OrientationEvent.event_date == on,
        )
    )
    return any(same_orientation(r.type_parcours, r.organisme, parcours, organisme) for r in rows)


def same_orientation(
    parcours_a: str | None, organisme_a: str | None, parcours_b: str | None, organisme_b: str | None
) -> bool:
    """Two orientations of one day are the same when their parcours are, and their organismes when both known."""
    return parcours_a == parcours_b and (organisme_a is None or organisme_b is None or organisme_a == organisme_b)


def record_one(
    session: Session, settings: Settings, person_id: int, departement: str, o: dict[str, Any]
) -> tuple[str, OrientationEvent | None]:
    """One orientation France Travail gave (mapped by `mapping.orientation`): recorded or why not."""
    on = _day(o.get("dateDecision")) or _day(o.get("dateEntreeParcours"))
    if on is None:
        return "undated", None
    if on > today(settings):
        return "future", None
    ext = external_id(person_id, o)
    if session.scalar(
        select(OrientationEvent.id).where(
            OrientationEvent.departement_code == departement, OrientationEvent.external_id == ext
        )
    ):
        return "unchanged", None
    if any(holds_one({**o, "dateOrientation": on.isoformat()}, item, settings) for item in _pushed(session, person_id)):
        return "own", None
    parcours, organisme = PARCOURS.get(o.get("parcours") or ""), ORGANISMES.get(o.get("organisme") or "")
    if _platform_has(session, person_id, on, parcours, organisme):
        return "same_as_platform", None
    structure = o.get("structure") or {}
    row = OrientationEvent(
        person_id=person_id,
        departement_code=departement,
        type="orientation",
        event_date=on,
        external_id=ext,
        organisme=organisme,
        type_parcours=parcours,
        structure=structure.get("libelle"),
        source=SOURCE,
        recorded_by=RECORDED_BY,
        ft_statut=o.get("statut"),
        ft_parcours=o.get("parcours"),
        ft_organisme=o.get("organisme"),
        ft_etat=o.get("etat"),
        ft_etat_decision=(o.get("etatDecision") or "")[:30] or None,
        ft_decision_on=_day(o.get("dateDecision")),
        ft_entree_parcours_on=_day(o.get("dateEntreeParcours")),
        ft_code_safir=structure.get("codeSafir"),
        ft_code_aurore=structure.get("codeAurore"),
    )
    session.add(row)
    session.flush()
    return ("decide" if o.get("statut") == "DECIDE" else "preconise"), row


def record(
    session: Session, settings: Settings, answers: Iterable[tuple[int, str, dict[str, Any] | None]]
) -> tuple[Counter[str], list[tuple[int, str]]]:
    """What lectureOrientation said for each (person, département, mapped answer or None for a 204), in the
    caller's write transaction: the counts by result (`none` for a 204) and the persons (with their
    département) given a new fact, whose episodes must be refreshed."""
    counts: Counter[str] = Counter()
    changed: list[tuple[int, str]] = []
    for person_id, departement, answer in answers:
        if answer is None:
            counts["none"] += 1
            continue
        for o in answer.get("orientations") or ():
            result, row = record_one(session, settings, person_id, departement, o)
            counts[result] += 1
            if row is not None and (person_id, departement) not in changed:
                changed.append((person_id, departement))
    return counts, changed
