"""Entry episodes: load a person's dated facts, run the rules, store the result.

Who refreshes (docs/decisions.md, "Many callers at once"): the writer that changed a person's facts marks
the person in `episode_queue` (insert-only) in its own transaction, then brings the episodes up to date:
the event recording inside its transaction, the ingestion and the import right after their commit
(`refresh_pending`). Readers never refresh. Every refresh takes one lock first (`_refresh_lock`), so two
refreshes of a person never interleave and the later one reads every fact committed before it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Engine, Table, and_, delete, func, insert, select, text

from app.db import claim_write, one_of
from app.models import EntryEpisode, EpisodeQueue, FluxFile, OrientationEvent, Person, PersonState
from app.persons.order import KIND_RANK
from app.rules.config import DEFAULT, RulesConfig
from app.rules.episodes import (
    DECISIONS,
    FT_NOT_ORIENTING,
    ORIENTED,
    Episode,
    Event,
    FluxFact,
    PersonEpisodes,
    compute_episodes,
)

CHUNK = 2000
# PostgreSQL advisory locks (transaction-scoped, two-key form: this namespace, a stripe of person ids)
# serialising refreshes of the same persons; SQLite's write lock does it there.
_REFRESH_LOCK_ID = 0x5A55E12E
_LOCK_STRIPES = 1024


# The SQL twin of `app.rules.episodes.outcome_as_of`, for stored episodes (`entry_episodes`): the same
# reading of "an entry episode as seen on day D", as WHERE clauses. `ee` is the table's columns
# (`EntryEpisode.__table__.c`) or the mapped class (`EntryEpisode`). A stored episode has an `end_on`
# exactly when its outcome is one of `DECISIONS`, and `open_until` is its `end_on` or 9999-12-31 while
# undecided (indexed with the département and T0), so "waiting on D" is one index range.
# tests/orientation/test_as_of_reading.py pins that both readings agree.


def waiting_on(ee: Any, day: date) -> ColumnElement[bool]:
    """Entered on or before `day` and still waiting on it (`outcome_as_of(ep, day) == "en_attente"`)."""
    return and_(ee.t0 <= day, ee.open_until > day)


def decided_by(ee: Any, day: date) -> ColumnElement[bool]:
    """Decided (oriented or left) on or before `day` (`outcome_as_of(ep, day) in DECISIONS`)."""
    return and_(ee.end_on <= day, ee.outcome.in_(DECISIONS))


def oriented_by(ee: Any, day: date) -> ColumnElement[bool]:
    """Oriented on or before `day` (`outcome_as_of(ep, day) == "oriente"`)."""
    return and_(ee.end_on <= day, ee.outcome == ORIENTED)


def _facts(conn: Connection, person_ids: Sequence[int]) -> dict[int, list[FluxFact]]:
    ps, ff = PersonState.__table__.c, FluxFile.__table__.c
    out: dict[int, list[FluxFact]] = defaultdict(list)
    rows = conn.execute(
        select(
            ps.person_id,
            ps.received_on,
            ps.file_created_at,
            ps.file_id,
            ps.seq,
            ps.type_flux,
            ps.present,
            ps.etat,
            ps.sdd,
            ps.role,
            ps.suspension_versement_since,
            ps.suspension_droit_since,
            ps.suspension_versement_motifs,
            ps.closure_date,
            ps.closure_motif,
            ps.transfer_out_to,
            ps.transfer_out_date,
            ps.transfer_in_date,
            ps.transfer_in_from,
            ps.numdemrsa,
            ps.absence_reason,
            ps.fonorg,
            ps.death_date,
            ff.initial_stock,
        )
        .join(FluxFile.__table__, ff.id == ps.file_id)
        .where(one_of(conn, ps.person_id, person_ids))
    )
    rank = KIND_RANK.get
    append_to = out.__getitem__
    # rows unpacked by position (a daily file's refresh reads ~10,000: attribute access on rows was most of it)
    for (
        person_id,
        received_on,
        file_created_at,
        file_id,
        seq,
        type_flux,
        present,
        etat,
        sdd,
        role,
        susp_versement_since,
        susp_droit_since,
        susp_motifs,
        closure_date,
        closure_motif,
        transfer_out_to,
        transfer_out_date,
        transfer_in_date,
        transfer_in_from,
        numdemrsa,
        absence_reason,
        fonorg,
        death_date,
        initial_stock,
    ) in rows:
        if susp_versement_since is None:
            since = susp_droit_since
        elif susp_droit_since is None:
            since = susp_versement_since
        else:
            since = min(susp_versement_since, susp_droit_since)
        append_to(person_id).append(
            FluxFact(
                received_on=received_on,
                order=(file_created_at, rank(type_flux, 2), file_id, seq),
                present=present,
                etat=etat,
                sdd=sdd,
                role=role,
                file_id=file_id,
                initial_stock=initial_stock,
                suspension_since=since,
                suspension_motifs=tuple(susp_motifs.split(",")) if susp_motifs else (),
                closure_date=closure_date,
                closure_motif=closure_motif,
                transfer_out=_moved_away_from(transfer_out_to, transfer_out_date, transfer_in_date),
                absence_reason=absence_reason,
                fonorg=fonorg,
                death_date=death_date,
                transfer_in_on=transfer_in_date,
                transfer_in_from=transfer_in_from,
                numdemrsa=numdemrsa,
            )
        )
    return out


def _moved_away_from(out_to: Any, out_on: date | None, in_on: date | None) -> bool:
    """A transfer out (OrganismePrenant) is a move away unless a transfer in (OrganismeCedant) dated after
    it says the person came back: real files carry both (formats/caf-flux.md, "What real files show")."""
    if out_to is None:
        return False
    return not (out_on is not None and in_on is not None and out_on < in_on)


def effective_events(rows: Iterable[Any]) -> list[Any]:
    """Events that no later correction supersedes."""
    rows = list(rows)
    superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return [r for r in rows if r.id not in superseded]


def _events(conn: Connection, person_ids: Sequence[int]) -> dict[int, list[Event]]:
    oe = OrientationEvent.__table__.c
    by_person: dict[int, list[Any]] = defaultdict(list)
    for r in conn.execute(select(OrientationEvent.__table__).where(one_of(conn, oe.person_id, person_ids))):
        by_person[r.person_id].append(r)
    return {pid: as_rule_events(effective_events(rows)) for pid, rows in by_person.items()}


FT_SOURCE = "france_travail"  # orientation_events.source of France Travail's own orientations (ft sync)


def as_rule_events(rows: Iterable[Any]) -> list[Event]:
    """A person's effective stored events as the rules read them. France Travail's orientation equal to one
    the platform recorded (same day, same parcours, same organisme when both known) is dropped: it is the
    same decision, whichever reached the service first (app.france_travail.orientations)."""
    rows = list(rows)
    platform = [
        (r.event_date, r.type_parcours, r.organisme)
        for r in rows
        if r.type == "orientation" and getattr(r, "source", None) != FT_SOURCE
    ]

    def duplicate(r: Any) -> bool:
        return getattr(r, "source", None) == FT_SOURCE and any(
            on == r.event_date
            and parcours == r.type_parcours
            and (org is None or r.organisme is None or org == r.organisme)
            for on, parcours, org in platform
        )

    return [as_rule_event(r) for r in rows if not duplicate(r)]


# A decision France Travail says it refused or cancelled (`decision.etat_decision`; its code list is not
# published: any value naming a refusal, a rejection or a cancellation) decides nothing (docs/rules.md).
REFUSED_DECISION = ("REFUS", "REJET", "ANNUL")


def _ft_decided(r: Any) -> bool:
    """France Travail's orientation orients: DECIDE, with a parcours, its decision not refused."""
    etat = (getattr(r, "ft_etat_decision", None) or "").upper()
    return (
        getattr(r, "ft_statut", None) == "DECIDE"
        and r.type_parcours is not None
        and not any(word in etat for word in REFUSED_DECISION)
    )


def as_rule_event(r: Any) -> Event:
    """A stored orientation event (a row of `orientation_events`) as the rules read it. France Travail's own
    orientation orients only when DECIDE with a parcours; otherwise it is `FT_NOT_ORIENTING` (shown only)."""
    by_ft = getattr(r, "source", None) == FT_SOURCE
    kind = r.type
    if by_ft and not _ft_decided(r):
        kind = FT_NOT_ORIENTING
    return Event(
        type=kind,
        by_france_travail=by_ft,
        on=r.event_date,
        key=r.external_id or f"#{r.id:012d}",
        organisme=r.organisme,
        type_parcours=r.type_parcours,
        accompagnement_global=r.accompagnement_global,
        structure=r.structure,
        presence=r.presence,
        contrat=r.contrat_type,
        event_id=r.id,
    )


def compute_for(
    conn: Connection, person_ids: Sequence[int], config: RulesConfig = DEFAULT
) -> dict[int, PersonEpisodes]:
    facts, events = _facts(conn, person_ids), _events(conn, person_ids)
    return {pid: compute_episodes(facts.get(pid, []), events.get(pid, []), config) for pid in person_ids}


def _plain(value: Any) -> Any:
    """A copy of a criterion's facts (dicts, lists and tuples of plain values), as `dataclasses.asdict` copies
    them, without its per-leaf `deepcopy` (a third of a daily file's refresh, issue #27 item 2)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _criteria_json(ep: Episode) -> dict[str, Any]:
    """Each criterion as `dataclasses.asdict` gives it (`held`, `reason`, `facts`): pinned equal by
    tests/orientation/test_episode_rows.py."""
    return {name: {"held": c.held, "reason": c.reason, "facts": _plain(c.facts)} for name, c in ep.criteria.items()}


def _refresh_lock(conn: Connection, person_ids: Sequence[int] = ()) -> None:
    """Serialise refreshes of the same persons, taken before their facts are read.

    PostgreSQL: transaction-scoped advisory locks on stripes of person ids (`id % 1024`), taken in
    ascending order (so two refreshes never wait for each other in a cycle), released at commit. Event
    recordings for different persons run side by side; one lock for every refresh capped them at one at a
    time (bench/BENCHMARKS.md, load runs). A chunk of 2,000 persons takes at most 1,024 locks, well within
    the server's lock table. SQLite: the database's write lock, which serialises every writer anyway.
    """
    if conn.dialect.name == "postgresql":
        stripes = sorted({pid % _LOCK_STRIPES for pid in person_ids})
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:ns, s) FROM unnest(CAST(:stripes AS integer[])) AS s"),
            {"ns": _REFRESH_LOCK_ID, "stripes": stripes},
        )
    else:
        claim_write(conn)


def episode_rows(conn: Connection, results: dict[int, PersonEpisodes]) -> list[dict[str, Any]]:
    """The `entry_episodes` rows of computed results (also how the API shows a fresh computation)."""
    person_ids = sorted(pid for pid, r in results.items() if r.episodes)
    if not person_ids:
        return []
    pt, ps = Person.__table__.c, PersonState.__table__.c
    deps = dict(conn.execute(select(pt.id, pt.departement_code).where(one_of(conn, pt.id, person_ids))).all())
    # where the person was at T0 (CAF/MSA, commune): from the fact of T0
    t0_files = {ep.t0_file_id for r in results.values() for ep in r.episodes if ep.t0_file_id is not None}
    at_t0: dict[tuple[int, int], tuple[str | None, str | None]] = {}
    if t0_files:
        for row in conn.execute(
            select(ps.person_id, ps.file_id, ps.fonorg, ps.numcom).where(
                one_of(conn, ps.person_id, person_ids), ps.file_id.in_(sorted(t0_files))
            )
        ):
            at_t0[(row.person_id, row.file_id)] = (row.fonorg, row.numcom)
    rows = []
    for pid, result in results.items():
        for rank, ep in enumerate(result.episodes, start=1):
            o = ep.orientation
            caf_msa, commune = at_t0.get((pid, ep.t0_file_id or -1), (None, None))
            rows.append(
                {
                    "person_id": pid,
                    "departement_code": deps[pid],
                    "rank": rank,
                    "t0": ep.t0,
                    "t0_file_id": ep.t0_file_id,
                    "outcome": ep.outcome,
                    "end_on": ep.end_on,
                    "open_until": ep.end_on or date.max,
                    "left_on": ep.left_on,
                    "left_reason": ep.left_reason,
                    "left_file_id": ep.left_file_id,
                    "oriented_by": ep.oriented_by,
                    "delay_days": ep.delay_days,
                    "within_15_days": ep.within_15_days,
                    "within_one_month": ep.within_one_month,
                    "organisme": o.organisme if o else None,
                    "type_parcours": o.type_parcours if o else None,
                    "accompagnement_global": o.accompagnement_global if o else None,
                    "structure": o.structure if o else None,
                    "orientation_on": o.on if o else None,
                    "invitation_on": ep.invitation_on,
                    "rdv_orientation_on": ep.rdv_orientation_on,
                    "rdv_orientation_missed_on": ep.rdv_orientation_missed_on,
                    "rdv_orientation_seen_on": ep.rdv_orientation_seen_on,
                    "rdv_orientation_excused_on": ep.rdv_orientation_excused_on,
                    "first_rdv_accompagnement_on": ep.first_rdv_accompagnement_on,
                    "contrats": [[on.isoformat(), kind] for on, kind in ep.contrats],
                    "referents": [[on.isoformat(), structure] for on, structure in ep.referents],
                    "contrats_engagement": [[on.isoformat(), org] for on, org in ep.contrats_engagement],
                    "orientations": [[on.isoformat(), parcours] for on, parcours in ep.orientations],
                    "caf_msa": caf_msa,
                    "commune": commune,
                    "criteria": _criteria_json(ep),
                    "legal_clock": ep.legal_clock,
                    "legal_clock_reason": (ep.legal_clock_reason or "")[:200] or None,
                    "legal_deadline": ep.legal_deadline,
                }
            )
    return rows


def refresh(conn: Connection, person_ids: Sequence[int], config: RulesConfig = DEFAULT) -> int:
    """Recompute and store the entry episodes of these persons inside the caller's (writing) transaction,
    and take them off the queue. Returns the number of episodes stored."""
    if not person_ids:
        return 0
    ids = sorted(set(person_ids))
    _refresh_lock(conn, ids)
    q = cast(Table, EpisodeQueue.__table__)
    # Off the queue first: the rows this statement sees were committed with their facts, so the computation
    # below (later statements, later snapshots) sees those facts; a row committed after it keeps its person
    # queued for the next refresh. (Reading the largest id first and deleting up to it after the computation
    # could drop a change committed in between under a smaller id: writers side by side, two ingestions of
    # two départements among them, do not commit in the order of their ids.)
    # The entry episodes' rows first, then the queue's: the order the purge deletes them in (app.admin.purge,
    # PERSON_TABLES), so a refresh and a purge of one person never lock each other's rows in a cycle.
    ee = cast(Table, EntryEpisode.__table__)
    conn.execute(delete(ee).where(one_of(conn, ee.c.person_id, ids)))
    conn.execute(delete(q).where(one_of(conn, q.c.person_id, ids)))
    rows = episode_rows(conn, compute_for(conn, ids, config))
    if rows:
        conn.execute(insert(ee), rows)
    return len(rows)


def refresh_pending(engine: Engine, progress: Callable[[int, int], None] | None = None) -> int:
    """Bring every queued person up to date, a short transaction per chunk (so that event recordings wait
    at most one chunk); returns how many persons. Called by writers after their commit, and by
    `passerelle episodes refresh`."""
    q = EpisodeQueue.__table__.c
    with engine.connect() as conn:
        upto = conn.execute(select(func.max(q.id))).scalar_one()
        total = pending_count(conn) if upto else 0
    done, last = 0, 0
    while upto is not None:
        with engine.begin() as conn:
            claim_write(conn)  # first: on SQLite a transaction that read may not start writing
            chunk = list(
                conn.execute(
                    select(q.person_id)
                    .where(q.person_id > last, q.id <= upto)
                    .group_by(q.person_id)
                    .order_by(q.person_id)
                    .limit(CHUNK)
                ).scalars()
            )
            if not chunk:
                break
            refresh(conn, chunk)
        done, last = done + len(chunk), chunk[-1]
        if progress:
            progress(done, max(total, done))
    if done > 10_000 and engine.dialect.name == "postgresql":
        # Many rows just changed: refresh the statistics so that the planner keeps good plans for the
        # worklist and the indicators (autovacuum would, but later).
        with engine.begin() as conn:
            conn.execute(text("ANALYZE entry_episodes, episode_queue"))
    return done


def pending_count(conn: Connection) -> int:
    """How many persons wait for a refresh (e.g. after a refresh that failed)."""
    q = EpisodeQueue.__table__.c
    return int(conn.execute(select(func.count(func.distinct(q.person_id)))).scalar_one())
