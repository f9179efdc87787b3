"""A national host on one PostgreSQL (issue #27, item 5). One command:

    nice .venv/bin/python -m bench.national_bench [--departements 101] [--foyers 20000] [--days 30]
        [--target 059] [--reuse] [--measure-only] [--explain] [--rounds 2]

1. Generates (once, cached under bench/out/national-F-Dd-START/CODE/) every département's files with the
   project's generator: an initial stock (CAF and MSA) and D days of daily files. The sizes vary around
   `--foyers` (0.4 × to 1.6 ×, the target département exactly `--foyers`).
2. Ingests them through the real pipeline (`ingest_file`, as `passerelle flux ingest` does, episodes
   refreshed after each file) into the schema `bench_national`: every initial stock, then the daily files
   day by day across the départements, as a national host receives them. Each file's wall seconds are kept
   in the schema's table `bench_progress`: a run stopped halfway resumes with `--reuse`, and `--reuse`
   also keeps a finished build as it is (`--measure-only` measures without ingesting anything more).
3. Ingests the target département's same files ALONE into the schema `bench_national_alone`.
4. Measures both, alternated (`--rounds`): the worklist over HTTP through the real app (pages of 50,
   varied filters), a person read over HTTP, every pilotage table over the last year; prints median/p95
   alone, among all, and the ratio; then the distribution of the daily files' seconds. `--explain` writes
   EXPLAIN (ANALYZE, BUFFERS) of the slowest statements of each measure under bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

OUT = Path(__file__).parent / "out"
FACTORS = (0.4, 0.6, 0.8, 1.0, 1.0, 1.2, 1.4, 1.6)  # mean 1.0
PROGRESS = """CREATE TABLE IF NOT EXISTS bench_progress (
    code text, file text, seconds double precision, cpu double precision, received_on date,
    initial boolean, persons integer, PRIMARY KEY (code, file))"""


def codes_of(n: int, target: str) -> list[str]:
    from app.admin.departements import OFFICIAL_DEPARTEMENTS

    others = [c for c in sorted(OFFICIAL_DEPARTEMENTS) if c != target]
    return sorted([target, *others[: n - 1]])


CAP: dict[str, Any] = {}  # --cap-after CODE:FOYERS: the départements after CODE (not the target) smaller


def capped(code: str, target: str) -> bool:
    return bool(CAP) and code > CAP["after"] and code != target


def size_of(code: str, foyers: int, target: str) -> int:
    base = CAP["foyers"] if capped(code, target) else foyers
    return foyers if code == target else int(base * random.Random(code).choice(FACTORS))


def dir_of(root: Path, code: str, target: str) -> Path:
    return root.with_name(f"{root.name}-cap{CAP['foyers']}") / code if capped(code, target) else root / code


def generate_all(codes: list[str], foyers: int, days: int, start: date, target: str) -> Path:
    from app.flux.generator import generate

    root = OUT / f"national-{foyers}-{days}d-{start}"
    t = time.perf_counter()
    for i, code in enumerate(codes):
        directory = dir_of(root, code, target)
        if (directory / "manifest.json").exists():
            continue
        seed = int(code, 36)
        generate(directory, size_of(code, foyers, target), days, start, seed=seed, departement=code, monthly=False)
        if i % 10 == 9:
            print(f"  generated {i + 1}/{len(codes)} départements ({time.perf_counter() - t:.0f} s)", flush=True)
    return root


def settings_for(pg_url: str, schema: str, fresh: bool):  # type: ignore[no-untyped-def]
    from app.settings import Settings
    from bench.common import fresh_pg_schema

    url = fresh_pg_schema(pg_url, schema) if fresh else f"{pg_url}?options=-csearch_path%3D{schema}"
    return Settings(env="test", database_url=url, data_dir=OUT / f"data-{schema}", log_level="WARNING")


def schema_exists(pg_url: str, schema: str) -> bool:
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT 1 FROM information_schema.tables WHERE table_schema = :s AND table_name = 'bench_progress'"),
            {"s": schema},
        ).first()
    engine.dispose()
    return found is not None


def files_in_order(root: Path, codes: list[str], until: date | None, target: str) -> list[tuple[str, dict[str, Any]]]:
    """Every initial stock, then the daily files day by day (by the CAF's day), département after département;
    `until`: only the files made by that day."""
    stocks, daily = [], []
    for code in codes:
        for entry in json.loads((dir_of(root, code, target) / "manifest.json").read_text()):
            if until is None or date.fromisoformat(entry["created_on"]) <= until:
                (stocks if entry["initial_stock"] else daily).append((code, entry))
    daily.sort(key=lambda ce: (ce[1]["created_on"], ce[0], ce[1]["organisme"]))
    return stocks + daily


def build(settings, root: Path, codes: list[str], label: str, until: date | None, target: str,  # type: ignore[no-untyped-def]
          timer: StatementTimer | None = None) -> None:  # fmt: skip
    """Ingest what is not in yet. `timer`: print each file's wait for the advisory locks (ingestion, episodes)
    apart: one PostgreSQL database holds one ingestion at a time per département (whatever the schema)."""
    from app import migrate
    from app.db import get_engine
    from app.flux.loader import IngestOptions, ingest_file

    migrate.upgrade(settings)
    engine = get_engine(settings)
    with engine.begin() as conn:
        conn.execute(text(PROGRESS))
        done = {(c, f) for c, f in conn.execute(text("SELECT code, file FROM bench_progress"))}
    todo = [(c, e) for c, e in files_in_order(root, codes, until, target) if (c, e["file"]) not in done]
    print(f"[{label}] {len(done)} files already in, {len(todo)} to ingest", flush=True)
    t0, persons = time.perf_counter(), 0
    waits: list[tuple[float, float]] = []
    for i, (code, entry) in enumerate(todo, start=1):
        if timer is not None:
            timer.on, timer.label = True, f"ingest {code} {entry['file']}"
        wall, cpu = time.perf_counter(), time.process_time()
        report = ingest_file(
            engine,
            settings,
            dir_of(root, code, target) / entry["file"],
            IngestOptions(date.fromisoformat(entry["received_on"]), entry["initial_stock"], departement=code),
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        # duplicate: applied by a run stopped before it wrote its progress row (timed as -1: not counted)
        assert report.status in ("applied", "duplicate"), (code, entry["file"], report.status, report.error)
        if report.status == "duplicate":
            wall = cpu = -1.0
        if timer is not None:
            timer.on = False
            wait = sum(t for t, statement, _ in timer.seen.pop(timer.label, []) if "pg_advisory" in statement)
            waits.append((wall, wait))
        persons += report.persons_read
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO bench_progress VALUES (:c, :f, :s, :cpu, :r, :i, :p)"),
                {"c": code, "f": entry["file"], "s": wall, "cpu": cpu, "r": entry["received_on"],
                 "i": entry["initial_stock"], "p": report.persons_read},
            )  # fmt: skip
        if i % 50 == 0 or i == len(todo) or (entry["initial_stock"] and i % 5 == 0):
            spent = time.perf_counter() - t0
            print(f"[{label}] {i}/{len(todo)} files, {persons} persons read, {spent:.0f} s, "
                  f"ETA {spent / i * (len(todo) - i):.0f} s (last: {code} {entry['file']} {wall:.2f} s)",
                  flush=True)  # fmt: skip
    if waits:
        walls, work = sorted(w for w, _ in waits), sorted(w - lk for w, lk in waits)
        print(f"[{label}] {len(waits)} files timed: wall median {statistics.median(walls):.2f} s, p95 "
              f"{p95(walls):.2f}, max {walls[-1]:.2f}; without the advisory-lock waits: median "
              f"{statistics.median(work):.2f}, p95 {p95(work):.2f}, max {work[-1]:.2f}", flush=True)  # fmt: skip
    analyze(engine)


def analyze(engine: Engine) -> None:
    """The planner's statistics for this schema's tables (a bare ANALYZE would go through every schema)."""
    with engine.begin() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars()
        for table in list(tables):
            conn.execute(text(f'ANALYZE "{table}"'))


class StatementTimer:
    """The statements run while `on`, with their seconds (to EXPLAIN the slowest)."""

    def __init__(self) -> None:
        self.on = False
        self.seen: dict[str, list[Any]] = {}  # label -> [(seconds, statement, params)]
        self.label = ""
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, params, context, many) -> None:  # type: ignore[no-untyped-def]
        conn.info["bench_t"] = time.perf_counter()

    def _after(self, conn, cursor, statement, params, context, many) -> None:  # type: ignore[no-untyped-def]
        if self.on and not many:
            seconds = time.perf_counter() - conn.info.get("bench_t", time.perf_counter())
            self.seen.setdefault(self.label, []).append((seconds, statement, params))


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95 + 0.5) - 1)]


def measure(
    built: dict[str, Any], target: str, timer: StatementTimer, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Each request and each table on one schema then the other (the order swapped each time), so that the
    machine's load, shared with other work, weighs on both alike."""
    from contextlib import ExitStack

    from fastapi.testclient import TestClient

    from app.admin.clients import create_client
    from app.clock import today
    from app.db import get_engine, session_scope
    from app.main import create_app
    from app.pilotage.period import Period
    from app.pilotage.tables import TABLES, compute

    out: dict[str, dict[str, list[float]]] = {schema: defaultdict(list) for schema in built}
    sides: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        for schema, settings in built.items():
            with session_scope(settings, write=True) as s:
                key = create_client(s, settings, name=f"bench-{time.time_ns()}", departements=[target],
                                    scopes=["persons:read", "pilotage:read"]).key  # fmt: skip
            engine = get_engine(settings)
            with engine.connect() as conn:
                ids = list(conn.execute(text(
                    "SELECT id FROM persons WHERE departement_code = :d ORDER BY nir_hash NULLS LAST, id LIMIT 60"),
                    {"d": target}).scalars())  # fmt: skip
            client = stack.enter_context(TestClient(create_app(settings)))
            headers = {"X-API-Key": key}
            client.get("/api/v1/worklist?limit=50", headers=headers)  # warm the app
            sides[schema] = {"client": client, "headers": headers, "ids": ids, "engine": engine,
                             "day": today(settings)}  # fmt: skip

        def each(i: int):  # type: ignore[no-untyped-def]
            order = list(sides.items())
            return order if i % 2 == 0 else order[::-1]

        def timed(schema: str, label: str, name: str, call, *args, **kw) -> Any:  # type: ignore[no-untyped-def]
            timer.label = f"{schema}:{label}"
            t = time.perf_counter()
            result = call(*args, **kw)
            out[schema][name].append(time.perf_counter() - t)
            return result

        filters = ["", "overdue=true", "overdue=false", "organisme=CAF", "organisme=MSA", "sort=legal_deadline"]
        timer.on = True
        for i in range(120 * rounds):
            params = f"{filters[i % len(filters)]}&limit=50&offset={(i // len(filters) % 4) * 50}"
            for schema, side in each(i):
                get = side["client"].get
                r = timed(schema, "worklist", "worklist page (HTTP)", get, f"/api/v1/worklist?{params}",
                          headers=side["headers"])  # fmt: skip
                assert r.status_code == 200, r.text
        for i in range(60 * rounds):
            for schema, side in each(i):
                pid = side["ids"][i % len(side["ids"])]
                get = side["client"].get
                r = timed(schema, "person", "person read (HTTP)", get, f"/api/v1/persons/{pid}",
                          headers=side["headers"])  # fmt: skip
                assert r.status_code == 200, r.text
        for name in TABLES:
            for i in range(3 * rounds):
                for schema, side in each(i):
                    day = side["day"]
                    year = Period.parse(None, day - timedelta(days=365), day)
                    with side["engine"].connect() as conn:
                        timed(schema, f"table {name}", f"table {name} (year)", compute, conn, name, [target],
                              year, day)  # fmt: skip
        timer.on = False
    return out


def explain(settings, timer: StatementTimer, prefix: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db import get_engine

    engine = get_engine(settings)
    with path.open("w") as f:
        for label, rows in sorted(timer.seen.items()):
            if not label.startswith(prefix):
                continue
            slowest: dict[str, Any] = {}
            for seconds, statement, params in rows:
                if statement.lstrip().upper().startswith("SELECT") and seconds > slowest.get(statement, (0,))[0]:
                    slowest[statement] = (seconds, params)
            for statement, (seconds, params) in sorted(slowest.items(), key=lambda kv: -kv[1][0])[:3]:
                with engine.connect() as conn:
                    raw = conn.connection.dbapi_connection
                    assert raw is not None
                    with raw.cursor() as cur:
                        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
                        plan = "\n".join(r[0] for r in cur.fetchall())
                    conn.rollback()
                plan = "\n".join(line[:300] for line in plan.splitlines())
                f.write(f"=== {label}: {seconds * 1000:.1f} ms\n{statement}\n{str(params)[:400]}\n{plan}\n\n")
    print(f"plans of the slowest statements in {path}", flush=True)


def sizes(settings) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from app.db import get_engine

    with get_engine(settings).connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
        rows = conn.execute(text(
            "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r' "
            "ORDER BY 3 DESC"), {"s": schema}).all()  # fmt: skip
        db = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    total = sum(r[2] for r in rows)
    return {"schema_bytes": total, "database_bytes": db, "tables": [(r[0], r[1], r[2]) for r in rows[:8]]}


def daily_distribution(settings, label: str) -> None:  # type: ignore[no-untyped-def]
    from app.db import get_engine

    with get_engine(settings).connect() as conn:
        rows = conn.execute(
            text("SELECT received_on, seconds, cpu, persons FROM bench_progress WHERE NOT initial AND seconds >= 0")
        ).all()
        stocks = conn.execute(
            text("SELECT sum(seconds), sum(cpu), sum(persons) FROM bench_progress WHERE initial AND seconds >= 0")
        ).one()
    if not rows:
        return
    secs = sorted(r[1] for r in rows)
    last = max(r[0] for r in rows)
    last_secs = sorted(r[1] for r in rows if r[0] >= last - timedelta(days=6))
    print(f"[{label}] initial stocks: {stocks[2]} persons in {stocks[0]:.0f} s wall ({stocks[1]:.0f} s CPU of this "
          f"process), {stocks[2] / stocks[0]:,.0f} persons/s")  # fmt: skip
    print(f"[{label}] daily files: {len(secs)}, {sum(r[3] for r in rows)} persons, {sum(secs):.0f} s; seconds "
          f"median {statistics.median(secs):.2f}, p95 {p95(secs):.2f}, max {secs[-1]:.2f}; > 2 s: "
          f"{sum(s > 2 for s in secs)}; last 7 days ({len(last_secs)} files): median "
          f"{statistics.median(last_secs):.2f}, p95 {p95(last_secs):.2f}, max {last_secs[-1]:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--departements", type=int, default=101)
    parser.add_argument("--foyers", type=int, default=20_000, help="per département on average")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--target", default="059")
    parser.add_argument("--start", help="first day of the files (default: today - days - 1; cached by it)")
    parser.add_argument("--reuse", action="store_true", help="keep the schemas already built (resume them)")
    parser.add_argument("--measure-only", action="store_true", help="with --reuse: ingest nothing more")
    parser.add_argument("--until", type=date.fromisoformat, help="ingest only the files made by that day")
    parser.add_argument("--rebuild-alone", action="store_true", help="with --reuse: the target alone afresh")
    parser.add_argument("--cap-after", help="CODE:FOYERS: the départements after CODE (not the target) smaller")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--then-until", type=date.fromisoformat,
                        help="after measuring: ingest the files up to that day into the big schema")  # fmt: skip
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--schema", default="bench_national")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    os.environ["PASSERELLE_LOG_LEVEL"] = "WARNING"
    from app.db import get_engine
    from app.logging import configure_logging

    configure_logging("WARNING", False)
    start = date.fromisoformat(args.start) if args.start else date.today() - timedelta(days=args.days + 1)
    codes = codes_of(args.departements, args.target)
    if args.cap_after:
        after, cap = args.cap_after.split(":")
        CAP.update(after=after, foyers=int(cap))
    t = time.perf_counter()
    root = generate_all(codes, args.foyers, args.days, start, args.target)
    foyers = sum(size_of(c, args.foyers, args.target) for c in codes)
    print(f"{len(codes)} départements, {foyers} foyers at start, {args.days} days from {start}: files in {root} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    if args.generate_only:
        return

    alone_schema = f"{args.schema}_alone"
    built = {}
    for schema, chosen in ((alone_schema, [args.target]), (args.schema, codes)):
        keep = args.reuse and schema_exists(args.pg_url, schema) and not (args.rebuild_alone and schema == alone_schema)
        settings = settings_for(args.pg_url, schema, fresh=not keep)
        if not args.measure_only or not keep:
            t = time.perf_counter()
            build(settings, root, chosen, schema, args.until, args.target)
            print(f"[{schema}] built in {time.perf_counter() - t:.0f} s", flush=True)
        built[schema] = settings
    for schema, settings in built.items():
        daily_distribution(settings, schema)
        info = sizes(settings)
        with get_engine(settings).connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM persons")).scalar()
            nt = conn.execute(
                text("SELECT count(*) FROM persons WHERE departement_code = :d"), {"d": args.target}
            ).scalar()
        print(f"[{schema}] {n} persons ({nt} in {args.target}); schema {info['schema_bytes'] / 1e9:.2f} GB, database "
              f"{info['database_bytes'] / 1e9:.2f} GB; largest: "
              + ", ".join(f"{r[0]} {r[1]} rows {r[2] / 1e6:.0f} MB" for r in info["tables"]), flush=True)  # fmt: skip

    timer = StatementTimer()
    results = measure(built, args.target, timer, args.rounds)
    print(f"\n{args.target}: alone ({alone_schema}) vs among {len(codes)} ({args.schema}); each request or table "
          "on one then the other, alternated; ms")  # fmt: skip
    print("| measure | n | alone median | alone p95 | among all median | among all p95 | ratio of medians |")
    print("|---|---|---|---|---|---|---|")
    for k, alone in results[alone_schema].items():
        among = results[args.schema][k]
        a, b = statistics.median(alone) * 1000, statistics.median(among) * 1000
        print(f"| {k} | {len(alone)} | {a:.1f} | {p95(alone) * 1000:.1f} | {b:.1f} | {p95(among) * 1000:.1f} | "
              f"{b / a:.2f} |")  # fmt: skip
    if args.explain:
        for schema, settings in built.items():
            explain(settings, timer, schema + ":", OUT / f"explain-{schema}.txt")
    if args.then_until:
        build(built[args.schema], root, codes, args.schema, args.then_until, args.target, timer)
        daily_distribution(built[args.schema], args.schema)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
