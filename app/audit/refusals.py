"""Refused and missing accesses (issue #23, CNIL délibération 2021-122: access attempts are logged): a 401, a
403, a 404 for a person (or any resource) the caller may not read or that does not exist, a 429, a wrong
download link, a wrong webhook signature.

Each one is an attempt, not a read: counted in memory, then written as ONE audit event per caller (or, for
an anonymous one, per source address), action, endpoint, outcome and minute, with the count in `detail`
(`{"count": n, "per": "minute", "status": 401, "reason": ...}`) and `at` the minute's start. Never a body,
never the credential presented: a flood of forged links writes one event a minute per source address, not
one per attempt (the audit journal cannot be deleted from for months).

The counts are written when their minute has ended (a thread of the server, `RefusalLog.start`) and, the
current minute's too, when the server stops. A crash loses the counts not yet written: at most the last
minute's (and the minute before, if the database was unreachable then: the counts are kept and written at
the next round). Each worker process counts its own: with N workers, up to N events a minute for one
source."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Engine

from app.audit.chain import ALL_DEPARTEMENTS, action_row
from app.audit.proof import insert_events
from app.kit.jobs import pause
from app.models.base import utcnow

log = structlog.get_logger(__name__)

ANONYMOUS = "anonymous"  # a caller without a valid credential: counted per source address
OTHERS = "others"  # beyond `capacity` distinct keys in a minute, counted together


class _Key(NamedTuple):
    minute: datetime
    principal_id: str
    agent: str | None
    departement: str
    action: str
    endpoint: str
    outcome: str
    source_address: str | None
    status: int | None
    reason: str | None


@dataclass
class _Count:
    n: int = 0
    request_id: str | None = None


class RefusalLog:
    """The refusals counted in this process, by key and minute, until written (`flush`)."""

    def __init__(self, engine: Engine, capacity: int = 10_000) -> None:
        self.engine = engine
        self.capacity = capacity
        self._counts: dict[_Key, _Count] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        principal_id: str,
        action: str,
        departement: str | None,
        outcome: str,
        *,
        endpoint: str,
        source_address: str | None,
        status: int | None = None,
        reason: str | None = None,
        agent: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Count one refused (or missing) access. Never raises, never writes: `flush` does."""
        now = utcnow()
        key = _Key(now.replace(second=0, microsecond=0), principal_id[:120], agent, departement or ALL_DEPARTEMENTS,
                   action, endpoint[:200], outcome, source_address, status, reason)  # fmt: skip
        with self._lock:
            self._merge(key, 1, request_id)

    def _merge(self, key: _Key, n: int, request_id: str | None) -> None:
        """Under the lock: `n` more for `key`; beyond `capacity` keys, a new one is counted with the others
        of its minute, action and outcome (a flood of distinct addresses costs one row, not one per address)."""
        count = self._counts.get(key)
        if count is None and len(self._counts) >= self.capacity:
            key = key._replace(principal_id=OTHERS, agent=None, endpoint="*", source_address=None, reason=None)
            count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = _Count()
        count.n += n
        count.request_id = request_id or count.request_id

    def pending(self) -> int:
        with self._lock:
            return sum(c.n for c in self._counts.values())

    def flush(self, everything: bool = False) -> int:
        """Write the counts of the minutes that ended (`everything`: the current one's too), one event per
        key; returns how many events were written. Counts that could not be written are kept for the next
        flush."""
        current = utcnow().replace(second=0, microsecond=0)
        with self._lock:
            taken = {k: c for k, c in self._counts.items() if everything or k.minute < current}
            for key in taken:
                del self._counts[key]
        if not taken:
            return 0
        rows = [self._row(key, count) for key, count in sorted(taken.items(), key=lambda kc: kc[0].minute)]
        try:
            with self.engine.begin() as conn:
                insert_events(conn, rows)  # each with its proof (app.audit.proof)
        except Exception as exc:  # the database is gone: kept for the next round (bounded by `capacity`)
            log.error("audit_refusals_not_written", events=len(rows), error_type=type(exc).__name__)
            with self._lock:
                for key, count in taken.items():
                    self._merge(key, count.n, count.request_id)
            return 0
        return len(rows)

    @staticmethod
    def _row(key: _Key, count: _Count) -> dict[str, Any]:
        detail: dict[str, Any] = {"count": count.n, "per": "minute"}
        if key.status is not None:
            detail["status"] = key.status
        if key.reason:
            detail["reason"] = key.reason
        row = action_row(
            key.principal_id,
            key.action,
            key.departement,
            outcome=key.outcome,
            detail=detail,
            endpoint=key.endpoint,
            agent=key.agent,
            request_id=count.request_id or "-",  # the last attempt's (the logs have every one)
            source_address=key.source_address,
        )
        row["at"] = key.minute
        return row

    # -- the server's thread: each minute's counts written once it has ended ------------------------------

    def start(self) -> None:
        """Start the thread (again, after a `stop`: an application may be served more than once)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="audit-refusals", daemon=True)
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while True:
            now = utcnow()
            next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            if pause(stop, (next_minute - now).total_seconds() + 1.0):
                return
            try:
                self.flush()
            except Exception as exc:  # pragma: no cover - flush keeps what it could not write
                log.error("audit_refusals_flush_failed", error_type=type(exc).__name__)

    def stop(self) -> None:
        """Stop the thread and write everything counted, the current minute's too."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush(everything=True)
