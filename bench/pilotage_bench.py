"""Benchmark of the annex-4 indicator and the worklist (issue 4). One command:

    .venv/bin/python -m bench.pilotage_bench [--persons 50000] [--years 3] [--sqlite]

Builds (once per run, files cached under bench/out/) a département of ~N persons with Y years of daily
CAF files, ingests them into a fresh PostgreSQL schema (or SQLite with --sqlite), records orientations
for most nouveaux entrants, then times the indicator (several periods, 5 runs each) and the worklist
over HTTP through the real app (200 requests with varied filters and pages): median and p95.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

from app import migrate
from app.admin.clients import create_client
from app.clock import today
from app.db import get_engine, session_scope
from app.flux.generator import generate
from app.flux.loader import IngestOptions, ingest_file
from app.models import EntryEpisode, OrientationEvent, Person
from app.orientation.episodes import refresh_pending
from app.pilotage.indicator import orientation_indicator
from app.settings import Settings
from bench.common import fresh_pg_schema, fresh_sqlite

OUT = Path(__file__).parent / "out"


def build(persons: int, years: int, day: date) -> Path:
    directory = OUT / f"pilotage-{persons}-{years}y"
    if (directory / "manifest.json").exists():
        return directory
    days = years * 365
    start = day - timedelta(days=days + 5)
    generate(directory, int(persons / 2.3), days, start, seed=50, monthly=False)
    return directory


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    url = fresh_sqlite(OUT / "pilotage.db") if args.sqlite else fresh_pg_schema(args.pg_url, "bench_pilotage")
    os.environ["PASSERELLE_LOG_LEVEL"] = "WARNING"
    settings = Settings(env="test", database_url=url, data_dir=OUT / "data", log_level="WARNING")
    t = time.perf_counter()
    directory = build(args.persons, args.years, today(settings))
    manifest = json.loads((directory / "manifest.json").read_text())
    print(f"{len(manifest)} files in {directory} ({time.perf_counter() - t:.0f} s to generate)")
    migrate.upgrade(settings)
    engine = get_engine(settings)

    t = time.perf_counter()
    for entry in manifest:
        report = ingest_file(
            engine,
            settings,
            directory / entry["file"],
            IngestOptions(date.fromisoformat(entry["received_on"]), initial_stock=entry["initial_stock"]),
            refresh=False,
        )
        assert report.status == "applied", report.error
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    refresh_pending(engine)
    refresh_s = time.perf_counter() - t

    # the platform orients ~80 % of nouveaux entrants, with realistic delays (inserted in bulk)
    rng = random.Random(3)
    day = today(settings)
    with engine.connect() as conn:
        episodes = conn.execute(
            select(EntryEpisode.person_id, EntryEpisode.t0, EntryEpisode.departement_code).order_by(
                EntryEpisode.person_id, EntryEpisode.t0
            )
        ).all()
    rows = []
    for person_id, t0, dep in episodes:
        when = t0 + timedelta(days=rng.choice([3, 6, 9, 12, 14, 17, 22, 35]))
        if rng.random() < 0.8 and when <= day:
            rows.append(
                {
                    "person_id": person_id,
                    "departement_code": dep,
                    "type": "orientation",
                    "event_date": when,
                    "organisme": rng.choice(["FRANCE_TRAVAIL", "DEPARTEMENT", "CCAS"]),
                    "type_parcours": rng.choice(["social", "socio-professionnel", "professionnel"]),
                    "accompagnement_global": rng.random() < 0.1,
                    "source": "import",
                }
            )
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(OrientationEvent.__table__), rows[i : i + 5000])
        conn.execute(
            text("INSERT INTO episode_queue (person_id, departement_code) SELECT id, departement_code FROM persons")
        )
    t = time.perf_counter()
    refresh_pending(engine)
    refresh_all_s = time.perf_counter() - t
    with engine.connect() as conn:
        n_persons = conn.execute(select(text("count(*)")).select_from(Person.__table__)).scalar()
        n_states = conn.execute(text("SELECT count(*) FROM person_states")).scalar()
        n_episodes = conn.execute(text("SELECT count(*) FROM entry_episodes")).scalar()
    print(f"ingested in {ingest_s:.0f} s; episodes {refresh_s:.0f} s, recomputed all in {refresh_all_s:.0f} s")
    print(f"{n_persons} persons, {n_states} person states, {n_episodes} entry episodes, {len(rows)} orientations")

    first_day = date.fromisoformat(manifest[0]["received_on"])
    periods = {
        "3 years": (first_day, day),
        "last year": (day - timedelta(days=365), day),
        "last month": (day - timedelta(days=30), day),
    }
    print("\n| query | runs | median ms | max ms | nouveaux_entrants |")
    print("|---|---|---|---|---|")
    for name, (start, end) in periods.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            with engine.connect() as conn:
                result = orientation_indicator(conn, ["055"], start, end, day)
            times.append((time.perf_counter() - t) * 1000)
        print(
            f"| indicator, {name} | 5 | {statistics.median(times):.0f} | {max(times):.0f} | "
            f"{result['nouveaux_entrants']} |"
        )

    from app.main import create_app

    with session_scope(settings) as session:
        key = create_client(
            session, settings, name="bench", departements=["055"], scopes=["persons:read", "pilotage:read"]
        ).key
    filters = ["", "overdue=true", "overdue=false", "organisme=CAF", "organisme=MSA", "commune=55545"]
    with TestClient(create_app(settings)) as client:
        times = []
        for i in range(200):
            params = f"{filters[i % len(filters)]}&limit=50&offset={(i % 4) * 50}"
            t = time.perf_counter()
            r = client.get(f"/api/v1/worklist?{params}", headers={"X-API-Key": key})
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        total = r.json()["total"]
        print(
            f"| worklist over HTTP (50 per page) | 200 | {statistics.median(times):.0f} | p95 {p95(times):.0f} | "
            f"{total} waiting |"
        )
        times = []
        for _ in range(10):
            t = time.perf_counter()
            r = client.get(
                "/api/v1/pilotage/orientation",
                headers={"X-API-Key": key},
                params={"from": periods["last year"][0].isoformat(), "to": day.isoformat()},
            )
            times.append((time.perf_counter() - t) * 1000)
        print(
            f"| indicator over HTTP, last year | 10 | {statistics.median(times):.0f} | {max(times):.0f} | "
            f"{r.json()['nouveaux_entrants']} |"
        )


if __name__ == "__main__":
    main()
