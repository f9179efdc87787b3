"""When names and birth date alone may not join a record to a known person.

SPEC §3, readings settled in the third round: "a match by names and birth date alone never joins two records
that the files show in two different foyers on the same date". A record of foyer F (organisme + matricule),
in a file received on day d, that only its names + birth date key ties to a known person P is not joined to P
when the files show P elsewhere at that date:

- this very file places P in another foyer (an earlier record of it);
- a file received on d (this one's earlier batches included) has a record of P in another foyer;
- the state of P in force at this file's date is present in a foyer of another organisme (a CAF stock person
  still in their CAF foyer when an MSA file shows a homonym without NIR in an MSA foyer: the two foyers
  coexist on d);
- the first state of P after this file's date is present in a foyer of another organisme (the same case when
  the files arrive in the other order: the later MSA file was applied first).

A person changing foyer inside one organisme (their previous foyer's state still in force) is still joined,
and so is a person whose state in force says they left (absent). The NIR check (both have one and they differ)
is the matcher's own, for every key but the NIR.

The facts are read once per batch, for the few persons an identity key alone could designate
(`identity_candidates`): the observations of the files received on d, and the persons' state rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Connection, or_, select

from app.db import one_of
from app.flux.bulk import T_FILES, T_OBSERVATIONS, T_STATES, chunks
from app.flux.derive import PreparedPerson
from app.persons.order import FileKey, file_key

FoyerKey = tuple[Any, Any, Any]  # (fonorg, numorg, matricule)


class Placement(NamedTuple):
    foyer: FoyerKey
    present: bool


class Whereabouts(NamedTuple):
    """Where the files show a known person around one file's date."""

    same_day: frozenset[FoyerKey]  # foyers of their records in the files received that day (this one's too)
    before: Placement | None  # their state in force before this file
    after: Placement | None  # their first state after this file


NOWHERE = Whereabouts(frozenset(), None, None)


def identity_candidates(foyers: Iterable[Iterable[PreparedPerson]], known: dict[str, int]) -> set[int]:
    """The persons these records' names + birth date key designate while none of their other keys designates
    the same person: the only ones an identity-only match can join (usually none). `known`: who holds each
    key before the batch (never a key recorded as ambiguous)."""
    found: set[int] = set()
    owner_of = known.get
    for people in foyers:
        for person in people:
            keys = person.keys
            if not keys:
                continue
            kind, value = keys[-1]  # the identity key, when there is one, is the last (app.flux.derive)
            if kind != "identity":
                continue
            owner = owner_of(value)
            if owner is None or owner in found:
                continue
            for _kind, other in keys[:-1]:
                if owner_of(other) == owner:
                    break
            else:
                found.add(owner)
    return found


def other_organisme(a: FoyerKey, b: FoyerKey) -> bool:
    """Two foyers of two organismes (FONORG, and NUMORG when both say it)."""
    return a[0] != b[0] or bool(a[1] and b[1] and a[1] != b[1])


def load_whereabouts(
    conn: Connection,
    departement: str,
    file_id: int,
    key: FileKey,
    received_on: date,
    person_ids: Iterable[int],
) -> dict[int, Whereabouts]:
    """Where the files show these persons around this file's date: two queries per 5,000 persons."""
    ids = sorted(set(person_ids))
    if not ids:
        return {}
    o, ft, ps = T_OBSERVATIONS.c, T_FILES.c, T_STATES.c
    same_day: dict[int, set[FoyerKey]] = {}
    before: dict[int, tuple[tuple[FileKey, int], Placement]] = {}
    after: dict[int, tuple[tuple[FileKey, int], Placement]] = {}
    files_that_day = select(ft.id).where(
        ft.departement_code == departement,
        ft.received_on == received_on,
        ft.nature == "D",
        or_(ft.status == "applied", ft.id == file_id),
    )
    for chunk in chunks(ids, 5000):
        for pid, fonorg, numorg, matricule in conn.execute(
            select(o.person_id, o.fonorg, o.numorg, o.matricule).where(
                one_of(conn, o.person_id, chunk), o.file_id.in_(files_that_day)
            )
        ):
            same_day.setdefault(pid, set()).add((fonorg, numorg, matricule))
        for row in conn.execute(
            select(
                ps.person_id,
                ps.received_on,
                ps.file_created_at,
                ps.type_flux,
                ps.file_id,
                ps.seq,
                ps.present,
                ps.fonorg,
                ps.numorg,
                ps.matricule,
            ).where(one_of(conn, ps.person_id, chunk), ps.file_id != file_id)
        ):
            rank = (file_key(row.received_on, row.file_created_at, row.type_flux, row.file_id), row.seq)
            placement = Placement((row.fonorg, row.numorg, row.matricule), bool(row.present))
            if rank[0] < key:
                known = before.get(row.person_id)
                if known is None or known[0] < rank:
                    before[row.person_id] = (rank, placement)
            else:
                known = after.get(row.person_id)
                if known is None or rank < known[0]:
                    after[row.person_id] = (rank, placement)
    return {
        pid: Whereabouts(
            frozenset(same_day.get(pid, ())),
            before[pid][1] if pid in before else None,
            after[pid][1] if pid in after else None,
        )
        for pid in ids
    }


def conflict(foyer: FoyerKey, where: Whereabouts, placed_here: Iterable[FoyerKey]) -> str | None:
    """Why names + birth date alone may not join a record of `foyer` to this person (the words of the
    report's warning), or None. `placed_here`: the foyers this batch already placed the person in."""
    if any(f != foyer for f in placed_here) or any(f != foyer for f in where.same_day):
        return "in another foyer on this file's reception date"
    if where.before is not None and where.before.present and other_organisme(where.before.foyer, foyer):
        return "present in a foyer of another organisme at this file's date"
    if where.after is not None and where.after.present and other_organisme(where.after.foyer, foyer):
        return "present in a foyer of another organisme from the next file that speaks of them"
    return None
