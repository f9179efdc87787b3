"""Which limiters a server process uses (`limiters`): shared through Redis when PASSERELLE_REDIS_URL is set,
else on PostgreSQL through the database, else (SQLite, one host) per process (issue #27, item 4).

Through PostgreSQL: one atomic statement per check, an upsert into an UNLOGGED table (migration 0028) that
computes the token bucket (or the sliding minute) on the database's clock, on a pooled connection in
autocommit; the same arithmetic and Retry-After as in one process (app.security.ratelimit). The database not
answering: the in-process counts answer meanwhile (never a failed request because of a limit). Its cost per
request is in bench/BENCHMARKS.md ("Issue #27, item 4")."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import psycopg
import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.kit.shared import Breaker, SharedRedis, backend
from app.security.ratelimit import (
    RateLimiter,
    RefusalLimiter,
    SharedRateLimiter,
    SharedRefusalLimiter,
)
from app.settings import Settings

log = structlog.get_logger(__name__)

# %(cap)s tokens at most, %(rate)s a second; `taken`: whether this request took one.
TAKE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
INSERT INTO rate_limit_buckets AS b (principal, tokens, refilled_at, taken)
SELECT %(who)s, %(cap)s - 1, now.t, true FROM now
ON CONFLICT (principal) DO UPDATE SET
  tokens = least(%(cap)s, b.tokens + greatest(0, EXCLUDED.refilled_at - b.refilled_at) * %(rate)s)
    - CASE WHEN least(%(cap)s, b.tokens + greatest(0, EXCLUDED.refilled_at - b.refilled_at) * %(rate)s) >= 1
      THEN 1 ELSE 0 END,
  taken = least(%(cap)s, b.tokens + greatest(0, EXCLUDED.refilled_at - b.refilled_at) * %(rate)s) >= 1,
  refilled_at = EXCLUDED.refilled_at
RETURNING taken, tokens
"""

# The source's refusals younger than the window, this one added unless it already has `limit` of them.
REFUSE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
INSERT INTO refusal_windows AS w (source, times)
SELECT %(source)s, ARRAY[now.t] FROM now
ON CONFLICT (source) DO UPDATE SET times = (
  WITH kept AS (SELECT array(SELECT x FROM unnest(w.times) x WHERE x > EXCLUDED.times[1] - %(window)s ORDER BY x) a)
  SELECT CASE WHEN cardinality(a) >= %(limit)s THEN a ELSE a || EXCLUDED.times[1] END FROM kept)
RETURNING times, (SELECT t FROM now)
"""

# The sources whose last refusal is older than the window: the same as no row (issue #27 review: the table
# held every address ever refused). A bounded batch, so that it fits in the statement timeout.
SWEEP = """
DELETE FROM refusal_windows WHERE source IN (
  SELECT source FROM refusal_windows
  WHERE times[cardinality(times)] < extract(epoch FROM clock_timestamp())::float8 - %(window)s LIMIT %(batch)s)
"""

WINDOW_NOW = """
SELECT (SELECT times FROM refusal_windows WHERE source = %(source)s), extract(epoch FROM clock_timestamp())::float8
"""


# A pool of its own per database (per process): a check never waits for a request's connection, nor longer
# than these bounds (it runs on the event loop for anonymous requests: app.api.middleware, app.api.refusals).
LIMITS_CONNECTIONS = 4
LIMITS_WAIT_SECONDS = 0.25  # for a free connection of that pool
LIMITS_STATEMENT_MS = 500
_pools: dict[str, Engine] = {}
_pools_lock = threading.Lock()


def _pool_for(engine: Engine) -> Engine:
    key = engine.url.render_as_string(hide_password=False)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = create_engine(
                engine.url,
                pool_size=LIMITS_CONNECTIONS,
                max_overflow=0,
                pool_timeout=LIMITS_WAIT_SECONDS,
                pool_pre_ping=False,
                isolation_level="AUTOCOMMIT",  # one statement, its own transaction: no BEGIN/COMMIT round trips
                hide_parameters=True,
                connect_args={"connect_timeout": 2},
            )
            event.listen(pool, "connect", _bounded)
        return pool


def _bounded(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute(f"SET statement_timeout = {LIMITS_STATEMENT_MS}")
    dbapi_connection.commit()


class DatabaseCounters(Breaker):
    """One statement on a connection of the limits' own small pool (autocommit, bounded waits); None when the
    database does not answer in time."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("postgresql")
        self.engine = _pool_for(engine)

    def one(self, statement: str, values: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self.claim():
            return None
        try:
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                row = driver.execute(statement, values).fetchone()
            finally:
                raw.close()
        except PoolTimeout:  # its connections all busy (a burst): this check alone counts in the process
            log.info("shared_limits_pool_busy", connections=LIMITS_CONNECTIONS)
            return None
        except (SQLAlchemyError, psycopg.Error, OSError) as exc:  # never a failed request because of a limit
            self.failed(exc)
            return None
        self.succeeded()
        return tuple(row) if row is not None else None

    def housekeeping(self, statement: str, values: dict[str, Any]) -> None:
        """A statement whose failure (a timeout on a large table) is not the database being away: logged, the
        counts keep going through the database."""
        if not self.available:
            return
        try:
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                driver.execute(statement, values)
            finally:
                raw.close()
        except (SQLAlchemyError, psycopg.Error, OSError) as exc:
            log.warning("shared_limits_sweep_failed", error_type=type(exc).__name__)


class DatabaseRateLimiter(RateLimiter):
    remote = True

    def __init__(self, per_minute: int, burst: int | None, database: DatabaseCounters) -> None:
        super().__init__(per_minute, burst)
        self.database = database

    def take(self, who: str) -> int:
        if not self.enabled:
            return 0
        row = self.database.one(TAKE, {"who": who[:200], "cap": self.capacity, "rate": self.rate})
        if row is None:
            return super().take(who)
        taken, tokens = row
        return 0 if taken else max(1, math.ceil((1 - tokens) / self.rate))


class DatabaseRefusalLimiter(RefusalLimiter):
    remote = True

    SWEEP_SECONDS = 60.0  # how often a process drops the windows older than a minute
    SWEEP_BATCH = 10_000

    def __init__(self, per_minute: int, database: DatabaseCounters) -> None:
        super().__init__(per_minute)
        self.database = database
        self._next_sweep = 0.0  # the first refusal sweeps

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + self.SWEEP_SECONDS
        self.database.housekeeping(SWEEP, {"window": self.WINDOW, "batch": self.SWEEP_BATCH})

    def _wait_in(self, times: list[float] | None, now: float) -> int:
        times = [t for t in times or [] if now - t < self.WINDOW]
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(self.WINDOW - (now - times[-self.limit])))

    def retry_after(self, source: str | None) -> int:
        if not self.enabled or source is None:
            return 0
        row = self.database.one(WINDOW_NOW, {"source": source[:100]})
        return super().retry_after(source) if row is None else self._wait_in(row[0], row[1])

    def refuse(self, source: str | None) -> int:
        if not self.enabled or source is None:
            return 0
        self._sweep()
        values = {"source": source[:100], "window": self.WINDOW, "limit": self.limit}
        row = self.database.one(REFUSE, values)
        if row is None:
            return super().refuse(source)
        times, now = row
        if times and times[-1] == now:  # counted: it was under its limit
            return 0
        return self._wait_in(times, now)


def shared_backend(settings: Settings) -> SharedRedis | None:
    """The Redis every process of the service shares (PASSERELLE_REDIS_URL), or None."""
    url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
    return backend(url, settings.redis_prefix)


def in_database(settings: Settings) -> bool:
    """Whether the limits are shared through the database: on PostgreSQL without Redis, unless
    PASSERELLE_RATE_LIMIT_IN_DATABASE=false (never on SQLite: one host, its processes count alone)."""
    if settings.is_sqlite or settings.redis_url is not None:
        return False
    return settings.rate_limit_in_database is not False


def limiters(settings: Settings, engine: Engine) -> tuple[RateLimiter, RefusalLimiter]:
    """The per-client rate limiter and the refusal limiter: shared through Redis when configured, else through
    PostgreSQL (app.security.shared_limits), else (SQLite) each process counts alone."""
    per_minute, burst, refused = (
        settings.rate_limit_per_minute,
        settings.rate_limit_burst,
        settings.max_refused_per_minute,
    )
    shared = shared_backend(settings)
    if shared is not None:
        return SharedRateLimiter(per_minute, burst, shared), SharedRefusalLimiter(refused, shared)
    if in_database(settings):
        database = DatabaseCounters(engine)
        return DatabaseRateLimiter(per_minute, burst, database), DatabaseRefusalLimiter(refused, database)
    return RateLimiter(per_minute, burst), RefusalLimiter(refused)
