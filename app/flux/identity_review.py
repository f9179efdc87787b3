"""The identity-only matches, for an operator to review and, when one joined two persons, to undo.

An ingestion that joins a record to a known person by names and birth date alone (no NIR, matricule or
demand number in common) says so in the file's report and keeps the match in `identity_matches`
(app.flux.identity). `list_matches` lists them (ids, foyer key, dates: never a name, a NIR or a birth date);
`split` undoes one:

- what the matched foyer said of the person from that file on (its records, `flux_observations`) goes to a
  new person, with the foyer's keys (organisme + matricule + role, demand number + role, as that record and
  the foyer's later states give them) and the NIR when that record brought it;
- both persons' facts from that file on are recomputed from what each file said (app.flux.replay), exactly as
  if the files had always shown two persons;
- the names + birth date key is recorded as carried by two persons (`ambiguous_keys`): it never joins them
  again, in later files or when a late file is placed among the others;
- the entry episodes of both are recomputed; the action is an audit event (`persons.split`).

What stays with the first person: orientation events, France Travail facts, instruction records and partners'
deliveries recorded for them (they name our person id; the operator reassigns them if they belong to the
other one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from app.audit.chain import record_action
from app.db import one_of
from app.errors import Conflict, NotFound, Unprocessable
from app.flux.bulk import (
    PERSON_COLUMNS,
    T_AMBIGUOUS,
    T_FILES,
    T_KEYS,
    T_OBSERVATIONS,
    T_PERSONS,
    T_STATES,
    BulkWriter,
    PersonIds,
    begin_ingestion,
    lock_departement,
)
from app.flux.derive import ROW_COLUMNS, STATE_COLUMNS
from app.flux.replay import Replay
from app.models import IdentityMatch
from app.orientation.episodes import refresh
from app.persons.keys import key_hash, matricule_key_text
from app.persons.order import file_key
from app.settings import Settings

MAX_REASON = 300
STATUSES = ("open", "split")


def list_matches(
    session: Session, departements: Sequence[str], status: str | None = None, limit: int = 1000
) -> list[IdentityMatch]:
    """The identity-only matches of these départements (of this status, if given), newest first."""
    query = select(IdentityMatch).where(IdentityMatch.departement_code.in_(sorted(departements)))
    if status is not None:
        query = query.where(IdentityMatch.status == status)
    return list(session.scalars(query.order_by(IdentityMatch.id.desc()).limit(limit)))


def file_counts(session: Session, file_id: int) -> dict[str, int]:
    """How many identity-only matches a file made, by status (`open`, `split`)."""
    im = IdentityMatch
    rows = session.execute(select(im.status, func.count()).where(im.file_id == file_id).group_by(im.status)).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


@dataclass
class SplitOutcome:
    match_id: int
    person_id: int  # the person the match had joined the record to
    new_person_id: int  # the person the matched foyer's records now belong to
    records_moved: int
    keys_moved: int
    nir_moved: bool
    episodes: int  # entry episodes of the two persons after the split

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split(session: Session, settings: Settings, match_id: int, reason: str, by: str) -> SplitOutcome:
    """Undo one identity-only match (module docstring), in the caller's unit of work."""
    reason = " ".join(reason.split())
    if not reason:
        raise Unprocessable("give the reason of the split (--reason): it is kept with the match")
    conn = session.connection()
    begin_ingestion(conn)  # the persons' facts change, as in an ingestion
    dep = conn.execute(select(IdentityMatch.departement_code).where(IdentityMatch.id == match_id)).scalar_one_or_none()
    if dep is None:
        raise NotFound(f"no identity match #{match_id} (see `passerelle persons identity-matches`)")
    lock_departement(conn, dep)  # one at a time with the département's files; read again under the lock
    m = session.get(IdentityMatch, match_id, populate_existing=True)
    if m is None:
        raise NotFound(f"no identity match #{match_id} (see `passerelle persons identity-matches`)")
    if m.status != "open":
        raise Conflict(f"identity match #{match_id} is already split (person {m.split_person_id})")
    pt, ft, o, ps = T_PERSONS.c, T_FILES.c, T_OBSERVATIONS.c, T_STATES.c
    person = conn.execute(select(T_PERSONS).where(pt.id == m.person_id)).mappings().first()
    if person is None:
        raise NotFound(f"identity match #{match_id}: person {m.person_id} no longer exists (erased)")
    match_file = conn.execute(select(ft.received_on, ft.created_at_caf, ft.type_flux).where(ft.id == m.file_id)).one()
    type_flux = match_file.type_flux or "I"
    # Just before the match's file among the dated facts: the replay below recomputes from that file on.
    key = file_key(match_file.received_on, match_file.created_at_caf, type_flux, m.file_id - 1)
    start = file_key(match_file.received_on, match_file.created_at_caf, type_flux, m.file_id)

    moved = [
        row
        for row in conn.execute(
            select(o.file_id, o.seq, o.fingerprint, ft.received_on, ft.created_at_caf, ft.type_flux)
            .join(T_FILES, ft.id == o.file_id)
            .where(o.person_id == m.person_id, o.fonorg == m.fonorg, o.numorg == m.numorg, o.matricule == m.matricule)
        )
        if file_key(row.received_on, row.created_at_caf, row.type_flux, row.file_id) >= start
    ]
    if not moved:
        raise Conflict(f"identity match #{match_id}: the person has no record of that foyer from that file on")
    content = {
        row.fingerprint: tuple(row[c] for c in STATE_COLUMNS)
        for row in conn.execute(select(T_STATES).where(ps.person_id == m.person_id)).mappings()
    }

    # the new person: the same identity; the NIR when the matched record brought it
    new_id = PersonIds(conn).take()
    last = max(moved, key=lambda r: file_key(r.received_on, r.created_at_caf, r.type_flux, r.file_id))
    values = {c: person[c] for c in PERSON_COLUMNS} | {
        "id": new_id,
        "stock": False,
        "first_file_id": m.file_id,
        "first_received_on": m.received_on,
        "updated_file_id": last.file_id,
    }
    nir_moved = bool(m.brought_nir and person["nir_hash"])
    if not nir_moved:
        values |= {"nir_hash": None, "nir_encrypted": None}
    conn.execute(insert(T_PERSONS).values(values))
    if nir_moved:
        conn.execute(update(T_PERSONS).where(pt.id == m.person_id).values(nir_hash=None, nir_encrypted=None))

    # the matched foyer's records are the new person's; their states, dated by each record, are what the
    # replay starts from (it keeps only the rows that change what is in force)
    conn.execute(
        update(T_OBSERVATIONS)
        .where(o.file_id == bindparam("b_file"), o.seq == bindparam("b_seq"))
        .values(person_id=new_id),
        [{"b_file": r.file_id, "b_seq": r.seq} for r in moved],
    )
    rows = []
    for r in moved:
        state = content.get(r.fingerprint)
        if state is None:
            raise Conflict(f"identity match #{match_id}: a record of file {r.file_id} has no stored state")
        rows.append(
            (new_id, r.file_id, dep, r.received_on, r.created_at_caf, r.seq, r.type_flux, *state, r.fingerprint)
        )
    writer = BulkWriter(conn)
    writer.insert(T_STATES, ROW_COLUMNS, rows)
    replay = Replay(conn, writer, dep, key, type_flux)
    replay.run([m.person_id, new_id])

    keys_moved = _move_keys(conn, settings, m, new_id)
    _record_ambiguous(conn, m)
    m.status = "split"
    m.split_person_id = new_id
    m.split_at = datetime.now(UTC)
    m.split_by = by[:120]
    m.split_reason = reason[:MAX_REASON]
    session.flush()
    episodes = refresh(conn, [m.person_id, new_id])
    outcome = SplitOutcome(match_id, m.person_id, new_id, len(moved), keys_moved, nir_moved, episodes)
    record_action(
        session,
        by,
        "persons.split",
        dep,
        person_id=m.person_id,
        detail={
            "match": match_id,
            "file_id": m.file_id,
            "new_person": new_id,
            "records_moved": len(moved),
            "keys_moved": keys_moved,
            "nir_moved": nir_moved,
        },
    )
    return outcome


def _move_keys(conn: Connection, settings: Settings, m: IdentityMatch, new_id: int) -> int:
    """The matched foyer's keys go with its records: the record's own (organisme + matricule + role, demand
    number + role, the foyer it came from) and those of the new person's states (a later demand number)."""
    ps, pk = T_STATES.c, T_KEYS.c
    values = set(m.record_keys or [])
    for fonorg, numorg, matricule, numdemrsa, role in conn.execute(
        select(ps.fonorg, ps.numorg, ps.matricule, ps.numdemrsa, ps.role)
        .where(ps.person_id == new_id, ps.present.is_(True))
        .distinct()
    ):
        if matricule:
            values.add(key_hash(settings.hmac_key, matricule_key_text(fonorg, numorg, matricule, role)))
        if numdemrsa:
            values.add(key_hash(settings.hmac_key, f"dem|{numdemrsa}|{role}"))
    if not values:
        return 0
    result = conn.execute(
        update(T_KEYS)
        .where(
            pk.departement_code == m.departement_code,
            pk.person_id == m.person_id,
            one_of(conn, pk.value, sorted(values)),
        )
        .values(person_id=new_id)
    )
    return int(result.rowcount or 0)


def _record_ambiguous(conn: Connection, m: IdentityMatch) -> None:
    """Names + birth date are carried by two persons now: they identify neither from now on."""
    pk, ak = T_KEYS.c, T_AMBIGUOUS.c
    conn.execute(delete(T_KEYS).where(pk.departement_code == m.departement_code, pk.value == m.identity_key))
    known = conn.execute(
        select(ak.value).where(ak.departement_code == m.departement_code, ak.value == m.identity_key)
    ).first()
    if known is None:
        conn.execute(
            insert(T_AMBIGUOUS).values(
                departement_code=m.departement_code, value=m.identity_key, kind="identity", file_id=m.file_id
            )
        )
