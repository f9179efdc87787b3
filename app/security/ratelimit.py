"""Per-client rate limits (issue #14): a token bucket per principal (API client or person), in the worker
process. A client over its budget gets 429 with `Retry-After`; the others are not slowed down.

Several processes (issue #27, item 4): with PASSERELLE_REDIS_URL the buckets and the refusals live in Redis
(`SharedRateLimiter`, `SharedRefusalLimiter`: one Lua script per request, same arithmetic, on Redis's clock),
so N workers or replicas give a client its budget once; without Redis, on PostgreSQL, through the database
(app.security.shared_limits, which chooses); on SQLite (one host) each process counts alone: N workers give up
to N times the budget (`passerelle serve --workers N` warns). The shared store unreachable: the in-process
counts take over until it answers again (app.kit.shared)."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque

from app.kit.shared import SharedRedis


class RateLimiter:
    remote = False  # whether a check is a network round trip (a shared store): then asked off the event loop

    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, per_minute // 6))
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (tokens, last refill)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, who: str) -> int:
        """Take one token for `who`: 0 if allowed, else the seconds to wait before the next one."""
        if not self.enabled:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0
            self._buckets[who] = (tokens, now)
            if len(self._buckets) > 100_000:  # never grows without bound: idle buckets are full anyway
                self._buckets.clear()
            return max(1, math.ceil((1 - tokens) / self.rate))


class RefusalLimiter:
    """Refused attempts without a valid credential (a 401, a wrong download link, a wrong webhook signature)
    per source address (issue #23): at most `per_minute` in any sliding minute; beyond, the address's
    attempts without a known credential are answered 429 until the oldest refusal of its window is a minute
    old. Authenticated callers from the same address are never counted nor held back. In the worker
    process, like `RateLimiter`; shared between processes by `SharedRefusalLimiter`."""

    WINDOW = 60.0
    MAX_SOURCES = 100_000
    remote = False  # as RateLimiter.remote

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self._seen: dict[str, deque[float]] = {}  # source -> times of its last `limit` refusals
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def _wait(self, times: deque[float] | None, now: float) -> int:
        if times is None or len(times) < self.limit or now - times[0] >= self.WINDOW:
            return 0
        return max(1, math.ceil(self.WINDOW - (now - times[0])))

    def retry_after(self, source: str | None) -> int:
        """0 if `source` may still be refused normally, else the seconds before it may try again."""
        if not self.enabled or source is None:
            return 0
        with self._lock:
            return self._wait(self._seen.get(source), time.monotonic())

    def refuse(self, source: str | None) -> int:
        """Count one refusal of `source`; returns 0, or (the source being over its limit already: this
        attempt is not counted) the seconds before it may try again, to answer 429 instead."""
        if not self.enabled or source is None:
            return 0
        now = time.monotonic()
        with self._lock:
            times = self._seen.get(source)
            wait = self._wait(times, now)
            if wait:
                return wait
            if times is None:
                if len(self._seen) >= self.MAX_SOURCES:  # never grows without bound: the stale ones go first
                    self._seen = {s: t for s, t in self._seen.items() if now - t[-1] < self.WINDOW}
                    if len(self._seen) >= self.MAX_SOURCES:
                        self._seen.clear()
                times = self._seen[source] = deque(maxlen=self.limit)
            times.append(now)
            return 0


# KEYS[1]: the principal's bucket (hash: t tokens, l last refill); ARGV: rate per second, capacity, ttl ms.
# The same arithmetic as RateLimiter.take, on Redis's clock; a bucket idle until full is dropped (its TTL).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens, last = tonumber(b[1]), tonumber(b[2])
if tokens == nil or last == nil then tokens, last = capacity, now end
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.max(1, math.ceil((1 - tokens) / rate)) end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'l', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
"""


class SharedRateLimiter(RateLimiter):
    """`RateLimiter` with its buckets in Redis, shared by every process; its own buckets while Redis is away."""

    remote = True

    def __init__(self, per_minute: int, burst: int | None, shared: SharedRedis) -> None:
        super().__init__(per_minute, burst)
        self.shared = shared
        self._take = shared.script(TAKE)
        # a bucket left alone this long is full again: Redis forgets it
        self._ttl_ms = math.ceil(self.capacity / self.rate * 1000) + 1000 if self.enabled else 0

    def take(self, who: str) -> int:
        if not self.enabled:
            return 0
        wait = self.shared.run(self._take, [self.shared.key("rate", who)], [self.rate, self.capacity, self._ttl_ms])
        return super().take(who) if wait is None else int(wait)


# KEYS[1]: the source's refusal times (sorted set); ARGV: limit, window seconds, a unique member, 1 to count
# this refusal (0: only say whether the source must wait). As RefusalLimiter: the last `limit` refusals kept.
REFUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')[2])
  return math.max(1, math.ceil(window - (now - oldest)))
end
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
end
return 0
"""


class SharedRefusalLimiter(RefusalLimiter):
    """`RefusalLimiter` with its windows in Redis, shared by every process; its own while Redis is away."""

    remote = True

    def __init__(self, per_minute: int, shared: SharedRedis) -> None:
        super().__init__(per_minute)
        self.shared = shared
        self._refuse = shared.script(REFUSE)

    def _shared(self, source: str, count: bool) -> int | None:
        member = os.urandom(8).hex()
        keys, args = [self.shared.key("refused", source)], [self.limit, self.WINDOW, member, int(count)]
        wait = self.shared.run(self._refuse, keys, args)
        return None if wait is None else int(wait)

    def retry_after(self, source: str | None) -> int:
        if not self.enabled or source is None:
            return 0
        wait = self._shared(source, count=False)
        return super().retry_after(source) if wait is None else wait

    def refuse(self, source: str | None) -> int:
        if not self.enabled or source is None:
            return 0
        wait = self._shared(source, count=True)
        return super().refuse(source) if wait is None else wait
