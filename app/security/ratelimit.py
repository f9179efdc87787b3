"""Per-client rate limits (issue #14): a token bucket per principal (API client or person), in the worker
process. A client over its budget gets 429 with `Retry-After`; the others are not slowed down. With N worker
processes a client gets up to N times the budget: the limit protects the service from one runaway client, it
is not a quota."""

from __future__ import annotations

import math
import threading
import time


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
