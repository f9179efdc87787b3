"""Pilotage tables, extract and dashboard benchmark (issue #15), on SQLite or PostgreSQL.

    .venv/bin/python -m bench.pilotage_tables_bench [--db postgres] [--extract-rows 500000]

The département is the weekly files benchmark's (bench/export_bench.py: ~50,000 persons, three states each
over the 2.7 years since March 2024, ~45,000 entry episodes, the platform's events), to which are added:
  - three years of daily beneficiary files received (CAF every working day, MSA twice a week);
  - a France Travail statut for 60 % of the oriented;
  - more entry episodes (later ranks of the same persons) until the extract has `--extract-rows` lines.
Then, timed: every table for the last complete month and for the whole three years (all breakdowns); the
pseudonymised extract streamed to nowhere (rows per second, peak Python memory traced); the dashboard's
first render through the app (a fresh app, its first request).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, insert, select

from bench.export_bench import prepare


def enrich(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from app.db import get_engine
    from app.models import EntryEpisode, FluxFile, FtSnapshot

    engine = get_engine(settings)
    rng = random.Random(15)
    start, today = date(2024, 3, 1), date.today()
    with engine.begin() as conn:
        files = []
        day = start
        while day <= today:
            for fonorg in ("CAF", "MSA"):
                if (fonorg == "CAF" and day.weekday() < 5) or (fonorg == "MSA" and day.weekday() in (1, 3)):
                    files.append({"departement_code": "055", "filename": f"{fonorg}_{day}.xml", "size_bytes": 1000,
                                  "file_sha256": f"{fonorg}{day}".ljust(64, "0"), "status": "applied",
                                  "fonorg": fonorg, "type_flux": "I", "nature": "D", "received_on": day,
                                  "report": {}})  # fmt: skip
            day += timedelta(days=1)
        conn.execute(insert(FluxFile), files)
        ee = EntryEpisode.__table__.c
        oriented = list(conn.execute(select(ee.person_id, ee.end_on).where(ee.outcome == "oriente")))
        snaps = [{"person_id": pid, "departement_code": "055", "kind": "statut",
                  "fetched_at": datetime.combine(end, datetime.min.time(), UTC) + timedelta(days=3),
                  "data": {"statutDE": rng.choice(["Inscrit", "Identifié", "Cessé", "Radié"])}, "fingerprint": "b"}
                 for pid, end in oriented if rng.random() < 0.6]  # fmt: skip
        for i in range(0, len(snaps), 20_000):
            conn.execute(insert(FtSnapshot), snaps[i : i + 20_000])
    analyze(settings)
    return {"flux_files": len(files), "ft_snapshots": len(snaps)}


def analyze(settings) -> None:  # type: ignore[no-untyped-def]
    """Statistics for the planner, as autovacuum (PostgreSQL) or `PRAGMA optimize` would have them after a bulk
    load: without them PostgreSQL believes each table holds one row."""
    from sqlalchemy import text

    from app.db import get_engine

    with get_engine(settings).begin() as conn:
        conn.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--foyers", type=int, default=37_000)
    parser.add_argument("--extract-rows", type=int, default=500_000)
    args = parser.parse_args()

    from app.db import get_engine
    from app.exports.weekly import Week
    from app.logging import configure_logging
    from app.pilotage import extract
    from app.pilotage.tables import TABLES, Period, compute

    configure_logging("WARNING", False)
    t = time.monotonic()
    settings, counts = prepare(args.db, args.foyers, Week.last_complete(date.today()).sunday)
    counts |= enrich(settings)
    print(f"setup in {time.monotonic() - t:.0f} s: {counts}", flush=True)
    engine = get_engine(settings)
    today = date.today()
    last_month = Period.parse((today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m"))
    three_years = Period.parse(None, date(2024, 3, 1), today)
    for period in (last_month, three_years):
        for name in TABLES:
            with engine.connect() as conn:
                t = time.perf_counter()
                table = compute(conn, name, ["055"], period, today)
                seconds = time.perf_counter() - t
            print(f"table {name:<22} {period.label:<22} {seconds:6.2f} s  ({len(table.figures)} figures)", flush=True)

    from fastapi.testclient import TestClient

    from app.admin.clients import create_client
    from app.db import session_scope
    from app.main import create_app

    with session_scope(settings, write=True) as s:
        key = create_client(s, settings, name=f"bench-{time.time_ns()}", departements=["055"],
                            scopes=["pilotage:read"]).key  # fmt: skip
    with TestClient(create_app(settings)) as c:
        t = time.perf_counter()
        page = c.get("/tableau-de-bord", headers={"X-API-Key": key})
        first = time.perf_counter() - t
        t = time.perf_counter()
        c.get("/tableau-de-bord", headers={"X-API-Key": key})
        second = time.perf_counter() - t
    print(f"dashboard: first render {first:.2f} s, next {second:.2f} s (HTTP {page.status_code}, "
          f"{len(page.content) / 1000:.0f} kB)", flush=True)  # fmt: skip

    counts |= enrich_more(settings, args.extract_rows)
    key_bytes = settings.extract_key_bytes

    def stream(limit: int | None = None) -> tuple[int, int, float]:
        t = time.perf_counter()
        n, size = 0, 0
        with engine.connect() as conn:
            for chunk in extract.as_csv(extract.rows(conn, key_bytes, ["055"], three_years, today)):
                size += len(chunk)
                n += chunk.count(b"\r\n")
                if limit and n > limit:
                    break
        return n - 1, size, time.perf_counter() - t

    n, size, seconds = stream()  # untraced: tracemalloc slows every allocation several times
    print(f"extract: {n} rows, {size / 1e6:.0f} MB of CSV in {seconds:.1f} s = {n / seconds:,.0f} rows/s", flush=True)
    for limit in (50_000, None):  # the same stream traced: memory at its peak, for a tenth and for all of it
        tracemalloc.start()
        traced_n, _size, _s = stream(limit)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(f"extract traced over {traced_n} rows: Python memory at peak {peak:.0f} MB", flush=True)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, db {args.db}")


def enrich_more(settings, rows: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """More entry episodes (later ranks of the same persons), for the extract only: after the tables and the
    dashboard were timed on the département as it is."""
    from app.db import get_engine
    from app.models import EntryEpisode

    engine = get_engine(settings)
    with engine.begin() as conn:
        have = conn.execute(select(func.count()).select_from(EntryEpisode)).scalar() or 0
        base = [dict(r._mapping) for r in conn.execute(select(EntryEpisode.__table__).limit(50_000))]
        more: list[dict] = []
        rank = 2
        while base and have + len(more) < rows:
            for row in base:
                if have + len(more) >= rows:
                    break
                more.append({k: v for k, v in row.items() if k != "id"} | {"rank": rank})
            rank += 1
        for i in range(0, len(more), 20_000):
            conn.execute(insert(EntryEpisode), more[i : i + 20_000])
    analyze(settings)
    return {"extract_episodes_added": len(more)}


if __name__ == "__main__":
    main()
