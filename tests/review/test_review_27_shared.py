"""Review of issue #27, items 4 (limits shared through Redis or PostgreSQL) and 6 (pilotage reads on a read
replica): each test names a defect found, and fails without its fix."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text

from app.db import get_engine, make_engine, on_replica, session_scope
from app.kit.shared import SharedRedis
from app.security.shared_limits import DatabaseCounters, DatabaseRefusalLimiter
from tests.pilotage.test_read_replica import pair, populated  # noqa: F401 - a primary and its standby
from tests.support.blackhole import BlackHole
from tests.support.clock import timed_waits_never_end


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole


def test_a_shared_limiter_is_never_asked_on_the_event_loop(db, monkeypatch):
    """Finding 1: the refusal limiter is asked in AdmissionMiddleware and in the error handler, both on the event
    loop; with a shared store that is a blocking network call (a stuck Redis: 0.5 s, timeout and its retry, during
    which no request of the process is answered; a slow one: every anonymous request). Asked in a thread."""
    on_loop: list[str] = []

    def spy(self: SharedRedis, operation: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append("loop")
        except RuntimeError:
            on_loop.append("thread")
        return None  # as if Redis did not answer: the in-process counts answer

    monkeypatch.setattr(SharedRedis, "call", spy)
    from app.main import create_app

    settings = db.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:9/0"), "redis_prefix": "review27"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for _ in range(3):
            assert client.get("/api/v1/me").status_code == 401
    assert on_loop and "loop" not in on_loop, on_loop


def _postgresql_only(db) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL only")


def test_the_refusal_windows_table_does_not_grow_without_bound(db):
    """Finding 2: every source address ever refused kept a row of refusal_windows forever (Redis's keys expire,
    the in-process limiter keeps at most 100,000 sources): a client rotating its IPv6 addresses grows the
    table without end. Windows older than a minute are swept."""
    _postgresql_only(db)
    engine = get_engine(db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO refusal_windows (source, times) SELECT '2001:db8::' || to_hex(n), "
                "ARRAY[extract(epoch FROM clock_timestamp())::float8 - 3600] FROM generate_series(1, 500) n"
            )
        )
    limiter = DatabaseRefusalLimiter(3, DatabaseCounters(engine))
    assert limiter.refuse("203.0.113.9") == 0
    with engine.connect() as conn:
        left = conn.execute(text("SELECT source FROM refusal_windows ORDER BY source")).scalars().all()
    assert left == ["203.0.113.9"]


def test_a_replica_that_does_not_answer_is_not_waited_for_by_every_request(db, black_hole):
    """Finding 3: a replica that accepts connections and never answers (or is down behind a firewall) cost every
    pilotage request its connect timeout (5 s by default) before the primary answered: no memory of the
    failure. After one failure the replica is left alone for a while."""
    _postgresql_only(db)
    settings = db.model_copy(
        update={
            "database_read_url": f"postgresql+psycopg://postgres@127.0.0.1:{black_hole.port}/test",
            "database_connect_timeout_seconds": 2,
        }
    )
    replica = make_engine(settings.database_read_url, settings)
    try:
        answers = []
        for _ in range(2):
            with session_scope(settings) as session:
                answers.append(on_replica(session, replica, 0, lambda conn: conn.execute(text("SELECT 1")).scalar()))
        assert answers == [1, 1]
        assert len(black_hole.accepted) == 1, "the second request tried the dead replica again"
    finally:
        replica.dispose()


def test_a_query_timed_out_on_the_replica_is_not_run_again_on_the_primary(populated):  # noqa: F811
    """Finding 4: a pilotage query cancelled on the replica by its statement timeout was run again on the primary
    (any OperationalError meant "use the primary"): the slowest queries cost twice the timeout, the second time
    on the primary the replica is there to spare. A timeout is the request's answer; a conflict with recovery
    (another error code) still falls back to the primary."""
    from sqlalchemy.exc import OperationalError

    from tests.pilotage.test_read_replica import _caught_up

    settings = populated.model_copy(update={"database_statement_timeout_seconds": 1})
    replica = make_engine(settings.database_read_url, settings)
    calls: list[bool] = []

    def work(conn: Any) -> None:
        calls.append(bool(conn.execute(text("SELECT pg_is_in_recovery()")).scalar()))
        conn.execute(text("SELECT pg_sleep(1.5)"))  # beyond the replica's statement timeout

    try:
        _caught_up(populated)
        with session_scope(settings) as session, pytest.raises(OperationalError, match="statement timeout"):
            on_replica(session, replica, 2000, work)
        assert calls == [True]
    finally:
        replica.dispose()


def test_a_busy_limits_pool_is_not_taken_for_a_database_that_is_down(db):
    """Finding 5: the limits' own pool (4 connections, 0.25 s wait) all in use, e.g. a burst of requests on a
    loaded host, was counted as the database not answering: the breaker opened for 5 s, during which every
    process counted alone (N processes: N times the budget). A busy pool costs that one check, not 5 s."""
    _postgresql_only(db)
    if timed_waits_never_end():
        pytest.skip("the pool's timed wait for a connection never returns under faketime (tests/support/clock.py)")
    from app.security.shared_limits import LIMITS_CONNECTIONS, DatabaseRateLimiter

    counters = DatabaseCounters(get_engine(db))
    limiter = DatabaseRateLimiter(1, 2, counters)  # 2 at once, one more a minute
    held = [counters.engine.raw_connection() for _ in range(LIMITS_CONNECTIONS)]
    try:
        limiter.take("client:busy")  # the pool has no free connection: answered by the process alone
    finally:
        for conn in held:
            conn.close()
    assert counters.available, "a busy pool opened the breaker"
    with get_engine(db).connect() as conn:  # the next check is shared again
        limiter.take("client:busy")
        assert conn.execute(text("SELECT count(*) FROM rate_limit_buckets WHERE principal = 'client:busy'")).scalar()


def test_a_stuck_redis_is_tried_again_by_one_caller_not_by_all(black_hole):
    """Finding 6: once `RETRY_SECONDS` had passed, every concurrent caller asked the stuck Redis again (each held
    0.5 s: the timeout and its retry), i.e. every request thread of the process every 5 s. One caller tries;
    the others keep their in-process counts until it has answered."""
    from app.security.ratelimit import SharedRateLimiter

    shared = SharedRedis(f"redis://127.0.0.1:{black_hole.port}/0", "review27")
    limiter = SharedRateLimiter(60, 100, shared)
    assert limiter.take("client:1") == 0 and shared.failures == 1  # the first failure
    tried_first = len(black_hole.accepted)
    shared._down_until = time.monotonic()  # as when RETRY_SECONDS have passed
    barrier = threading.Barrier(10)

    def request() -> None:
        barrier.wait()
        limiter.take("client:1")

    threads = [threading.Thread(target=request) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.failures == 2, "more than one caller asked the stuck Redis"
    assert len(black_hole.accepted) - tried_first <= tried_first
    shared.client.close()
