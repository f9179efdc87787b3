"""THE reading of the persons the pilotage counts: the entry episodes seen from an as_of date.

An episode counts if its T0 is in the period and on or before as_of; its outcome counts only if decided on
or before as_of (else the person is still waiting on as_of); an appointment or a first accompaniment counts
only if dated on or before as_of. Each episode carries its breakdown values as of its T0 (the role and the
commune of the file that made the person enter), with one code for a value not given (`NOT_GIVEN`). Every
pilotage figure (the seven tables, the annex-4 indicator, the dashboard) is computed from these rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from app.models import EntryEpisode, Person, PersonState
from app.orientation.episodes import waiting_on
from app.pilotage.labels import AGE_BANDS, NOT_GIVEN, NOT_ORIENTED, WAITING_BANDS
from app.pilotage.period import Period
from app.rules.episodes import ORIENTED, RdvOrientation, decision_as_of, known_as_of, rdv_orientation_as_of


@dataclass
class Row:
    person_id: int
    t0: date
    decided: str | None  # oriente | sorti_avant_orientation | None (waiting as of as_of)
    end_on: date | None
    delay_days: int | None
    within_15_days: bool
    within_one_month: bool
    rdv_absent: bool  # oriented, and missed an orientation RDV (`rdv_orientation`)
    rdv_never_seen: bool  # ... and not seen at an orientation RDV since
    rdv_excused: bool  # oriented, and excused from an orientation RDV
    rdv_on: date | None
    accompagnement_on: date | None
    t0_file_id: int | None
    dims: dict[str, str]
    numdemrsa: bool = False  # the T0 file gave a demand number
    ddnatdro: bool = False  # ... and a right-opening date
    oriented_by: str | None = None  # oriented on as_of: orientation | referent | france_travail (else None)


class AtT0(NamedTuple):
    """What the file that made a person enter said of them."""

    role: str | None
    numdemrsa: bool
    ddnatdro: bool


NOTHING_AT_T0 = AtT0(None, False, False)


def age_band(born: date | None, on: date) -> str:
    if born is None:
        return NOT_GIVEN
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return next(label for lo, hi, label in AGE_BANDS if lo <= age <= hi)


def band(days: int, bands: Iterable[tuple[int, int, str]]) -> str:
    return next(label for lo, hi, label in bands if lo <= days <= hi)


def in_period(departements: list[str], period: Period, as_of: date) -> tuple[Any, ...]:
    """The episodes counted: T0 in the period and on or before as_of."""
    ee = EntryEpisode.__table__.c
    return (ee.departement_code.in_(departements), ee.t0 >= period.start, ee.t0 <= min(period.end, as_of))


def _at_t0(conn: Connection, where: tuple[Any, ...]) -> dict[tuple[int, int], AtT0]:
    """What each T0 file said of its person: one plain join, read beside the episodes (a subquery per
    episode, or a grouped subquery joined to them, let the planner choose nested loops over the whole
    département: 0.9 s for one month on PostgreSQL). A person twice in the file: the first role, and what
    either line gave."""
    ee, ps = EntryEpisode.__table__.c, PersonState.__table__.c
    found: dict[tuple[int, int], AtT0] = {}
    for pid, fid, role, numdemrsa, ddnatdro in conn.execute(
        select(ps.person_id, ps.file_id, ps.role, ps.numdemrsa, ps.ddnatdro)
        .join(EntryEpisode.__table__, (ee.person_id == ps.person_id) & (ee.t0_file_id == ps.file_id))
        .where(*where)
    ):
        known = found.get((pid, fid), NOTHING_AT_T0)
        found[(pid, fid)] = AtT0(
            min(filter(None, (role, known.role)), default=None),
            bool(numdemrsa) or known.numdemrsa,
            ddnatdro is not None or known.ddnatdro,
        )
    return found


def _episode_rows(conn: Connection, where: tuple[Any, ...]) -> list[Any]:
    """The episodes counted, with the columns the figures use (never the criteria, a JSON per episode)."""
    ee, p = EntryEpisode.__table__.c, Person.__table__.c
    return list(
        conn.execute(
            select(
                ee.person_id,
                ee.t0,
                ee.outcome,
                ee.end_on,
                ee.delay_days,
                ee.within_15_days,
                ee.within_one_month,
                ee.organisme,
                ee.structure,
                ee.type_parcours,
                ee.accompagnement_global,
                ee.caf_msa,
                ee.commune,
                ee.rdv_orientation_on,
                ee.rdv_orientation_missed_on,
                ee.rdv_orientation_seen_on,
                ee.rdv_orientation_excused_on,
                ee.first_rdv_accompagnement_on,
                ee.t0_file_id,
                ee.oriented_by,
                p.sexe,
                p.date_naissance,
            )
            .join(Person.__table__, p.id == ee.person_id)
            .where(*where)
            .order_by(ee.person_id, ee.t0)
        ).all()
    )


def breakdowns(r: Any, role: str | None, oriented: bool, territories: dict[str, str] | None) -> dict[str, str]:
    """An episode's value for each breakdown: the orientation's (if oriented on as_of), else `NOT_ORIENTED`;
    the person's as of T0; `NOT_GIVEN` where the facts do not say."""
    ag = r.accompagnement_global
    dims = {
        "organisme": (r.organisme or NOT_GIVEN) if oriented else NOT_ORIENTED,
        "structure": (r.structure or NOT_GIVEN) if oriented else NOT_ORIENTED,
        "type_parcours": (r.type_parcours or NOT_GIVEN) if oriented else NOT_ORIENTED,
        "accompagnement_global": ("oui" if ag else "non") if oriented and ag is not None else NOT_GIVEN,
        "caf_msa": r.caf_msa or NOT_GIVEN,
        "commune": r.commune or NOT_GIVEN,
        "tranche_age": age_band(r.date_naissance, r.t0),
        "sexe": r.sexe or NOT_GIVEN,
        "role": role or NOT_GIVEN,
    }
    if territories is not None:
        dims["territoire"] = territories.get(r.commune or "", NOT_GIVEN)
    return dims


NO_RDV_FACT = RdvOrientation(missed=False, never_seen=False, excused=False)


def rdv_orientation(r: Any, as_of: date) -> RdvOrientation:
    """The orientation RDV of an oriented nouvel entrant as the pilotage counts it on as_of (annex 4, 001
    ~7508: "le nombre de BRSA qui sont orientés mais qui ne se présentent pas au rendez-vous d'orientation";
    SPEC §3, third round): oriented on or before as_of, and at least one orientation RDV of the episode
    missed (`absent`) on or before as_of; among them, those not present at an orientation RDV since (up to
    as_of); apart, those excused (`excuse`). Not oriented on as_of: none of them. The tables, the indicator
    and the extract all read it here."""
    if decision_as_of(r, as_of) != ORIENTED:
        return NO_RDV_FACT
    return rdv_orientation_as_of(
        r.rdv_orientation_missed_on, r.rdv_orientation_seen_on, r.rdv_orientation_excused_on, as_of
    )


def _row(r: Any, at_t0: AtT0, as_of: date, territories: dict[str, str] | None) -> Row:
    decided = decision_as_of(r, as_of)
    oriented = decided == ORIENTED
    rdv_on = known_as_of(r.rdv_orientation_on, as_of)
    rdv = rdv_orientation(r, as_of)
    return Row(
        person_id=r.person_id,
        t0=r.t0,
        decided=decided,
        end_on=r.end_on if decided else None,
        delay_days=r.delay_days if oriented else None,
        within_15_days=bool(oriented and r.within_15_days),
        within_one_month=bool(oriented and r.within_one_month),
        rdv_absent=rdv.missed,
        rdv_never_seen=rdv.never_seen,
        rdv_excused=rdv.excused,
        rdv_on=rdv_on,
        accompagnement_on=known_as_of(r.first_rdv_accompagnement_on, as_of),
        t0_file_id=r.t0_file_id,
        dims=breakdowns(r, at_t0.role, oriented, territories),
        numdemrsa=at_t0.numdemrsa,
        ddnatdro=at_t0.ddnatdro,
        oriented_by=r.oriented_by if oriented else None,
    )


def episodes(
    conn: Connection, departements: list[str], period: Period, as_of: date, territories: dict[str, str] | None = None
) -> list[Row]:
    """The nouveaux entrants of the period (T0 in it, on or before as_of), each with its outcome as known on
    as_of and its breakdown values (the role and commune of the file that made it enter)."""
    where = in_period(departements, period, as_of)
    at_t0 = _at_t0(conn, where)
    return [
        _row(r, at_t0.get((r.person_id, r.t0_file_id or 0), NOTHING_AT_T0), as_of, territories)
        for r in _episode_rows(conn, where)
    ]


def waiting_by_age(conn: Connection, departements: list[str], as_of: date) -> dict[str, int]:
    """Everyone waiting for an orientation on as_of (whatever their T0), by age of the wait: the list the
    dashboard shows, read without computing a whole table."""
    ee = EntryEpisode.__table__.c
    counts = Counter(
        band((as_of - t0).days, WAITING_BANDS)
        for t0 in conn.execute(
            select(ee.t0).where(ee.departement_code.in_(departements), waiting_on(ee, as_of))
        ).scalars()
    )
    return {label: counts.get(label, 0) for _lo, _hi, label in WAITING_BANDS}
