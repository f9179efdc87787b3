"""Per-client rate limits (issue #14): a token bucket per principal (API client or person), in the worker
process. A client over its budget gets 429 with `Retry-After`; the others are not slowed down. With N worker
processes a client gets up to N times the budget: the limit protects the service from one runaway client, it
is not a quota."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimiter:
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
    process, like `RateLimiter` (issue #27 will share it between processes)."""

    WINDOW = 60.0
    MAX_SOURCES = 100_000

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
