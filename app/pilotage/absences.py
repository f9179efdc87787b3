"""The RDVs a person missed: orientation RDVs and accompaniment RDVs, read from the dated events.

An entry episode keeps only its orientation RDV's presences and the first accompaniment RDV held; the
accompaniment RDVs missed or excused live in `orientation_events` only (type `rdv_accompagnement`, with a
`presence`). Both kinds are read here from the events, the way the episodes read them: superseded events
stripped (`app.orientation.episodes.effective_events`), an event counted on its own date, only events dated
on or before as_of (so a past reading is the same whenever it is asked again).

Two readings:
- per entry episode (`accompaniment_by_episode`): the accompaniment RDVs of the episode (dated from its T0 to
  the next episode's T0, as `app.rules.episodes._attach` gives them), read like the orientation RDV
  (`app.rules.episodes.rdv_orientation_as_of`): at least one missed; among them, not present at an
  accompaniment RDV since; apart, the excused. The `absents-rdv` table and the extract count them.
- per person (`missed_rdvs`): every RDV of either kind missed (`absent`) or excused (`excuse`) dated in a
  period, with its date, structure and whether the person was seen at an RDV since, so that a sanction file
  (décret du 30 mai 2025, "suspension-remobilisation": a missed RDV may lead to a suspension after the person
  has been heard) can be checked by Département staff. Nothing is decided nor sent from it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, Select, or_, select

from app.kit.csv import iter_csv
from app.models import EntryEpisode, OrientationEvent, Person
from app.orientation.episodes import effective_events
from app.pilotage.period import Period
from app.rules.episodes import NOT_CANCELLED

KINDS = ("rdv_orientation", "rdv_accompagnement")
KIND_LABELS = {"rdv_orientation": "orientation", "rdv_accompagnement": "accompagnement"}
MISSED = ("absent", "excuse")


@dataclass(frozen=True)
class Rdv:
    """One RDV as an effective event says it."""

    person_id: int
    kind: str  # rdv_orientation | rdv_accompagnement
    on: date
    presence: str | None  # present | absent | excuse | annule | prevu | None
    structure: str | None


@dataclass(frozen=True)
class RdvReading:
    """The RDVs of one kind of an episode as known on as_of."""

    with_rdv: bool  # at least one RDV not cancelled
    missed: bool  # at least one missed (absent)
    never_seen: bool  # ... and not present at an RDV of the kind on or after the first miss
    excused: bool  # at least one excused


NO_RDV = RdvReading(with_rdv=False, missed=False, never_seen=False, excused=False)


def rdvs_of(conn: Connection, person_ids: Any, as_of: date) -> dict[int, list[Rdv]]:
    """The RDVs (both kinds) of the persons (`person_ids`: a subquery or a list), not superseded, dated on or
    before as_of, by person and date. A correction may be of any type: every correcting event of the persons
    is read with their RDVs, and `effective_events` strips what they supersede."""
    oe = OrientationEvent.__table__.c
    person_ids = _uncorrelated(person_ids)
    rows = conn.execute(
        select(oe.id, oe.supersedes_id, oe.person_id, oe.type, oe.event_date, oe.presence, oe.structure).where(
            oe.person_id.in_(person_ids), or_(oe.type.in_(KINDS), oe.supersedes_id.is_not(None))
        )
    ).all()
    found: dict[int, list[Rdv]] = defaultdict(list)
    for r in sorted(effective_events(rows), key=lambda r: (r.person_id, r.event_date, r.id)):
        if r.type in KINDS and r.event_date <= as_of:
            found[r.person_id].append(Rdv(r.person_id, r.type, r.event_date, r.presence, r.structure))
    return found


def _uncorrelated(person_ids: Any) -> Any:
    """A subquery of person ids read on its own, even when it selects from the table it filters."""
    return person_ids.correlate(None) if isinstance(person_ids, Select) else person_ids


def reading(rdvs: Iterable[Rdv]) -> RdvReading:
    """RDVs of one kind read like the orientation RDV (`rules.episodes.rdv_orientation_as_of`): a cancelled
    one (`annule`) never counts; the first miss is the earliest `absent`; seen since if present at an RDV of
    the kind on or after that day."""
    held = [r for r in rdvs if r.presence in NOT_CANCELLED]
    first_miss = min((r.on for r in held if r.presence == "absent"), default=None)
    seen = first_miss is not None and any(r.presence == "present" and r.on >= first_miss for r in held)
    return RdvReading(
        with_rdv=bool(held),
        missed=first_miss is not None,
        never_seen=first_miss is not None and not seen,
        excused=any(r.presence == "excuse" for r in held),
    )


def accompaniment_by_episode(conn: Connection, person_ids: Any, as_of: date) -> dict[tuple[int, date], RdvReading]:
    """The accompaniment RDVs of each entry episode of the persons, known on as_of, by (person, T0): those
    dated on or after its T0 and before the person's next T0 (`rules.episodes._attach`)."""
    ee = EntryEpisode.__table__.c
    person_ids = _uncorrelated(person_ids)
    starts: dict[int, list[date]] = defaultdict(list)
    for pid, t0 in conn.execute(
        select(ee.person_id, ee.t0).where(ee.person_id.in_(person_ids)).order_by(ee.person_id, ee.t0)
    ):
        starts[pid].append(t0)
    found: dict[tuple[int, date], RdvReading] = {}
    for pid, rdvs in rdvs_of(conn, person_ids, as_of).items():
        t0s = starts.get(pid, [])
        for i, t0 in enumerate(t0s):
            until = t0s[i + 1] if i + 1 < len(t0s) else date.max
            mine = [r for r in rdvs if r.kind == "rdv_accompagnement" and t0 <= r.on < until]
            if mine:
                found[(pid, t0)] = reading(mine)
    return found


# -- the person-level list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissedRdv:
    person_id: int
    departement: str
    nom: str | None
    prenom: str | None
    date_naissance: date | None
    kind: str  # rdv_orientation | rdv_accompagnement
    on: date
    structure: str | None
    excused: bool  # `excuse` (else `absent`)
    seen_again_on: date | None  # the first RDV (either kind) the person came to on or after, up to as_of


def missed_rdvs(conn: Connection, departements: list[str], period: Period, as_of: date) -> list[MissedRdv]:
    """Every RDV (orientation or accompaniment) missed or excused, dated in the period and on or before as_of,
    per person (by name, then date): what a sanction file needs to be checked against. Nothing automatic."""
    oe, p = OrientationEvent.__table__.c, Person.__table__.c
    last = min(period.end, as_of)
    concerned = (
        select(oe.person_id)
        .where(
            oe.departement_code.in_(departements),
            oe.type.in_(KINDS),
            oe.presence.in_(MISSED),
            oe.event_date >= period.start,
            oe.event_date <= last,
        )
        .distinct()
    )
    persons = {
        r.id: r
        for r in conn.execute(
            select(p.id, p.departement_code, p.nom, p.prenom, p.date_naissance).where(p.id.in_(concerned))
        )
    }
    found = []
    for pid, rdvs in rdvs_of(conn, concerned, as_of).items():
        who = persons.get(pid)
        if who is None or who.departement_code not in departements:
            continue
        for r in rdvs:
            if r.presence not in MISSED or not period.start <= r.on <= last:
                continue
            again = min((x.on for x in rdvs if x.presence == "present" and x.on >= r.on), default=None)
            found.append(
                MissedRdv(
                    pid,
                    who.departement_code,
                    who.nom,
                    who.prenom,
                    who.date_naissance,
                    r.kind,
                    r.on,
                    r.structure,
                    r.presence == "excuse",
                    again,
                )
            )
    found.sort(key=lambda m: ((m.nom or "").upper(), (m.prenom or "").upper(), m.person_id, m.on, m.kind))
    return found


def as_dict(m: MissedRdv) -> dict[str, Any]:
    return {
        "person_id": m.person_id,
        "departement": m.departement,
        "nom": m.nom,
        "prenom": m.prenom,
        "date_naissance": m.date_naissance.isoformat() if m.date_naissance else None,
        "type_rdv": KIND_LABELS[m.kind],
        "date_rdv": m.on.isoformat(),
        "structure": m.structure,
        "excuse": m.excused,
        "revu_le": m.seen_again_on.isoformat() if m.seen_again_on else None,
    }


CSV_COLUMNS = (
    "Identifiant personne",
    "Département",
    "Nom",
    "Prénom",
    "Date de naissance",
    "Type de rendez-vous",
    "Date du rendez-vous",
    "Structure",
    "Excusé",
    "Revu depuis le",
)


def _fr(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


def as_csv(items: Iterable[MissedRdv]) -> Iterator[bytes]:
    """French columns for staff: `;`, UTF-8 with a BOM, dates jj/mm/aaaa, oui/non (`app.kit.csv`)."""
    return iter_csv(
        CSV_COLUMNS,
        (
            [
                m.person_id,
                m.departement,
                m.nom or "",
                m.prenom or "",
                _fr(m.date_naissance),
                f"Rendez-vous d'{KIND_LABELS[m.kind]}",
                _fr(m.on),
                m.structure or "",
                "oui" if m.excused else "non",
                _fr(m.seen_again_on) or "non revu",
            ]
            for m in items
        ),
    )
