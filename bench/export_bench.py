"""Weekly files benchmark (issue #13): build both files of a département of ~50,000 persons with about
three years of facts (from March 2024, the generated files' date, to the last complete week), on SQLite or
PostgreSQL, and report the time and the process's peak memory growth.

    .venv/bin/python -m bench.export_bench [--foyers 21700] [--db postgres]

The département is the load benchmark's (a stock of ~2.3 persons per foyer, a daily file, the next monthly
file), to which three years of facts are added in bulk, the way the service would have stored them:
  - two more states per person spread over the three years (a move, a change of situation);
  - an entry episode for ~90 % of persons, T0 spread over the three years, 80 % oriented 2-40 days later;
  - the platform's events for each (an invitation, an orientation for the oriented ones).
Then `build()` of the last complete week (the flux file: the week's orientations; the pilotage file:
every nouvel entrant and the stock), timed, twice (the second must give the same bytes).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from bench.common import fresh_pg_schema, fresh_sqlite
from bench.load_bench import PG_BASE, make_files

OUT = Path(__file__).parent / "out"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(kind: str, foyers: int, week_sunday: date):  # type: ignore[no-untyped-def]
    from app import migrate
    from app.db import get_engine
    from app.flux.loader import IngestOptions, ingest_file
    from app.models import EntryEpisode, OrientationEvent, Person, PersonState
    from app.settings import Settings

    files = make_files(foyers)
    data_dir = OUT / f"export-data-{kind}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    url = fresh_sqlite(data_dir / "x.db") if kind == "sqlite" else fresh_pg_schema(PG_BASE, "bench_export")
    settings = Settings(env="dev", data_dir=data_dir, database_url=url, log_level="WARNING")
    migrate.upgrade(settings)
    engine = get_engine(settings)
    start = date(2024, 3, 1)  # the generated files' date; the facts then run to the exported week
    span = (week_sunday - start).days
    for name, day, initial in (("stock", start, True), ("daily", start + timedelta(days=3), False)):
        report = ingest_file(engine, settings, files[name], IngestOptions(received_on=day, initial_stock=initial))
        assert report.status == "applied", report.error
    rng = random.Random(5)
    with engine.begin() as conn:
        ids = list(conn.execute(select(Person.id).order_by(Person.id)).scalars())
        ps = PersonState.__table__
        base = {r.person_id: r for r in conn.execute(select(ps).where(ps.c.received_on == start))}
        extra = []
        for row in base.values():
            for n, offset in enumerate(sorted(rng.sample(range(30, span), 2))):
                values = dict(row._mapping)
                values.pop("id")
                day = start + timedelta(days=offset)
                values |= {"received_on": day, "file_created_at": datetime(day.year, day.month, day.day, tzinfo=UTC),
                           "seq": n, "numcom": "55545" if n else values["numcom"]}  # fmt: skip
                extra.append(values)
        for i in range(0, len(extra), 20_000):
            conn.execute(insert(ps), extra[i : i + 20_000])
        conn.execute(text("DELETE FROM entry_episodes"))
        episodes, events = [], []
        for pid in ids:
            if rng.random() > 0.9:
                continue
            t0 = start + timedelta(days=rng.randrange(span - 5))
            oriented = rng.random() < 0.8
            end = t0 + timedelta(days=rng.randint(2, 40)) if oriented else None
            episodes.append({
                "person_id": pid, "departement_code": "055", "rank": 1, "t0": t0, "t0_file_id": 2,
                "outcome": "oriente" if oriented else "en_attente", "end_on": end,
                "open_until": end or date(9999, 12, 31), "delay_days": (end - t0).days if end else None,
                "within_15_days": bool(end and (end - t0).days <= 14), "within_one_month": bool(end),
                "organisme": "FRANCE_TRAVAIL" if oriented else None,
                "type_parcours": rng.choice(["social", "professionnel", "socio-professionnel"]) if oriented else None,
                "structure": "Agence FT Verdun" if oriented else None, "rdv_orientation_absent": False,
                "invitation_on": t0 + timedelta(days=1), "caf_msa": "CAF", "commune": "55545", "criteria": {},
            })  # fmt: skip
            events.append({"person_id": pid, "departement_code": "055", "type": "invitation",
                           "event_date": t0 + timedelta(days=1), "organisme": None, "type_parcours": None,
                           "structure": None, "source": "api", "recorded_by": "bench"})  # fmt: skip
            if end:
                events.append({"person_id": pid, "departement_code": "055", "type": "orientation", "event_date": end,
                               "organisme": "FRANCE_TRAVAIL", "type_parcours": "professionnel",
                               "structure": "Agence FT Verdun", "source": "api", "recorded_by": "bench"})  # fmt: skip
        for rows, model in ((episodes, EntryEpisode), (events, OrientationEvent)):
            for i in range(0, len(rows), 20_000):
                conn.execute(insert(model), rows[i : i + 20_000])
    counts = {"persons": len(ids), "states": len(base) + len(extra), "episodes": len(episodes), "events": len(events)}
    return settings, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--foyers", type=int, default=37_000, help="~1.36 persons (DEM/CJT) each")
    args = parser.parse_args()

    from app.db import get_engine
    from app.exports.publish import build
    from app.exports.weekly import Week
    from app.logging import configure_logging

    configure_logging("WARNING", False)
    week = Week.last_complete(date.today())
    t = time.monotonic()
    settings, counts = prepare(args.db, args.foyers, week.sunday)
    print(f"setup in {time.monotonic() - t:.0f} s: {counts}", flush=True)
    before = peak_mb()
    runs = []
    for _ in range(2):
        t = time.monotonic()
        built = build(get_engine(settings), settings, "055", week)
        runs.append((time.monotonic() - t, built))
    for seconds, built in runs:
        files = ", ".join(f"{f.kind} {f.rows} rows {f.size / 1e6:.1f} MB" for f in built)
        print(f"build of {week.label}: {seconds:.2f} s ({files})")
    same = [f.sha256 for f in runs[0][1]] == [f.sha256 for f in runs[1][1]]
    tracemalloc.start()  # a third build, traced: the Python memory it holds at its peak
    build(get_engine(settings), settings, "055", week)
    traced_peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    print(
        f"same bytes twice: {same}; Python memory at the build's peak {traced_peak:.0f} MB (traced); "
        f"process peak RSS {peak_mb():.0f} MB (before the builds {before:.0f} MB, the setup included)"
    )
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, db {args.db}")


if __name__ == "__main__":
    main()
