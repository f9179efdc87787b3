"""What several server processes share (issue #27, item 4): one Redis (PASSERELLE_REDIS_URL) holds the per-client
rate limits, the refusals per source address, France Travail's token and its rate cap, so that N workers or
replicas behind a load balancer give a client its budget once, not N times.

Redis is asked through Lua scripts (one round trip, atomic, on Redis's clock so every process counts the same
time); every key has a time to live, so idle clients expire by themselves. Redis unreachable never fails a
request: `run` answers None at once and the caller falls back to its in-process state; Redis is tried again
`RETRY_SECONDS` later, and its absence is logged once per `WARN_SECONDS` (its error type only: the URL may
hold a password)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import redis
import structlog
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

log = structlog.get_logger(__name__)
T = TypeVar("T")

TIMEOUT_SECONDS = 0.25  # a local Redis answers in 0.1 ms; a stuck one costs twice this (one retry), off the event loop


class Breaker:
    """A shared store's state as its callers see it: after a failure it is left alone for `RETRY_SECONDS` (the
    callers use their in-process state), and its absence is logged once per `WARN_SECONDS`."""

    RETRY_SECONDS = 5.0
    WARN_SECONDS = 60.0

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._down_until = 0.0
        self._warned_at: float | None = None
        self._lock = threading.Lock()
        self.failures = 0  # how many times the store did not answer (tests, logs)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def claim(self) -> bool:
        """Whether this caller may ask the store now: always while it answers; after a failure, once
        `RETRY_SECONDS` have passed, one caller alone (the others keep their in-process state until it has
        answered), so that a stuck store holds one thread at a time, not every request's."""
        down_until = self._down_until
        if not down_until:
            return True
        now = time.monotonic()
        if now < down_until:
            return False
        with self._lock:
            if self._down_until != down_until:  # another caller claimed this try (or it answered meanwhile)
                return not self._down_until
            self._down_until = now + self.RETRY_SECONDS  # the next try, should this one not come back
            return True

    def succeeded(self) -> None:
        self._down_until = 0.0
        if self._warned_at is not None:
            with self._lock:
                if self._warned_at is not None:
                    self._warned_at = None
                    log.warning("shared_backend_back", backend=self.backend)

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            self._down_until = now + self.RETRY_SECONDS
            if self._warned_at is None or now - self._warned_at >= self.WARN_SECONDS:
                self._warned_at = now
                log.warning(
                    "shared_backend_unreachable",
                    backend=self.backend,
                    error_type=type(exc).__name__,
                    fallback="in-process limits (and France Travail token), until it answers again",
                )


class SharedRedis(Breaker):
    def __init__(self, url: str, prefix: str, timeout: float = TIMEOUT_SECONDS) -> None:
        super().__init__("redis")
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # once more on a dropped connection (Redis restarted), not beyond
            health_check_interval=30,
        )
        self.prefix = prefix.rstrip(":") + ":"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> Script:
        return self.client.register_script(source)

    def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """The script's answer, or None when Redis is unreachable (or was, less than `RETRY_SECONDS` ago)."""
        return self.call(lambda: script(keys=keys, args=args))

    def call(self, operation: Any) -> Any:
        """`operation()` (a Redis command), or None when Redis is unreachable."""
        if not self.claim():
            return None
        try:
            result = operation()
        except redis.RedisError as exc:
            self.failed(exc)
            return None
        self.succeeded()
        return result


_backends: dict[tuple[str, str], SharedRedis] = {}
_backends_lock = threading.Lock()


def backend(url: str | None, prefix: str) -> SharedRedis | None:
    """The process's one connection pool to the Redis at `url` (None: nothing is shared, per process)."""
    if not url:
        return None
    with _backends_lock:
        found = _backends.get((url, prefix))
        if found is None:
            found = _backends[(url, prefix)] = SharedRedis(url, prefix)
        return found


# The threads that ask a shared store for a coroutine (the admission middleware, the error handler): never the
# event loop, which a stuck store would stop for every request; few, so that a flood of anonymous requests
# waiting for a stuck store never takes the threads of the authenticated requests.
OFF_LOOP_THREADS = 8
_off_loop: anyio.CapacityLimiter | None = None


async def off_loop(remote: bool, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` from a coroutine: at once when it only reads the process's memory (`remote` False), else in
    a thread of its own (a network round trip to Redis or PostgreSQL)."""
    global _off_loop
    if not remote:
        return call(*args)
    if _off_loop is None:
        _off_loop = anyio.CapacityLimiter(OFF_LOOP_THREADS)
    return await anyio.to_thread.run_sync(call, *args, limiter=_off_loop)
