"""Issue #27, item 4: several `passerelle serve` processes give a client its rate limit once, not once per
process, when they share a Redis (PASSERELLE_REDIS_URL): the token bucket and the refusals per source address
in Redis (Lua scripts, the same arithmetic and Retry-After as in one process); Redis unreachable never fails a
request (each process counts alone meanwhile, a warning logged without the URL). Real Redis, real servers, on
SQLite and PostgreSQL."""

from __future__ import annotations

import math
import socket
import time

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.db import get_engine
from app.kit.shared import SharedRedis
from app.security.ratelimit import RateLimiter, RefusalLimiter, SharedRateLimiter, SharedRefusalLimiter
from app.security.shared_limits import DatabaseCounters, DatabaseRateLimiter, DatabaseRefusalLimiter, limiters
from tests.support.ftsupport import cli_env, passerelle
from tests.support.redisupport import keys_of


def test_the_bucket_in_redis_is_the_in_process_one_shared(redis_url, redis_prefix):
    """Two limiters with separate memory (two processes) and one Redis: one budget, the same answers (0, then
    the seconds to wait) as the in-process bucket gives, and a key that expires once the bucket is full."""
    one, two = SharedRedis(redis_url, redis_prefix), SharedRedis(redis_url, redis_prefix)
    a, b = SharedRateLimiter(6, 3, one), SharedRateLimiter(6, 3, two)  # a token every 10 s, 3 at once
    alone = RateLimiter(6, 3)
    assert [a.take("client:1"), b.take("client:1"), a.take("client:1"), b.take("client:1")] == [0, 0, 0, 10]
    assert [alone.take("x") for _ in range(4)] == [0, 0, 0, 10]
    assert b.take("client:2") == 0  # another client: its own bucket
    ttl = one.client.pttl(f"{redis_prefix}:rate:client:1")
    assert 0 < ttl <= math.ceil(3 / 0.1 * 1000) + 1000
    # a disabled limiter asks nothing
    assert SharedRateLimiter(0, None, one).take("client:1") == 0 and one.failures == two.failures == 0


def test_the_refusals_in_redis_are_counted_once_for_every_process(redis_url, redis_prefix):
    one, two = SharedRedis(redis_url, redis_prefix), SharedRedis(redis_url, redis_prefix)
    a, b = SharedRefusalLimiter(3, one), SharedRefusalLimiter(3, two)
    alone = RefusalLimiter(3)
    assert [a.refuse("203.0.113.7"), b.refuse("203.0.113.7"), a.retry_after("203.0.113.7")] == [0, 0, 0]
    assert b.refuse("203.0.113.7") == 0
    waits = [a.refuse("203.0.113.7"), b.retry_after("203.0.113.7"), a.retry_after("203.0.113.7")]
    assert all(0 < w <= 60 for w in waits)  # over the limit: wait until the oldest refusal is a minute old
    assert [alone.refuse("x") for _ in range(4)][-1] > 0
    assert b.retry_after("198.51.100.1") == 0 and a.refuse(None) == 0 and a.retry_after(None) == 0
    assert one.client.zcard(f"{redis_prefix}:refused:203.0.113.7") == 3  # the refused-while-over is not counted
    assert 0 < one.client.pttl(f"{redis_prefix}:refused:203.0.113.7") <= 60_000


def test_redis_unreachable_never_fails_a_request_and_is_logged_once_without_its_url():
    secret = "s3cret-in-url"
    down = SharedRedis(f"redis://:{secret}@127.0.0.1:1/0", "passerelle-test-down")
    limiter, refusals = SharedRateLimiter(6, 2, down), SharedRefusalLimiter(2, down)
    with capture_logs() as logs:
        assert [limiter.take("client:1") for _ in range(3)] == [0, 0, 10]  # the in-process bucket meanwhile
        assert [refusals.refuse("203.0.113.7") for _ in range(2)] == [0, 0] and refusals.refuse("203.0.113.7") > 0
    assert down.failures == 1 and not down.available  # asked once, then left alone for RETRY_SECONDS
    warnings = [e for e in logs if e["event"] == "shared_backend_unreachable"]
    assert len(warnings) == 1 and secret not in repr(logs) and "127.0.0.1" not in repr(logs)


def test_redis_back_is_used_again(redis_url, redis_prefix):
    shared = SharedRedis(redis_url, redis_prefix)
    limiter = SharedRateLimiter(6, 1, shared)
    shared._down_until = time.monotonic() + 60  # as after a failure: the in-process bucket answers
    assert limiter.take("client:1") == 0 and keys_of(redis_url, redis_prefix) == []
    shared._down_until = 0.0
    assert limiter.take("client:1") == 0 and keys_of(redis_url, redis_prefix) != []


def test_the_settings_choose_the_limiters(db, redis_url, redis_prefix):
    """Redis when configured; else on PostgreSQL the database (unless set off); else (SQLite) per process."""
    engine = get_engine(db)
    shared = db.model_copy(update={"redis_url": SecretStr(redis_url), "redis_prefix": redis_prefix})
    assert [type(x) for x in limiters(shared, engine)] == [SharedRateLimiter, SharedRefusalLimiter]
    alone = [type(x) for x in limiters(db.model_copy(update={"rate_limit_in_database": False}), engine)]
    assert alone == [RateLimiter, RefusalLimiter]
    expected = [RateLimiter, RefusalLimiter] if db.is_sqlite else [DatabaseRateLimiter, DatabaseRefusalLimiter]
    assert [type(x) for x in limiters(db, engine)] == expected


def _postgresql_only(db) -> None:
    if db.is_sqlite:
        pytest.skip("the limits shared through the database are PostgreSQL's (SQLite: one host, per process)")


def test_the_bucket_in_postgresql_is_the_in_process_one_shared(db):
    _postgresql_only(db)
    engine = get_engine(db)  # two processes' limiters: memory of their own, one database
    a, b = DatabaseRateLimiter(6, 3, DatabaseCounters(engine)), DatabaseRateLimiter(6, 3, DatabaseCounters(engine))
    assert [a.take("client:1"), b.take("client:1"), a.take("client:1"), b.take("client:1")] == [0, 0, 0, 10]
    assert b.take("client:2") == 0 and a.database.failures == 0
    assert DatabaseRateLimiter(0, None, a.database).take("client:1") == 0


def test_the_refusals_in_postgresql_are_counted_once_for_every_process(db):
    _postgresql_only(db)
    engine = get_engine(db)
    a, b = DatabaseRefusalLimiter(3, DatabaseCounters(engine)), DatabaseRefusalLimiter(3, DatabaseCounters(engine))
    assert [a.refuse("203.0.113.7"), b.refuse("203.0.113.7"), a.retry_after("203.0.113.7")] == [0, 0, 0]
    assert b.refuse("203.0.113.7") == 0
    waits = [a.refuse("203.0.113.7"), b.retry_after("203.0.113.7"), a.retry_after("203.0.113.7")]
    assert all(0 < w <= 60 for w in waits)
    assert b.retry_after("198.51.100.1") == 0 and a.refuse(None) == 0 and a.retry_after(None) == 0


def test_postgresql_unreachable_never_fails_a_request(db):
    from sqlalchemy import create_engine

    _postgresql_only(db)
    down = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 1})
    counters = DatabaseCounters(down)
    limiter, refusals = DatabaseRateLimiter(6, 2, counters), DatabaseRefusalLimiter(60, counters)
    with capture_logs() as logs:
        assert [limiter.take("client:1") for _ in range(3)] == [0, 0, 10]
        assert [refusals.refuse("203.0.113.7") for _ in range(60)][-1] == 0
    assert [e["event"] for e in logs].count("shared_backend_unreachable") == 1 and counters.failures == 1
    down.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str]) -> str:
    port = _free_port()
    passerelle("serve", "--port", str(port), "--no-migrate", env=env)
    return f"http://127.0.0.1:{port}"


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


BURST = 5  # the budget a client has at once; one more token a minute (PASSERELLE_RATE_LIMIT_PER_MINUTE=1)
REFUSED = 4


@pytest.mark.parametrize("shared", ["redis", "database", "per-process"])
def test_two_servers_on_one_database_give_a_client_its_budget_once(db, make_api_key, redis_url, redis_prefix, shared):
    """Two `passerelle serve` processes on one database, requests sent to each in turn: with Redis (or, on
    PostgreSQL, through the database) the client gets its budget in all (429 with Retry-After beyond, from
    both), and an address its refusals once; per process, each counts alone: twice the budget."""
    if shared == "database":
        _postgresql_only(db)
    key = make_api_key(["persons:read"])
    env = cli_env(
        db,
        "http://127.0.0.1:9",
        PASSERELLE_RATE_LIMIT_PER_MINUTE="1",
        PASSERELLE_RATE_LIMIT_BURST=str(BURST),
        PASSERELLE_MAX_REFUSED_PER_MINUTE=str(REFUSED),
        PASSERELLE_REDIS_PREFIX=redis_prefix,
    )
    if shared == "redis":
        env["PASSERELLE_REDIS_URL"] = redis_url
    elif shared == "per-process":
        env["PASSERELLE_RATE_LIMIT_IN_DATABASE"] = "false"
    servers = [_serve(env), _serve(env)]
    for base in servers:
        _wait_ready(base)
    started = time.monotonic()
    answers = [
        httpx.get(f"{servers[n % 2]}/api/v1/me", headers={"X-API-Key": key}, timeout=30) for n in range(4 * BURST)
    ]
    refused = [httpx.get(f"{servers[n % 2]}/api/v1/me", timeout=30) for n in range(4 * REFUSED)]
    refills = math.ceil((time.monotonic() - started) / 60)  # a token a minute: none in a run of a few seconds
    allowed = [r for r in answers if r.status_code == 200]
    limited = [r for r in answers if r.status_code == 429]
    assert len(allowed) + len(limited) == len(answers), {r.status_code for r in answers}
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert {r.json()["error"] for r in limited} == {"too_many_requests"}
    unauthorized = [r for r in refused if r.status_code == 401]
    if shared != "per-process":
        assert BURST <= len(allowed) <= BURST + refills
        assert {str(r.url).rsplit("/api", 1)[0] for r in limited} == set(servers)  # held by both
        assert len(unauthorized) == REFUSED
        assert (keys_of(redis_url, redis_prefix) != []) is (shared == "redis")
    else:
        assert 2 * BURST <= len(allowed) <= 2 * (BURST + refills)
        assert len(unauthorized) == 2 * REFUSED
        assert keys_of(redis_url, redis_prefix) == []
    assert all(r.status_code == 429 for r in refused if r.status_code != 401)
