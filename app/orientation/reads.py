"""A person's orientation side as seen on a day: their entry episodes (computed from the facts now, or as
stored) and their orientation-side events. Read by the HTTP shell (`app.api.orientation`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import EntryEpisode, OrientationEvent
from app.orientation.episodes import compute_for, episode_rows
from app.rules.episodes import Decision


@dataclass(frozen=True)
class PersonEpisodesView:
    """A person's episodes entered on or before `as_of` (each an `entry_episodes` row, to be read with
    `rules.outcome_as_of`), the points where they did not become a nouvel entrant, and their events, all
    dated on or before `as_of`."""

    as_of: date
    stock: bool
    followed: bool
    episodes: list[Any]
    not_entries: list[Decision]
    events: list[OrientationEvent]


def events_until(session: Session, person_id: int, day: date | None = None) -> list[OrientationEvent]:
    """The person's orientation-side events (superseded ones included), by date; up to `day` if given."""
    query = select(OrientationEvent).where(OrientationEvent.person_id == person_id)
    if day is not None:
        query = query.where(OrientationEvent.event_date <= day)
    return list(session.scalars(query.order_by(OrientationEvent.event_date)).all())


def stored_episodes(session: Session, person_id: int) -> list[EntryEpisode]:
    """The person's stored entry episodes, by rank (as the last refresh left them)."""
    query = select(EntryEpisode).where(EntryEpisode.person_id == person_id).order_by(EntryEpisode.rank)
    return list(session.scalars(query).all())


def person_episodes(session: Session, person_id: int, as_of: date) -> PersonEpisodesView:
    """Computed from the facts now (a read: nothing is stored), so the answer is exact even while a refresh
    of stored episodes is pending after an ingestion."""
    conn = session.connection()
    result = compute_for(conn, [person_id])[person_id]
    rows = episode_rows(conn, {person_id: result})
    return PersonEpisodesView(
        as_of=as_of,
        stock=result.stock,
        followed=result.followed,
        episodes=[SimpleNamespace(**row) for row in rows if row["t0"] <= as_of],
        not_entries=[d for d in result.not_entries if d.on <= as_of],
        events=events_until(session, person_id, as_of),
    )
