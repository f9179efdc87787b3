"""The contrat d'engagement's lists (issue #25, item 3; docs/rules.md, "The contrat d'engagement"):

- the persons oriented without a contract, by contract deadline (`waiting_contract`): their latest entry
  episode oriented on as_of, whose latest orientation (the first or a re-orientation, dated since
  1 January 2025) has no contract signed on or after it by as_of, and who are still in droits et devoirs;
- the transition (`transition`): the persons accompanied before 1 January 2025 (the initial stock's file
  received before 2025, or an orientation or référent dated before 2025) still in droits et devoirs and
  followed on as_of, without a contrat d'engagement signed by as_of; their deadline is
  `Settings.ce_transition_deadline` (1 January 2027).

Both are read as of a day from dated facts only (an event dated after as_of does not count), and read by the
HTTP API (`/api/v1/worklist/contrats`, `/api/v1/worklist/transition-ce`) and the pilotage table
`contrats-engagement`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, or_, select

from app.db import one_of
from app.models import EntryEpisode, FluxFile, OrientationEvent, Person, PersonState
from app.orientation.episodes import effective_events
from app.persons.states import latest_states
from app.rules.config import DROIT_OUVERT
from app.rules.episodes import (
    CE_IN_FORCE,
    CONTRAT_ENGAGEMENT,
    ORIENTED,
    contract_after_orientation_as_of,
    contract_deadline_as_of,
    orientation_as_of,
    outcome_as_of,
)


@dataclass(frozen=True)
class WaitingContract:
    """An oriented person without a contract on the day: their episode (a row of `entry_episodes`), the
    orientation that started the clock, the deadline, and whether it is near or past."""

    episode: Any
    oriented_on: date
    deadline: date
    days_left: int  # deadline - day (negative: past)
    near: bool  # 0 <= days_left <= the warning setting
    past: bool  # day > deadline


def in_droits_devoirs_on(
    conn: Connection, ids: Sequence[int], day: date, departements: Sequence[str] | None = None
) -> set[int]:
    """The persons whose latest state received on or before `day` shows them present, soumis aux droits et
    devoirs, their right open (ETATDOSRSA 2, 3 or 4: as the stock table counts them). `departements`: the
    persons' own, which lets PostgreSQL read their states by the département's index: thousands of ids
    alone made it scan every département's states on a national host (bench/BENCHMARKS.md, issue #27)."""
    if not ids:
        return set()
    ps = PersonState.__table__.c
    where = [one_of(conn, ps.person_id, list(ids))]
    if departements is not None:
        where.append(ps.departement_code.in_(list(departements)))
    latest = latest_states((ps.person_id, ps.present, ps.sdd, ps.etat), as_of=day, where=where)
    return {
        r.person_id
        for r in conn.execute(select(latest))
        if r.present and r.sdd is True and (r.etat or "") in DROIT_OUVERT
    }


def _latest_episodes(conn: Connection, departements: Sequence[str], day: date) -> list[Any]:
    """Each person's latest entry episode started on or before `day` (a later entry replaces an earlier)."""
    ee = EntryEpisode.__table__.c
    rows = conn.execute(
        select(
            ee.id,
            ee.person_id,
            ee.departement_code,
            ee.rank,
            ee.t0,
            ee.outcome,
            ee.end_on,
            ee.oriented_by,
            ee.organisme,
            ee.type_parcours,
            ee.structure,
            ee.commune,
            ee.caf_msa,
            ee.orientations,
            ee.contrats,
        )
        .where(ee.departement_code.in_(list(departements)), ee.t0 <= day)
        .order_by(ee.person_id, ee.t0, ee.rank)
    ).all()
    latest: dict[int, Any] = {}
    for r in rows:
        latest[r.person_id] = r
    return list(latest.values())


def waiting_contract(
    conn: Connection, departements: Sequence[str], day: date, warning_days: int = 7
) -> list[WaitingContract]:
    """The persons oriented (since 1 January 2025) without a contract on `day`, by contract deadline then
    person. Those oriented before 2025 are the transition's (`transition`)."""
    found = []
    for ep in _latest_episodes(conn, departements, day):
        if outcome_as_of(ep, day) != ORIENTED:
            continue
        oriented_on = orientation_as_of(ep, day)
        if oriented_on is None or oriented_on < CE_IN_FORCE or contract_after_orientation_as_of(ep, day):
            continue
        deadline = contract_deadline_as_of(ep, day)
        assert deadline is not None
        left = (deadline - day).days
        found.append(WaitingContract(ep, oriented_on, deadline, left, 0 <= left <= warning_days, left < 0))
    present = in_droits_devoirs_on(conn, [w.episode.person_id for w in found], day, departements)
    found = [w for w in found if w.episode.person_id in present]
    found.sort(key=lambda w: (w.deadline, w.episode.person_id))
    return found


@dataclass(frozen=True)
class TransitionEntry:
    """A person accompanied before 2025 without a contrat d'engagement on the day."""

    person_id: int
    departement: str
    origin: str  # stock | orientation | referent: what shows them accompanied before 2025
    since: date  # its date (the stock file's reception, or the event's date)
    organisme: str | None  # the latest orientation's or référent's organisme before 2025, if any
    structure: str | None


def transition(conn: Connection, departements: Sequence[str], day: date) -> list[TransitionEntry]:
    """The transition list on `day`, by person (docs/rules.md, "The transition")."""
    deps = list(departements)
    ps, ff, oe = PersonState.__table__.c, FluxFile.__table__.c, OrientationEvent.__table__.c
    stock_since: dict[int, date] = {}
    for pid, received in conn.execute(
        select(ps.person_id, ps.received_on)
        .join(FluxFile.__table__, ff.id == ps.file_id)
        .where(
            ps.departement_code.in_(deps),
            ff.initial_stock.is_(True),
            # a stock received before 2025; or since, of a right demanded or opened before 2025 (a Département
            # that starts the service now: its file active was accompanied on 1 January 2025: docs/rules.md)
            or_(ps.received_on < CE_IN_FORCE, ps.dtdemrsa < CE_IN_FORCE, ps.ddnatdro < CE_IN_FORCE),
            ps.received_on <= day,
        )
    ):
        stock_since[pid] = min(received, stock_since.get(pid, received))
    early = select(oe.person_id).where(
        oe.departement_code.in_(deps),
        oe.type.in_(("orientation", "referent")),
        oe.event_date < CE_IN_FORCE,
        oe.event_date <= day,
    )
    candidates = sorted(set(stock_since) | set(conn.execute(early.distinct()).scalars()))
    if not candidates:
        return []
    events: dict[int, list[Any]] = defaultdict(list)
    for r in conn.execute(
        select(OrientationEvent.__table__).where(one_of(conn, oe.person_id, candidates), oe.event_date <= day)
    ):
        events[r.person_id].append(r)
    reoriented = _entered_or_oriented_since(conn, candidates, day)
    p = Person.__table__.c
    departement_of = dict(conn.execute(select(p.id, p.departement_code).where(one_of(conn, p.id, candidates))).all())
    present = in_droits_devoirs_on(conn, candidates, day, deps)
    out = []
    for pid in candidates:
        if pid not in present or pid in reoriented:
            continue
        evs = sorted(
            (r for r in effective_events(events.get(pid, [])) if getattr(r, "ft_statut", None) != "PRECONISE"),
            key=lambda r: (r.event_date, r.id),
        )  # an orientation France Travail only recommended (`ft_statut` PRECONISE) is no orientation
        if any(r.type == "orientation" and r.event_date >= CE_IN_FORCE for r in evs):
            continue  # a new orientation decision: the one-month clock applies (`waiting_contract`)
        if any(r.type == CONTRAT_ENGAGEMENT or (r.type == "contrat" and r.event_date >= CE_IN_FORCE) for r in evs):
            continue  # a CER / PPAE dated since 2025, recorded before the service refused them, is the CE signed
        before = [r for r in evs if r.type in ("orientation", "referent") and r.event_date < CE_IN_FORCE]
        last = before[-1] if before else None
        known = [d for d in (stock_since.get(pid), last.event_date if last is not None else None) if d is not None]
        if not known:
            continue  # only a correction's or a recommendation's trace before 2025: nothing accompanied them
        followed_since = max(known)
        if any(r.type == "suivi_clos" and r.event_date >= followed_since for r in evs):
            continue  # the platform closed the follow-up since: not followed on the day
        origin, since = ("stock", stock_since[pid]) if last is None else (last.type, last.event_date)
        organisme, structure = (last.organisme, last.structure) if last is not None else (None, None)
        out.append(TransitionEntry(pid, departement_of[pid], origin, since, organisme, structure))
    return out


def _entered_or_oriented_since(conn: Connection, ids: Sequence[int], day: date) -> set[int]:
    """Persons whose latest entry episode on `day` is not oriented on `day` (a nouvel entrant again, waiting
    or gone: an entry episode means no follow-up was in progress, criterion 3), or is oriented on `day` by an
    orientation dated since 2025 (the one-month clock applies)."""
    ee = EntryEpisode.__table__.c
    rows = conn.execute(
        select(ee.person_id, ee.outcome, ee.end_on, ee.type_parcours, ee.orientations, ee.t0, ee.rank)
        .where(one_of(conn, ee.person_id, list(ids)), ee.t0 <= day)
        .order_by(ee.person_id, ee.t0, ee.rank)
    ).all()
    latest = {r.person_id: r for r in rows}
    return {
        pid
        for pid, r in latest.items()
        # an entry episode says no follow-up was in progress (criterion 3): waiting (or left) on the day, the
        # person is the orientation worklist's; oriented since 2025, `waiting_contract`'s
        if outcome_as_of(r, day) != ORIENTED or ((o := orientation_as_of(r, day)) is not None and o >= CE_IN_FORCE)
    }
