"""France Travail sync benchmark (issue #12): `ft sync` of N persons against the fake France Travail (a
separate process) answering in L ms, with C calls in flight, then the same under faults.

    .venv/bin/python -m bench.ft_bench --persons 10000 --latency-ms 200 --concurrency 32 [--db postgres]

Ideal throughput of the configured concurrency: C / L calls per second (each call holds a slot for L). The
run reports the calls per second reached and its share of that ideal, the process's resident memory
sampled every second (flat: it does not grow with the persons), then a second run (new sync of the same
persons, jetons reused) under 10 % 503 and 5 % 429 with a rate cap R: every person must end with a definite
outcome, and the fake counts the most calls started in any one-second window (never above R).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import threading
import time
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from app.france_travail.fake import most_in_one_second
from bench.common import fresh_pg_schema, fresh_sqlite

OUT = Path(__file__).parent / "out"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def prepare(kind: str, persons: int):  # type: ignore[no-untyped-def]
    from app import migrate
    from app.db import get_engine
    from app.flux.generator import generate_single
    from app.flux.loader import IngestOptions, ingest_file
    from app.models import OrientationEvent, Person
    from app.settings import Settings

    data_dir = OUT / f"ft-data-{kind}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    url = fresh_sqlite(data_dir / "ft.db") if kind == "sqlite" else fresh_pg_schema(PG_BASE, "bench_ft")
    settings = Settings(env="dev", data_dir=data_dir, database_url=url, log_level="WARNING")
    migrate.upgrade(settings)
    engine = get_engine(settings)
    stock = generate_single(data_dir / "stock.xml", int(persons / 1.2), date(2024, 3, 1), seed=7)
    report = ingest_file(engine, settings, stock.path, IngestOptions(received_on=date(2024, 3, 1), initial_stock=True))
    assert report.status == "applied", report.error
    with engine.begin() as conn:  # the platform works on every one of them (an invitation each)
        ids = list(conn.execute(select(Person.id).order_by(Person.id).limit(persons)).scalars())
        conn.execute(
            insert(OrientationEvent),
            [
                {"person_id": pid, "departement_code": "055", "type": "invitation", "event_date": date(2024, 3, 2),
                 "source": "api", "recorded_by": "bench"}
                for pid in ids
            ],
        )  # fmt: skip
    return settings, len(ids)


def run(settings, fake: str, label: str, limit: int) -> dict:  # type: ignore[no-untyped-def]
    from app.clients.france_travail import FranceTravailClient
    from app.db import get_engine
    from app.france_travail.sync import SyncOptions, run_sync
    from app.logging import configure_logging

    configure_logging("WARNING", False)  # the retries' log lines are not the figures
    httpx.post(f"{fake}/_fake/reset", timeout=5)
    sent: list[float] = []  # when each API request left this process (the rate cap is kept here)
    hooks = {"request": [lambda request: sent.append(time.monotonic())]}
    timeout = httpx.Timeout(settings.ft_read_timeout_seconds, connect=settings.ft_connect_timeout_seconds)
    client = FranceTravailClient(settings, httpx.Client(timeout=timeout, follow_redirects=False, event_hooks=hooks))
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    began = time.monotonic()
    try:
        summary = run_sync(get_engine(settings), settings, client, SyncOptions("055", limit=limit))
    finally:
        stop.set()
        client.close()
    seconds = time.monotonic() - began
    stats = httpx.get(f"{fake}/_fake/stats", timeout=5).json()
    print(f"\n### {label}")
    print(f"persons {summary.selected}, outcomes {dict(summary.outcomes)}, errors {dict(summary.errors)}")
    print(f"definite: {summary.definite}; {seconds:.1f} s; client attempts {summary.calls}; fake saw {stats['calls']}")
    print(
        f"most calls in one second: sent by the client {most_in_one_second(sent)}, "
        f"arrived at the fake {stats['max_calls_in_one_second']}"
    )
    if samples:
        third = max(1, len(samples) // 3)
        print(
            f"RSS MB: first third max {max(samples[:third]):.0f}, last third max {max(samples[-third:]):.0f}, "
            f"overall max {max(samples):.0f}"
        )
    return {"seconds": seconds, "calls": stats["calls"], "summary": summary, "stats": stats, "sent": sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="rate cap of the first run (0: none)")
    parser.add_argument("--fault-rate", type=float, default=100.0, help="rate cap of the run under faults")
    args = parser.parse_args()

    from app.france_travail.fake import pointed_at, running_fake

    t = time.monotonic()
    settings, n = prepare(args.db, args.persons)
    print(f"setup: {n} persons the platform works on, in {time.monotonic() - t:.0f} s", flush=True)
    with running_fake(seed=1) as fake:
        ft = pointed_at(settings, fake, ft_max_concurrency=args.concurrency, ft_rate_per_second=args.rate)
        httpx.post(f"{fake}/_fake/faults", json={"latency_ms": args.latency_ms}, timeout=5)
        first = run(ft, fake, f"clean, {args.latency_ms} ms, concurrency {args.concurrency}", n)
        ideal = args.concurrency / (args.latency_ms / 1000)
        reached = first["calls"] / first["seconds"]
        print(f"throughput: {reached:.1f} calls/s of an ideal {ideal:.1f} ({100 * reached / ideal:.0f} %)")
        httpx.post(f"{fake}/_fake/faults", json={"rate_503": 0.10, "rate_429": 0.05, "retry_after": 1}, timeout=5)
        faulty = ft.model_copy(
            update={"ft_rate_per_second": args.fault_rate, "ft_max_attempts": 8, "ft_circuit_failures": 100}
        )
        second = run(faulty, fake, f"10 % 503 + 5 % 429 (Retry-After 1 s), rate cap {args.fault_rate}/s", n)
        cap_kept = most_in_one_second(second["sent"]) <= args.fault_rate
        print(f"rate cap kept by the client: {cap_kept}; every person definite: {second['summary'].definite}")
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, db {args.db}")


if __name__ == "__main__":
    main()
