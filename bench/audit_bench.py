"""Audit chain benchmark (issue #14): how fast events are written by concurrent writers, sealed into the
chain and verified, on SQLite or PostgreSQL; the sealer must keep up with far more events than the load
benchmark's requests write (one event per read).

    .venv/bin/python -m bench.audit_bench [--events 200000] [--writers 4] [--db postgres]

Writers insert events as requests do (a batch per unit of work, 20 events here, as a worklist page), all
at once; then `seal` numbers and chains them (batches of 2,000) and `verify` walks the chain. Prints events
per second for each step and the process's peak memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import threading
import time
from pathlib import Path

from bench.common import fresh_pg_schema, fresh_sqlite
from bench.load_bench import PG_BASE

OUT = Path(__file__).parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    from app import migrate
    from app.audit.chain import record_action, seal, verify
    from app.db import get_engine, session_scope
    from app.settings import Settings

    OUT.mkdir(exist_ok=True)
    url = fresh_pg_schema(PG_BASE, "bench_audit") if args.db == "postgres" else fresh_sqlite(OUT / "audit.db")
    settings = Settings(env="test", database_url=url, data_dir=OUT / "audit-data", log_level="WARNING")
    migrate.upgrade(settings)
    engine = get_engine(settings)
    per_writer = args.events // args.writers

    def writer(n: int) -> None:
        for start in range(0, per_writer, 20):
            with session_scope(settings) as s:
                for i in range(start, min(start + 20, per_writer)):
                    record_action(s, f"client:{n}", "person.read", "055", person_id=i + 1)

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = time.perf_counter() - started
    started = time.perf_counter()
    sealed = seal(engine, settings)
    sealing = time.perf_counter() - started
    started = time.perf_counter()
    result = verify(engine, settings)
    verifying = time.perf_counter() - started
    assert result.intact and result.checked == sealed == per_writer * args.writers, result.as_dict()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, db={args.db}")
    print(f"events: {sealed} by {args.writers} writers in batches of 20")
    print(f"write:  {written:.1f} s ({sealed / written:,.0f} events/s)")
    print(f"seal:   {sealing:.1f} s ({sealed / sealing:,.0f} events/s)")
    print(f"verify: {verifying:.1f} s ({sealed / verifying:,.0f} events/s)")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
