"""Entry episodes: load a person's dated facts, run the rules, store the result; the events the platform sends."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import date
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, text, update

from app.models import EntryEpisode, FluxFile, OrientationEvent, Person, PersonState
from app.rules.config import DEFAULT, RulesConfig
from app.rules.episodes import Episode, Event, FluxFact, PersonEpisodes, compute_episodes

CHUNK = 2000


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
            ps.absence_reason,
            ps.fonorg,
            ff.initial_stock,
        )
        .join(FluxFile.__table__, ff.id == ps.file_id)
        .where(ps.person_id.in_(person_ids))
    )
    for r in rows:
        since = [x for x in (r.suspension_versement_since, r.suspension_droit_since) if x is not None]
        out[r.person_id].append(
            FluxFact(
                received_on=r.received_on,
                order=(r.file_created_at, r.file_id, r.seq),
                present=r.present,
                etat=r.etat,
                sdd=r.sdd,
                role=r.role,
                file_id=r.file_id,
                initial_stock=r.initial_stock,
                suspension_since=min(since) if since else None,
                suspension_motifs=tuple((r.suspension_versement_motifs or "").split(","))
                if r.suspension_versement_motifs
                else (),
                closure_date=r.closure_date,
                closure_motif=r.closure_motif,
                transfer_out=r.transfer_out_to is not None,
                absence_reason=r.absence_reason,
                fonorg=r.fonorg,
            )
        )
    return out


def effective_events(rows: Iterable[Any]) -> list[Any]:
    """Events that no later correction supersedes."""
    rows = list(rows)
    superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return [r for r in rows if r.id not in superseded]


def _events(conn: Connection, person_ids: Sequence[int]) -> dict[int, list[Event]]:
    oe = OrientationEvent.__table__.c
    by_person: dict[int, list[Any]] = defaultdict(list)
    for r in conn.execute(select(OrientationEvent.__table__).where(oe.person_id.in_(person_ids))):
        by_person[r.person_id].append(r)
    out: dict[int, list[Event]] = {}
    for pid, rows in by_person.items():
        out[pid] = [
            Event(
                type=r.type,
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
            for r in effective_events(rows)
        ]
    return out


def compute_for(
    conn: Connection, person_ids: Sequence[int], config: RulesConfig = DEFAULT
) -> dict[int, PersonEpisodes]:
    facts, events = _facts(conn, person_ids), _events(conn, person_ids)
    return {pid: compute_episodes(facts.get(pid, []), events.get(pid, []), config) for pid in person_ids}


def _criteria_json(ep: Episode) -> dict[str, Any]:
    return {name: asdict(c) for name, c in ep.criteria.items()}


def refresh(
    conn: Connection,
    person_ids: Sequence[int],
    config: RulesConfig = DEFAULT,
    results: dict[int, PersonEpisodes] | None = None,
) -> int:
    """Store the entry episodes of these persons (computed here unless `results` are given), inside the
    caller's transaction."""
    if not person_ids:
        return 0
    ee, pt = cast(Table, EntryEpisode.__table__), cast(Table, Person.__table__)
    ps = PersonState.__table__.c
    results = results if results is not None else compute_for(conn, person_ids, config)
    deps = dict(conn.execute(select(pt.c.id, pt.c.departement_code).where(pt.c.id.in_(person_ids))).all())
    # where the person was at T0 (CAF/MSA, commune): from the fact of T0
    t0_files = {ep.t0_file_id for r in results.values() for ep in r.episodes if ep.t0_file_id is not None}
    at_t0: dict[tuple[int, int], tuple[str | None, str | None]] = {}
    if t0_files:
        for row in conn.execute(
            select(ps.person_id, ps.file_id, ps.fonorg, ps.numcom).where(
                ps.person_id.in_(person_ids), ps.file_id.in_(sorted(t0_files))
            )
        ):
            at_t0[(row.person_id, row.file_id)] = (row.fonorg, row.numcom)
    conn.execute(delete(ee).where(ee.c.person_id.in_(person_ids)))
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
                    "oriented_by": ep.oriented_by,
                    "delay_days": ep.delay_days,
                    "within_15_days": ep.within_15_days,
                    "within_one_month": ep.within_one_month,
                    "organisme": o.organisme if o else None,
                    "type_parcours": o.type_parcours if o else None,
                    "accompagnement_global": o.accompagnement_global if o else None,
                    "structure": o.structure if o else None,
                    "rdv_orientation_absent": ep.rdv_orientation_absent,
                    "invitation_on": ep.invitation_on,
                    "rdv_orientation_on": ep.rdv_orientation_on,
                    "first_rdv_accompagnement_on": ep.first_rdv_accompagnement_on,
                    "contrat": ep.contrat,
                    "contrat_on": ep.contrat_on,
                    "caf_msa": caf_msa,
                    "commune": commune,
                    "criteria": _criteria_json(ep),
                }
            )
    if rows:
        conn.execute(insert(ee), rows)
    conn.execute(update(pt).where(pt.c.id.in_(person_ids)).values(episodes_stale=False))
    return len(rows)


def refresh_stale(
    engine: Any, departement: str | None = None, progress: Callable[[int, int], None] | None = None
) -> int:
    """Recompute every person whose facts changed since the last computation, a transaction per chunk;
    returns how many."""
    with engine.connect() as conn:
        stale = stale_persons(conn, [departement] if departement else None)
    done = 0
    for i in range(0, len(stale), CHUNK):
        chunk = stale[i : i + CHUNK]
        with engine.begin() as conn:
            refresh(conn, chunk)
        done += len(chunk)
        if progress:
            progress(done, len(stale))
    if done > 10_000 and engine.dialect.name == "postgresql":
        # Many rows just flipped from stale to fresh: refresh the statistics so that the planner keeps
        # using the partial index for "who is stale?" (autovacuum would, but later).
        with engine.begin() as conn:
            conn.execute(text("ANALYZE persons, entry_episodes"))
    return done


def refresh_stale_on(conn: Connection, departements: Sequence[str]) -> int:
    """Same as refresh_stale, inside the caller's transaction (a request that already writes)."""
    stale = stale_persons(conn, departements)
    for i in range(0, len(stale), CHUNK):
        refresh(conn, stale[i : i + CHUNK])
    return len(stale)


def stale_persons(conn: Connection, departements: Sequence[str] | None) -> list[int]:
    pt = Person.__table__.c
    # `WHERE episodes_stale` is the partial index's own predicate; no ORDER BY (sorted here), so that stale
    # statistics after a bulk refresh cannot steer the planner to a primary-key scan of the whole table.
    query = select(pt.id).where(pt.episodes_stale)
    if departements is not None:
        query = query.where(pt.departement_code.in_(departements))
    return sorted(conn.execute(query).scalars())
