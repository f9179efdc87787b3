"""Issue #27, item 4: what a rate-limit check costs per request, per process or shared between processes.

Measures, for N checks of a client's bucket: the worker's CPU (this process's `time.process_time`), the wall
time, and the shared store's own CPU (Redis: `INFO cpu`; PostgreSQL: its backend process's utime + stime
from /proc, same machine) for:

- the in-process bucket (`RateLimiter`, what every worker does without a shared backend);
- Redis (`SharedRateLimiter`: one Lua script, one round trip);
- PostgreSQL (`DatabaseRateLimiter`, `DatabaseRefusalLimiter`): one atomic upsert into an UNLOGGED table
  computing the bucket (the window), on a pooled connection in autocommit, in a throw-away schema.

    .venv/bin/python -m bench.shared_limits_bench [--redis redis://127.0.0.1:6379/15]
        [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [-n 5000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from app.kit.shared import SharedRedis
from app.security.ratelimit import RateLimiter, SharedRateLimiter
from app.security.shared_limits import DatabaseCounters, DatabaseRateLimiter, DatabaseRefusalLimiter

TABLES = [  # as migration 0028 makes them
    "CREATE UNLOGGED TABLE rate_limit_buckets (principal varchar(200) PRIMARY KEY, tokens float8 NOT NULL, "
    "refilled_at float8 NOT NULL, taken boolean NOT NULL)",
    "CREATE UNLOGGED TABLE refusal_windows (source varchar(100) PRIMARY KEY, times float8[] NOT NULL)",
]


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, n: int, check: Callable[[int], object], store_cpu: Callable[[], float] | None) -> None:
    for i in range(min(500, n)):  # warm: connections, scripts loaded, plans cached
        check(i)
    store0 = store_cpu() if store_cpu else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        check(i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    store = (store_cpu() - store0) if store_cpu else 0.0
    print(
        f"| {name} | {n} | {1e6 * cpu / n:.1f} | {1e6 * wall / n:.1f} | "
        + (f"{1e6 * store / n:.1f} |" if store_cpu else "- |")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}")
    print("| check | n | worker CPU µs/check | wall µs/check | store CPU µs/check |\n|---|---|---|---|---|")

    local = RateLimiter(10**6, 10**5)
    measure("in process (`RateLimiter`)", args.n, lambda i: local.take(f"client:{i % 50}"), None)

    prefix = f"bench-{os.getpid()}"
    shared = SharedRedis(args.redis, prefix)
    limiter = SharedRateLimiter(10**6, 10**5, shared)
    info = redis.Redis.from_url(args.redis)

    def redis_cpu() -> float:
        cpu = info.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    try:
        measure("Redis (`SharedRateLimiter`, Lua)", args.n, lambda i: limiter.take(f"client:{i % 50}"), redis_cpu)
    finally:
        keys = list(info.scan_iter(f"{prefix}:*"))
        if keys:
            info.delete(*keys)

    schema = f"bench_limits_{os.getpid()}"
    admin = create_engine(args.pg)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(f"{args.pg}?options=-csearch_path%3D{schema}", pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            for statement in TABLES:
                conn.execute(text(statement))
        counters = DatabaseCounters(engine)  # its own pool (app.security.shared_limits): one connection used here
        limiter_pg = DatabaseRateLimiter(10**6, 10**5, counters)
        refusals_pg = DatabaseRefusalLimiter(10**6, counters)
        limiter_pg.take("warm")
        with counters.engine.connect() as conn:
            backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

        def store() -> float:
            return _proc_cpu(backend)

        measure(
            "PostgreSQL (`DatabaseRateLimiter`, UNLOGGED upsert)",
            args.n,
            lambda i: limiter_pg.take(f"client:{i % 50}"),
            store,
        )
        measure(
            "PostgreSQL (`DatabaseRefusalLimiter.refuse`)",
            args.n // 5,
            lambda i: refusals_pg.refuse(f"192.0.2.{i % 50}"),
            store,
        )
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
