"""France Travail's bounds across the processes of the service (issue #27, item 4): its rate cap (`RateCap` in one
process, `SharedRateCap` across all of them through Redis) and its token (`SharedTokens`: one fetch for every
process, the others read it from Redis).

The token is a credential: it is kept in Redis encrypted (AES-GCM, a key derived from the API key pepper, the
Redis key as associated data) under a key that names no client (an HMAC of the client id, the token URL and
the scope), with a time to live ending a minute before the token does; it is never logged. While one process
fetches a token, the others wait for it (a lock with a time to live, so a process that dies while fetching
never holds the others for long). Redis unreachable: each process fetches and caps on its own, as before."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.clients.ft_errors import FranceTravailUnavailable
from app.kit.shared import SharedRedis
from app.settings import Settings

TOKEN_LEEWAY_SECONDS = 60
WAIT_STEP_SECONDS = 0.05  # how often a process waiting for another's token fetch looks again


def _no_room() -> Exception:
    return FranceTravailUnavailable("France Travail's rate cap leaves no room before the deadline", 1.0)


class RateCap:
    """At most `rate` call starts in any one-second window, across the threads of the process: starts are
    spaced 1/rate apart, and counted when they happen (a thread that wakes late does not make a burst)."""

    def __init__(self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.limit = max(1, int(rate))
        self.clock, self.sleep = clock, sleep
        self.next_slot = 0.0
        self.starts: deque[float] = deque()
        self.lock = threading.Lock()

    def wait(self, deadline: float | None) -> None:
        if not self.interval:
            return
        while True:
            with self.lock:
                now = self.clock()
                while self.starts and self.starts[0] <= now - 1.0:
                    self.starts.popleft()
                slot = max(self.next_slot, self.starts[0] + 1.0 if len(self.starts) >= self.limit else 0.0)
                if slot <= now:
                    self.starts.append(now)
                    self.next_slot = now + self.interval
                    return
            if deadline is not None and slot > deadline:
                raise _no_room()
            self.sleep(slot - now)


# KEYS[1]: the next slot (seconds, Redis's clock), KEYS[2]: the starts of the last second (sorted set);
# ARGV: interval, limit, a unique member. 0 and the start counted, or the seconds to wait before asking again.
START = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1.0)
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('ZCARD', KEYS[2]) >= limit then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  slot = math.max(slot, tonumber(first[2]) + 1.0)
end
if slot <= now then
  redis.call('ZADD', KEYS[2], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], 2000)
  redis.call('SET', KEYS[1], string.format('%.6f', now + interval), 'PX', 2000 + math.ceil(interval * 1000))
  return '0'
end
return string.format('%.6f', slot - now)
"""


class SharedRateCap(RateCap):
    """`RateCap` for every process of the service: the same rule, its state in Redis (its own while Redis is
    away)."""

    def __init__(
        self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None], shared: SharedRedis
    ) -> None:
        super().__init__(rate, clock, sleep)
        self.shared = shared
        self._start = shared.script(START)
        self._keys = [shared.key("ft-rate", "next"), shared.key("ft-rate", "starts")]

    def wait(self, deadline: float | None) -> None:
        if not self.interval:
            return
        while True:
            answer = self.shared.run(self._start, self._keys, [self.interval, self.limit, os.urandom(8).hex()])
            if answer is None:
                super().wait(deadline)
                return
            wait = float(answer)
            if wait <= 0:
                return
            if deadline is not None and self.clock() + wait > deadline:
                raise _no_room()
            self.sleep(wait)


# Deletes the fetch lock only if it is still ours (its time to live may have ended and another taken it).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SharedTokens:
    """France Travail's tokens in Redis, one per API's scope for every process of the service."""

    def __init__(self, settings: Settings, shared: SharedRedis) -> None:
        self.shared = shared
        self._aead = AESGCM(hmac.new(settings.pepper, b"passerelle france travail token", hashlib.sha256).digest())
        self._name = hmac.new(
            settings.pepper,
            f"{settings.ft_client_id}\n{settings.ft_auth_url}\n{settings.ft_realm}".encode(),
            hashlib.sha256,
        )
        lock_seconds = settings.ft_read_timeout_seconds + settings.ft_connect_timeout_seconds + 1
        self._lock_ms = int(lock_seconds * 1000)
        self._release = shared.script(RELEASE)

    def _key(self, scope: str) -> str:
        name = self._name.copy()
        name.update(b"\n" + scope.encode())
        return self.shared.key("ft-token", name.hexdigest()[:32])

    def _read(self, key: str) -> tuple[str | None, float] | None:
        """(the token or None, seconds it has left in Redis); None when Redis is unreachable."""

        def read() -> list[Any]:
            pipe = self.shared.client.pipeline()
            pipe.get(key)
            pipe.pttl(key)
            return pipe.execute()

        answer = self.shared.call(read)
        if answer is None:
            return None
        blob, ttl_ms = answer
        if not blob or ttl_ms <= 0:
            return (None, 0.0)
        try:
            value = self._aead.decrypt(blob[:12], blob[12:], key.encode()).decode()
        except (InvalidTag, ValueError):
            return (None, 0.0)  # not ours (another key): fetched again and overwritten
        return (value, ttl_ms / 1000)

    def _write(self, key: str, value: str, expires_in: float) -> None:
        ttl = expires_in - TOKEN_LEEWAY_SECONDS
        if ttl <= 0:
            return
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, value.encode(), key.encode())
        self.shared.call(lambda: self.shared.client.set(key, blob, px=int(ttl * 1000)))

    def _lock(self, lock_key: str, mine: str) -> bool | None:
        """True if this process now fetches the token, False if another does, None if Redis is unreachable."""
        taken = self.shared.call(lambda: self.shared.client.set(lock_key, mine, nx=True, px=self._lock_ms))
        return None if taken is None and not self.shared.available else bool(taken)

    def get(
        self,
        scope: str,
        rejected: str | None,
        fetch: Callable[[], tuple[str, float]],
        remaining: Callable[[], float | None],
        sleep: Callable[[float], None],
    ) -> tuple[str, float]:
        """(token, seconds it is valid for): the one in Redis unless it is `rejected` (France Travail answered
        it 401), else fetched by this process (`fetch`) or by another one meanwhile. `remaining` raises when
        the caller's deadline passed (while waiting for another process's fetch)."""
        key = self._key(scope)
        lock_key = key + ":fetching"
        while True:
            found = self._read(key)
            if found is None:
                return fetch()  # Redis unreachable: on our own
            value, left = found
            if value is not None and value != rejected:
                return value, left + TOKEN_LEEWAY_SECONDS
            mine = os.urandom(8).hex()
            locked = self._lock(lock_key, mine)
            if locked is None:
                return fetch()
            if locked:
                try:
                    value, expires_in = fetch()
                    self._write(key, value, expires_in)
                    return value, expires_in
                finally:
                    self.shared.run(self._release, [lock_key], [mine])
            left_for_us = remaining()
            sleep(WAIT_STEP_SECONDS if left_for_us is None else min(WAIT_STEP_SECONDS, left_for_us))
