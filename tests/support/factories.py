"""Persons, files and events for tests: a flux file ingested, one nouvel entrant waiting for orientation,
a generated département with its orientations in the last complete week; and every stored row, to compare
before and after."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from app.clock import today
from app.db import AUDIT_TABLES, get_engine, session_scope
from app.exports.weekly import Week
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, Person
from app.models.base import Base
from app.orientation.episodes import refresh_pending
from app.orientation.service import EventIn, record_event
from tests.support.fluxbuilder import NIR_A, foyer, person, write_flux

D1 = date(2024, 3, 1)


def ingest(settings, path: Path, received_on: date = D1, **kw):
    return ingest_file(get_engine(settings), settings, path, IngestOptions(received_on=received_on, **kw))


def ingest_generated(settings, out: Path, departement: str | None = None) -> None:
    """Apply every file a generated run wrote into `out`, in its manifest's order, as received. A daily file
    with no foyer (a quiet day) names no département: `departement` gives it, as the operator would."""
    for entry in json.loads((out / "manifest.json").read_text()):
        options = IngestOptions(
            date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"], departement=departement
        )
        assert ingest_file(get_engine(settings), settings, out / entry["file"], options).status == "applied"


def snapshot(settings) -> dict[str, list[tuple]]:
    """Every row of every table but the logs of attempts: flux_files, and the audit trail (every file is an
    audit event, applied or rejected: tests/audit/test_audit_chain.py)."""
    engine = get_engine(settings)
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in ("flux_files", *AUDIT_TABLES):
                continue
            out[table.name] = sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
    return out


def nouvel_entrant(db, tmp_path, days_ago: int = 20):
    """One nouvel entrant (NIR_A) received `days_ago` days ago; returns its id and T0."""
    t0 = today(db) - timedelta(days=days_ago)
    ingest(db, write_flux(tmp_path, [foyer(person(NIR_A))], day=t0), received_on=t0)
    refresh_pending(get_engine(db))
    with session_scope(db) as s:
        ep = s.scalar(select(EntryEpisode))
        assert ep is not None
        return ep.person_id, t0


def weekly_departement(settings, tmp_path, foyers=120):
    """A generated flux with its instruction files, and orientations dated in the last complete week."""
    day = today(settings)
    week = Week.last_complete(day)
    out = tmp_path / "flux"
    generate(out, foyers, 20, week.monday - timedelta(days=18), seed=21, instruction=True)
    engine = get_engine(settings)
    for entry in json.loads((out / "manifest.json").read_text()):
        options = IngestOptions(
            received_on=date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"]
        )
        assert ingest_file(engine, settings, out / entry["file"], options, refresh=False).status == "applied"
    refresh_pending(engine)
    with session_scope(settings, write=True) as session:
        episodes = session.execute(
            select(EntryEpisode.person_id, EntryEpisode.t0).order_by(EntryEpisode.person_id)
        ).all()
        for n, (pid, t0) in enumerate(episodes):
            when = max(t0, week.monday) + timedelta(days=n % 5)
            if when > week.sunday or n % 4 == 3:
                continue
            event = {"type": "orientation", "date": when, "organisme": "FRANCE_TRAVAIL",
                     "type_parcours": ("professionnel", "social", "socio-professionnel")[n % 3],
                     "structure": "Agence FT Verdun", "external_id": f"w-{pid}"}  # fmt: skip
            record_event(session, settings, session.get(Person, pid), EventIn.model_validate(event), recorded_by="t")
    return week
