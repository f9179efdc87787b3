"""What must not depend on the order flux files arrive in: a snapshot of the stored facts, the episodes
and the indicator, keyed by what identifies a person whatever the order (never the ids, which are given
in order of creation). Used by tests/flux/test_order_independence.py and bench/order_check.py."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import func, select

from app.db import get_engine
from app.flux.derive import STATE_COLUMNS
from app.flux.generator import GeneratedFile
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, FluxFile, OrientationEvent, PendingEvent, Person, PersonKey, PersonState
from app.orientation.episodes import refresh_pending
from app.persons.order import state_order
from app.pilotage.indicator import orientation_indicator
from app.settings import Settings

EPISODE_FIELDS = (
    "t0",
    "outcome",
    "end_on",
    "left_on",
    "oriented_by",
    "delay_days",
    "within_15_days",
    "within_one_month",
    "caf_msa",
    "commune",
)


@dataclass
class Snapshot:
    persons: dict[tuple[Any, ...], dict[str, Any]]  # identity -> what is stored of them
    facts: dict[tuple[Any, ...], list[tuple[Any, ...]]]
    episodes: dict[tuple[Any, ...], list[tuple[Any, ...]]]
    indicator: dict[str, Any]
    # orientation events (what they say, not their ids), and how many still wait for their person
    events: dict[tuple[Any, ...], list[tuple[Any, ...]]] = field(default_factory=dict)
    waiting: int = 0

    def differences(self, other: Snapshot, limit: int = 3) -> list[str]:
        """What differs, per kind: how many persons, and the first `limit` of them."""
        out: list[str] = []
        for name in ("persons", "facts", "episodes", "events"):
            mine, theirs = getattr(self, name), getattr(other, name)
            keys = [k for k in sorted(mine.keys() | theirs.keys(), key=repr) if mine.get(k) != theirs.get(k)]
            if keys:
                out.append(f"{name} of {len(keys)} person(s) differ")
            for key in keys[:limit]:
                out.append(f"  {name} of {key}:\n    {mine.get(key)}\n    {theirs.get(key)}")
        if self.indicator != other.indicator:
            keys = [k for k in self.indicator if self.indicator[k] != other.indicator.get(k)]
            out.append(f"indicator differs on {keys}")
        if self.waiting != other.waiting:
            out.append(f"events waiting for their person: {self.waiting} / {other.waiting}")
        return out


def orders(files: Sequence[GeneratedFile], seed: int = 7) -> dict[str, list[GeneratedFile]]:
    """The initial stock first (it is the first load by definition), then the other files in reception
    order, newest first, and shuffled."""
    stock = [f for f in files if f.initial_stock]
    rest = [f for f in files if not f.initial_stock]
    shuffled = rest[:]
    random.Random(seed).shuffle(shuffled)
    return {
        "reception": stock + rest,
        "newest_first": stock + sorted(rest, key=lambda f: (f.received_on, f.created_on), reverse=True),
        "shuffled": stock + shuffled,
    }


def ingest_all(
    settings: Settings, files: Sequence[GeneratedFile], progress: Callable[[str], None] | None = None
) -> None:
    engine = get_engine(settings)
    for f in files:
        report = ingest_file(
            engine,
            settings,
            f.path,
            IngestOptions(received_on=f.received_on, initial_stock=f.initial_stock),
            refresh=False,
        )
        assert report.status == "applied", (f.path.name, report.to_dict())
        if progress:
            progress(f.path.name)
    refresh_pending(engine)


def snapshot(settings: Settings, departement: str, start: date, end: date, as_of: date) -> Snapshot:
    engine = get_engine(settings)
    with engine.connect() as conn:
        keys: dict[int, list[str]] = {}
        for pid, value in conn.execute(select(PersonKey.person_id, PersonKey.value)):
            keys.setdefault(pid, []).append(value)
        ident: dict[int, tuple[Any, ...]] = {}
        persons: dict[tuple[Any, ...], dict[str, Any]] = {}
        for p in conn.execute(select(Person.__table__)).mappings():
            identity = (p["nir_hash"], tuple(sorted(keys.get(p["id"], []))), p["date_naissance"])
            assert identity not in persons, f"two persons with identity {identity}"
            ident[p["id"]] = identity
            persons[identity] = {
                "nom": p["nom"],
                "prenom": p["prenom"],
                "nomnai": p["nomnai"],
                "sexe": p["sexe"],
                "stock": p["stock"],
                "first_received_on": p["first_received_on"],
            }
        names = dict(conn.execute(select(FluxFile.id, FluxFile.filename)).all())
        ps = PersonState.__table__.c
        facts: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in conn.execute(
            select(ps.person_id, ps.file_id, ps.received_on, *[ps[c] for c in STATE_COLUMNS]).order_by(
                ps.person_id, *state_order(ps)
            )
        ):
            facts.setdefault(ident[row[0]], []).append((names[row[1]], *row[2:]))
        ee = EntryEpisode.__table__.c
        episodes: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in conn.execute(select(ee.person_id, *[ee[c] for c in EPISODE_FIELDS]).order_by(ee.person_id, ee.rank)):
            episodes.setdefault(ident[row[0]], []).append(tuple(row[1:]))
        indicator = orientation_indicator(conn, [departement], start, end, as_of)
        oe = OrientationEvent.__table__.c
        events: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in conn.execute(
            select(oe.person_id, oe.type, oe.event_date, oe.external_id, oe.organisme, oe.structure, oe.presence)
        ):
            events.setdefault(ident[row[0]], []).append(tuple(row[1:]))
        events = {k: sorted(v, key=repr) for k, v in events.items()}
        pe = PendingEvent.__table__.c
        waiting = conn.execute(select(func.count()).where(pe.status == "pending")).scalar_one()
    return Snapshot(persons, facts, episodes, indicator, events, int(waiting))
