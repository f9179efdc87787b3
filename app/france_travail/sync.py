"""`passerelle ft sync`: France Travail for many persons, within the client's concurrency and rate caps,
resumable, one run per département at a time (issue #12).

- **Who**: the persons the platform works on (an entry episode or an orientation event) of a département;
  `only_missing`: those without a definite identity search yet; `stale_days`: those without a successful
  exchange for that long; `limit`: at most that many in the run.
- **Resumable**: a run (`ft_sync_runs`) records each person it settled (`ft_sync_items`) in the same
  transaction as the facts. Killed, then run again with the same options, it continues the same run and
  calls nobody it already settled; a stored jeton still valid is reused (no new search).
- **One at a time**: a département's run holds a lease (holder host:pid, heartbeat). A second run exits
  (`SyncBusy`) saying which process holds it; a lease whose process is gone (same host) or whose heartbeat
  stopped for `LEASE_SECONDS` is taken over.
- **France Travail down**: a person whose calls found France Travail unavailable is retried after the
  circuit's cool-down; when it stays down, the run stops (resumable) instead of marking everyone.
- Writes are batched (about a second of results per transaction) so an ingestion or the API are not held.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, exists, func, select, text, update
from sqlalchemy.orm import Session

from app.clients.france_travail import Agent, FranceTravailClient
from app.db import claim_write, session_scope
from app.errors import Busy
from app.france_travail import orientations as ft_orientations
from app.france_travail import service as ft
from app.kit import jobs as leases
from app.models import EntryEpisode, EpisodeQueue, FtCall, FtIdentity, FtSyncItem, FtSyncRun, OrientationEvent, Person
from app.models.base import utcnow
from app.persons.repository import audit_job_reads
from app.settings import Settings

log = structlog.get_logger(__name__)

LEASE_SECONDS = 300
HEARTBEAT_SECONDS = 20
FLUSH_SECONDS = 1.0
STOP_GRACE_SECONDS = 3.0  # on SIGTERM, how long the persons in flight may take to finish before they are dropped
PAGE = 500
_SYNC_LOCK_NS = 0x46545359  # PostgreSQL advisory lock namespace: claiming a sync run
JOB = "ft sync"


class SyncBusy(Busy):
    """Another run holds the département's lease."""

    code = "ft_sync_busy"


@dataclass(frozen=True)
class SyncOptions:
    departement: str
    only_missing: bool = False
    stale_days: int | None = None
    limit: int | None = None
    budget_seconds: float | None = None  # stop taking persons after this long (resumable); not part of the run's key

    def key(self) -> str:
        return f"{self.departement}|missing={self.only_missing}|stale={self.stale_days}|limit={self.limit}"


@dataclass
class SyncSummary:
    run_id: int = 0
    resumed: bool = False
    selected: int = 0  # persons this invocation had to settle
    settled_before: int = 0  # settled by the interrupted invocation(s) of the same run
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # code -> persons, for the non-definite outcomes
    not_certified_used: int = 0  # found, not certified, used and marked (policy "use")
    calls: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why the run stopped before the end (France Travail down, interrupted)
    # France Travail's own orientations (lectureOrientation, issue #25): what was made of them
    # (app.france_travail.orientations.RESULTS, `none` for a 204), the persons whose read failed by code, and
    # why the API was blocked for the run (its token refused: a scope not provisioned, `invalid_scope`)
    orientations: Counter[str] = field(default_factory=Counter)
    orientation_errors: Counter[str] = field(default_factory=Counter)
    orientation_blocked: str | None = None

    @property
    def definite(self) -> bool:
        return (
            self.stopped is None
            and all(o in ft.DEFINITE for o in self.outcomes)
            and self.orientation_blocked is None
            and not self.orientation_errors
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "resumed": self.resumed,
            "selected": self.selected,
            "settled_before": self.settled_before,
            "outcomes": dict(sorted(self.outcomes.items())),
            "errors_by_code": dict(sorted(self.errors.items())),
            "found_not_certified_used": self.not_certified_used,
            "calls": self.calls,
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
            "orientations_france_travail": dict(sorted(self.orientations.items())),
            "orientation_errors_by_code": dict(sorted(self.orientation_errors.items())),
            "orientation_blocked": self.orientation_blocked,
            "definite": self.definite,
        }


def claim_run(session: Session, options: SyncOptions) -> tuple[FtSyncRun, bool]:
    """Take the département's lease: resume the same options' interrupted run, or start a new one. Raises
    `SyncBusy` while another live process holds it. In the caller's write transaction."""
    claim_write(session)
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        key = int(hashlib.sha256(options.departement.encode()).hexdigest()[:7], 16)
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": _SYNC_LOCK_NS, "k": key})
    now = utcnow()
    open_runs = session.scalars(
        select(FtSyncRun)
        .where(FtSyncRun.departement_code == options.departement, FtSyncRun.status == "running")
        .order_by(FtSyncRun.id)
    ).all()
    resumed = None
    for run in open_runs:
        fresh = now - run.heartbeat_at < timedelta(seconds=LEASE_SECONDS)
        if run.holder and fresh and leases.alive(run.holder):
            raise SyncBusy(
                f"another ft sync of département {options.departement} is running (run {run.id}, process "
                f"{run.holder}, started {run.started_at:%Y-%m-%d %H:%M} UTC, last sign of life "
                f"{int((now - run.heartbeat_at).total_seconds())} s ago); try again when it ends"
            )
        if run.options_key == options.key() and resumed is None:
            resumed = run
        else:
            run.status, run.finished_at = "abandoned", now  # other options: its persons come back in a new run
    if resumed is not None:
        resumed.holder, resumed.heartbeat_at = leases.holder(), now
        return resumed, True
    run = FtSyncRun(
        departement_code=options.departement,
        options={
            "only_missing": options.only_missing,
            "stale_days": options.stale_days,
            "limit": options.limit,
        },
        options_key=options.key(),
        started_at=now,
        heartbeat_at=now,
        holder=leases.holder(),
        status="running",
        total=0,
    )
    session.add(run)
    session.flush()
    return run, False


def select_persons(session: Session, options: SyncOptions, run_id: int) -> list[int]:
    """The persons still to settle in this run, in id order."""
    p = Person
    works_on = exists().where(EntryEpisode.person_id == p.id) | exists().where(OrientationEvent.person_id == p.id)
    query = select(p.id).where(p.departement_code == options.departement, works_on)
    query = query.where(~exists().where(FtSyncItem.run_id == run_id, FtSyncItem.person_id == p.id))
    if options.only_missing:
        query = query.where(
            ~exists().where(
                FtIdentity.person_id == p.id, FtIdentity.outcome.in_(("found", "unknown", "ambiguous", "refused"))
            )
        )
    if options.stale_days is not None:
        since = utcnow() - timedelta(days=options.stale_days)
        query = query.where(~exists().where(FtCall.person_id == p.id, FtCall.outcome == "ok", FtCall.at >= since))
    ids = list(session.scalars(query.order_by(p.id)))
    if options.limit is not None:
        done = session.scalar(select(func.count()).select_from(FtSyncItem).where(FtSyncItem.run_id == run_id))
        ids = ids[: max(0, options.limit - int(done or 0))]
    return ids


class _Runner:
    def __init__(self, engine: Engine, settings: Settings, client: FranceTravailClient, run_id: int) -> None:
        self.engine, self.settings, self.client, self.run_id = engine, settings, client, run_id
        self.agent = Agent.batch("ft-sync")
        self.stop = threading.Event()
        self.down_streak = 0
        self.answered = 0  # persons France Travail answered for (whatever the answer) in this run
        self.unavailable: str | None = None  # why France Travail last did not answer
        self.refused: str | None = None
        self.out_of_time = False  # the run's time budget was spent
        # France Travail refused the Orientation usager API (its token, or 403): not asked again in this run,
        # the statut and diagnostic go on
        self.orientation_blocked: str | None = None
        self.orientations: Counter[str] = Counter()
        self.lock = threading.Lock()

    def kinds(self) -> tuple[str, ...]:
        return ("statut", "diagnostic") if self.orientation_blocked else ("statut", "diagnostic", "orientation")

    def person(self, ref: ft.PersonRef) -> ft.Exchange:
        """One person, retried after the circuit's cool-down while France Travail is unavailable."""
        calls: list[Any] = []
        for _ in range(3):
            # every call of this person, the token's included, ends by its deadline (issue #24 item 5)
            deadline = self.client.clock() + self.settings.ft_sync_person_deadline_seconds
            ex = ft.exchange(
                self.client, self.settings, ref, self.agent, deadline=deadline, kinds=self.kinds(),
                separate=("orientation",),
            )  # fmt: skip
            calls.extend(ex.calls)
            if ex.outcome != "unavailable" or self.stop.is_set():
                break
            pause = max(self.client.circuit.open_until - self.client.clock(), self.settings.ft_backoff_seconds, 0.05)
            leases.pause(self.stop, min(pause, 120))
        ex.calls = calls
        with self.lock:
            self.down_streak = self.down_streak + 1 if ex.outcome == "unavailable" else 0
            if ex.outcome == "unavailable":
                self.unavailable = ex.message
            elif ex.outcome not in ("no_nir", "token_refused"):
                self.answered += 1
            if self.down_streak >= 2 * self.settings.ft_max_concurrency:
                self.stop.set()  # France Travail stays down: stop, resumable
            if ex.outcome == "token_refused":
                self.refused = ex.message
                self.stop.set()  # our client is refused: every person would be, stop at once
            if "orientation" in ex.blocked and not self.orientation_blocked:
                self.orientation_blocked = (
                    f"France Travail refused the Orientation usager API ({ex.kind_errors['orientation']}): "
                    "its orientations were not read; the statut and diagnostic were"
                )
                log.warning("ft_sync_orientation_blocked", code=ex.kind_errors["orientation"])
        return ex

    def flush(self, exchanges: list[ft.Exchange]) -> None:
        with session_scope(self.settings, write=True) as session:
            ft.store(session, self.settings, exchanges, "sync", self.agent)
            counts, changed = ft_orientations.record(
                session,
                self.settings,
                [
                    (ex.person_id, ex.departement, ex.fetched["orientation"])
                    for ex in exchanges
                    if "orientation" in ex.fetched
                ],
            )
            if changed:  # their episodes are refreshed by the caller after the run (`refresh_pending`)
                session.add_all(EpisodeQueue(person_id=pid, departement_code=dep) for pid, dep in changed)
            with self.lock:
                self.orientations.update(counts)
            settled = [ex for ex in exchanges if ex.outcome not in ("unavailable", "token_refused")]
            if settled:
                session.add_all(
                    FtSyncItem(run_id=self.run_id, person_id=ex.person_id, outcome=ex.outcome, code=ex.code)
                    for ex in settled
                )
            audit_job_reads(session, JOB, "ft.sync", [(ex.person_id, ex.departement) for ex in exchanges])
            session.execute(update(FtSyncRun).where(FtSyncRun.id == self.run_id).values(heartbeat_at=utcnow()))

    def heartbeat(self) -> None:
        with session_scope(self.settings, write=True) as session:
            session.execute(update(FtSyncRun).where(FtSyncRun.id == self.run_id).values(heartbeat_at=utcnow()))


def _refs(engine: Engine, settings: Settings, ids: list[int]) -> Iterator[ft.PersonRef]:
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        with engine.connect() as conn:
            refs = ft.load_refs(conn, settings, page)
        for pid in page:
            if pid in refs:
                yield refs[pid]


def run_sync(
    engine: Engine,
    settings: Settings,
    client: FranceTravailClient,
    options: SyncOptions,
    *,
    on_start: Callable[[SyncSummary], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SyncSummary:
    """Sync the selected persons; returns the summary. `on_progress(n)`: n more persons settled. France
    Travail's orientations recorded put their persons in `episode_queue`: the caller refreshes their episodes
    (`app.orientation.episodes.refresh_pending`, as after an ingestion)."""
    began = time.monotonic()
    summary = SyncSummary()
    run_id, ids = _open_run(settings, options, summary)
    if on_start:
        on_start(summary)
    runner = _Runner(engine, settings, client, run_id)
    batch = _Batch(runner, summary, on_progress)
    budget_end = None if options.budget_seconds is None else began + options.budget_seconds
    interrupted = _exchange_all(runner, batch, _refs(engine, settings, ids), budget_end)
    batch.flush()
    summary.stopped = _why_stopped(runner, interrupted)
    summary.orientations, summary.orientation_blocked = runner.orientations, runner.orientation_blocked
    _close_run(settings, run_id, summary.stopped)
    summary.seconds = time.monotonic() - began
    log.info("ft_sync_done", **summary.as_dict())
    return summary


def _open_run(settings: Settings, options: SyncOptions, summary: SyncSummary) -> tuple[int, list[int]]:
    """Claim (or resume) the département's run, select the persons still to settle, record the total."""
    with session_scope(settings, write=True) as session:
        run, summary.resumed = claim_run(session, options)
        summary.run_id = run.id
    with session_scope(settings) as session:
        ids = select_persons(session, options, run.id)
        summary.settled_before = int(
            session.scalar(select(func.count()).select_from(FtSyncItem).where(FtSyncItem.run_id == run.id)) or 0
        )
    summary.selected = len(ids)
    with session_scope(settings, write=True) as session:
        session.execute(update(FtSyncRun).where(FtSyncRun.id == run.id).values(total=summary.settled_before + len(ids)))
    return run.id, ids


class _Batch:
    """The exchanges done and not yet written: written about every `FLUSH_SECONDS` (or `PAGE` of them),
    the run's heartbeat beaten in between."""

    def __init__(self, runner: _Runner, summary: SyncSummary, on_progress: Callable[[int], None] | None) -> None:
        self.runner, self.summary, self.on_progress = runner, summary, on_progress
        self.exchanges: list[ft.Exchange] = []
        self.last_flush = self.last_beat = time.monotonic()

    def add(self, ex: ft.Exchange) -> None:
        self.exchanges.append(ex)
        _count(self.summary, ex, self.runner.settings)

    def flush_or_beat(self) -> None:
        now = time.monotonic()
        if self.exchanges and (now - self.last_flush >= FLUSH_SECONDS or len(self.exchanges) >= PAGE):
            self.flush()
            self.last_flush = self.last_beat = now
        elif now - self.last_beat >= HEARTBEAT_SECONDS:
            self.runner.heartbeat()
            self.last_beat = now

    def flush(self) -> None:
        if not self.exchanges:
            return
        self.runner.flush(self.exchanges)
        if self.on_progress:
            self.on_progress(sum(ex.outcome != "unavailable" for ex in self.exchanges))
        self.exchanges = []


def _exchange_all(
    runner: _Runner, batch: _Batch, refs: Iterator[ft.PersonRef], budget_end: float | None = None
) -> bool:
    """Exchange with France Travail for every person of `refs` (at most twice the concurrency in flight),
    until done, stopped or past `budget_end` (no new person taken; those in flight finish); True when
    interrupted (Ctrl-C, SIGTERM): the persons in flight get `STOP_GRACE_SECONDS` to finish, what finished is
    kept in `batch`, the others are dropped (a later run settles them: resumable)."""
    window = 2 * runner.settings.ft_max_concurrency
    pool = ThreadPoolExecutor(max_workers=runner.settings.ft_max_concurrency, thread_name_prefix="ft-sync")
    running: set[Future[ft.Exchange]] = set()
    try:
        exhausted = False
        while running or not exhausted:
            if budget_end is not None and time.monotonic() >= budget_end and not runner.stop.is_set():
                runner.out_of_time = True
                runner.stop.set()
            while not exhausted and not runner.stop.is_set() and len(running) < window:
                ref = next(refs, None)
                if ref is None:
                    exhausted = True
                else:
                    running.add(pool.submit(runner.person, ref))
            if runner.stop.is_set():
                exhausted = True
            if not running:
                break
            done, running = wait(running, timeout=FLUSH_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                batch.add(future.result())
            batch.flush_or_beat()
    except KeyboardInterrupt:
        runner.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)  # never wait here for a partner that does not answer
        done, _late = wait(running, timeout=STOP_GRACE_SECONDS)
        for future in done:
            if not future.cancelled() and future.exception() is None:
                batch.add(future.result())
        return True
    pool.shutdown(wait=True)
    return False


def stragglers() -> int:
    """Threads of an interrupted run still waiting on France Travail (the command exits without them)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("ft-sync") and t.is_alive())


def _why_stopped(runner: _Runner, interrupted: bool) -> str | None:
    """Why the run stopped before the end (None: it did not)."""
    if interrupted:
        return "interrupted"
    if runner.refused:
        return f"token_refused: {runner.refused}"
    if runner.out_of_time:
        return "budget"
    if runner.stop.is_set() or (runner.unavailable and not runner.answered):
        # stopped by a streak of failures, or (a short run, `--limit 1` the documented configuration check)
        # ended without France Travail ever answering: the environment, not the persons
        return f"france_travail_unavailable: {runner.unavailable or 'no answer'}"
    return None


def _close_run(settings: Settings, run_id: int, stopped: str | None) -> None:
    """Release the run's lease; a run that was not stopped is done."""
    with session_scope(settings, write=True) as session:
        values: dict[str, Any] = {"heartbeat_at": utcnow(), "holder": None}
        if stopped is None:
            values |= {"status": "done", "finished_at": utcnow()}
        session.execute(update(FtSyncRun).where(FtSyncRun.id == run_id).values(**values))


def _count(summary: SyncSummary, ex: ft.Exchange, settings: Settings) -> None:
    summary.outcomes[ex.outcome] += 1
    summary.calls += sum(c.attempts for c in ex.calls)
    if ex.outcome not in ft.DEFINITE:
        summary.errors[ex.code or ex.outcome] += 1
    code = ex.kind_errors.get("orientation")
    if code is not None and "orientation" not in ex.blocked:
        summary.orientation_errors[code] += 1
    if ex.outcome == "found" and ex.certified is False and settings.ft_uncertified == "use":
        summary.not_certified_used += 1
