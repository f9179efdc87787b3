"""A real Redis for the tests of what several processes share (issue #27, item 4): PASSERELLE_TEST_REDIS_URL
(CI sets it: an unreachable Redis then fails the run, as PostgreSQL does), else redis://127.0.0.1:6379/15 when
one answers there (the tests are skipped otherwise). Each test has its own key prefix, its keys deleted after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_ENV = "PASSERELLE_TEST_REDIS_URL"
LOCAL_REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV) or LOCAL_REDIS
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get(REDIS_ENV):
            pytest.fail(f"{REDIS_ENV} is set but Redis does not answer ({type(exc).__name__})")
        pytest.skip(f"no Redis at {LOCAL_REDIS} and {REDIS_ENV} not set")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted when it ends."""
    prefix = f"passerelle-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def keys_of(url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(f"{prefix}:*"))
    finally:
        client.close()
