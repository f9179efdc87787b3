"""A person's state as of a date, in one query: for each person, the latest of their states received on or
before the date, in the order of dated facts (app.persons.order). The weekly files, the worklist, France
Travail's return file, the pilotage stock and the purge all read a state this way."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Connection, Date, Subquery, bindparam, func, select

from app.db import one_of_param, one_of_value
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
    dialect = conn.dialect.name
    params = {"state_ids": one_of_value(dialect, ids), "state_day": day}
    return {r.person_id: r for r in conn.execute(_states_statement(dialect, columns), params)}


# built once per dialect and choice of columns: building it and its cache key cost more CPU than a worklist
# page's run of it (issue #27)
_STATEMENTS: dict[tuple[str, tuple[str, ...] | None], Any] = {}


def _states_statement(dialect: str, columns: Sequence[str] | None) -> Any:
    key = (dialect, None if columns is None else tuple(columns))
    statement = _STATEMENTS.get(key)
    if statement is None:
        ps = PersonState.__table__.c
        chosen = list(ps) if columns is None else [ps.person_id, *(ps[c] for c in columns if c != "person_id")]
        day: Any = bindparam("state_day", type_=Date())
        latest = latest_states(
            chosen, as_of=day, present_only=True, where=[one_of_param(dialect, ps.person_id, "state_ids")]
        )
        statement = _STATEMENTS[key] = select(latest)
    return statement
