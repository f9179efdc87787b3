"""A person's state as of a date, in one query: for each person, the latest of their states received on or
before the date, in the order of dated facts (app.persons.order). The weekly files, the worklist, France
Travail's return file, the pilotage stock and the purge all read a state this way."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Connection, Subquery, func, select

from app.db import one_of
from app.models import PersonState
from app.persons.order import state_order


def latest_states(
    columns: Sequence[Any],
    *,
    as_of: date | None = None,
    present_only: bool = False,
    where: Sequence[ColumnElement[bool]] = (),
) -> Subquery:
    """One row per person with `columns` (columns of `person_states`) of their latest state: received on or
    before `as_of` (any date when None), where present if `present_only`, among the states `where` keeps."""
    ps = PersonState.__table__.c
    conditions = list(where)
    if as_of is not None:
        conditions.append(ps.received_on <= as_of)
    if present_only:
        conditions.append(ps.present.is_(True))
    rank = func.row_number().over(partition_by=ps.person_id, order_by=state_order(ps, descending=True))
    ranked = select(*columns, rank.label("state_rank")).where(*conditions).subquery()
    return select(*[ranked.c[c.name] for c in columns]).where(ranked.c.state_rank == 1).subquery()


def states_as_of(conn: Connection, ids: list[int], day: date, columns: Sequence[str] | None = None) -> dict[int, Any]:
    """Each person's latest state where present, dated on or before `day` (no ids: no query); `columns`:
    only these columns of the state (and `person_id`), else all."""
    if not ids:
        return {}
    ps = PersonState.__table__.c
    chosen = list(ps) if columns is None else [ps.person_id, *(ps[c] for c in columns if c != "person_id")]
    latest = latest_states(chosen, as_of=day, present_only=True, where=[one_of(conn, ps.person_id, ids)])
    return {r.person_id: r for r in conn.execute(select(latest))}
