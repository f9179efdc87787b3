"""Retention (issue #14, `passerelle purge`): what the service no longer needs goes, on a schedule, counted
and audited, never shown.

- persons whose right closed more than `person_retention_months` ago (their latest fact says so: absent from
  the CAF/MSA files, état 5/6, a closure date or a death), with everything held about them: the tables have
  no cascades, so each goes explicitly (`PERSON_TABLES`); their audit events stay (our ids only);
- France Travail jetons past their expiry (the identity stays: found, unknown...), call traces and sync
  items older than `ft_call_retention_days`;
- the raw bodies of webhook deliveries older than `webhook_body_retention_days` (what was applied stays), and
  the events kept aside during a flux file resolved before then (the event applied stays);
- weekly export files whose links have all expired or been revoked (the file, its copy in the push
  directory; the row and its download log stay, with their hashes and counts);
- quarantined flux files older than `quarantine_retention_days`;
- audit events older than `audit_retention_days`, from the start of the chain only (the chain's base
  moves to the last one purged, so `audit verify` still checks the rest).

Persons go by batches of `BATCH`, each in its own transaction: an interrupted purge resumes where it
stopped, and ingestions and requests go on meanwhile. `dry_run` counts without changing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Table, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.audit.chain import AUDIT_PURGE, action_row, lock_chain, record_action_now, seal
from app.audit.checkpoint import keep_purged_leaves
from app.audit.proof import insert_events
from app.clock import today
from app.db import claim_write, one_of
from app.models import (
    AccessRecord,
    AuditChain,
    EntryEpisode,
    EpisodeQueue,
    Export,
    ExportLink,
    FluxObservation,
    FtCall,
    FtIdentity,
    FtOutboxItem,
    FtReturnRow,
    FtSnapshot,
    FtSyncItem,
    FtSyncRun,
    InstructionRecord,
    OrientationEvent,
    PendingEvent,
    Person,
    PersonKey,
    PersonState,
    QueuedEvent,
    QueuedEventOutcome,
    WebhookDelivery,
    WebhookItem,
)
from app.models.base import utcnow
from app.persons.states import latest_states
from app.rules.config import DROIT_CLOS
from app.rules.episodes import add_months
from app.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 500
PURGED_BODY = ""  # a webhook body once purged (the column is not nullable: the delivery row stays)
# Every table that holds rows about a person, children first (orientation events refer to each other).
PERSON_TABLES: tuple[Any, ...] = (
    EntryEpisode,
    OrientationEvent,
    EpisodeQueue,
    FluxObservation,
    FtCall,
    FtIdentity,
    FtOutboxItem,
    FtReturnRow,
    FtSnapshot,
    FtSyncItem,
    InstructionRecord,
    PendingEvent,
    WebhookItem,
    PersonKey,
    PersonState,
    QueuedEventOutcome,  # what became of an event kept aside during a file (its error body)
    QueuedEvent,  # the event kept aside itself (its body, its agent), in the audit journal on SQLite
)


@dataclass
class PurgeReport:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, str] = field(default_factory=dict)
    audit_base: int | None = None  # where the audit chain now starts, when this purge moved it
    by: str = "job:purge"  # who runs it: each step's deletions are audited under this name

    def add(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + int(n)


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def closed_persons(conn: Connection, before: date) -> list[int]:
    """Persons whose latest fact closes their right and is dated before `before`."""
    ps = _table(PersonState).c
    latest = latest_states((ps.person_id, ps.received_on, ps.present, ps.etat, ps.closure_date))
    closed = or_(latest.c.present.is_(False), latest.c.etat.in_(DROIT_CLOS), latest.c.closure_date.is_not(None))
    rows = conn.execute(
        select(latest.c.person_id).where(latest.c.received_on < before, closed).order_by(latest.c.person_id)
    )
    return [int(r[0]) for r in rows]


def _apply(conn: Connection, report: PurgeReport, what: str, statement: Any, count: Any) -> None:
    """Count (`dry_run`) or run `statement`; add how many rows it concerns to the report."""
    if report.dry_run:
        report.add(what, conn.execute(count).scalar() or 0)
    else:
        report.add(what, conn.execute(statement).rowcount or 0)


@contextmanager
def _step(engine: Engine, report: PurgeReport) -> Iterator[Connection]:
    """One transaction of the purge. What it deleted is audited in it (`purge.step`, the counts of this
    transaction): a purge killed midway leaves every deletion it committed audited (issue #24 item 1), the
    final `purge` event summing them up when it ends."""
    before = dict(report.counts)
    with engine.begin() as conn:
        if not report.dry_run:
            claim_write(conn)
        yield conn
        done = {what: n - before.get(what, 0) for what, n in report.counts.items() if n != before.get(what, 0)}
        if done and not report.dry_run:
            insert_events(conn, [action_row(report.by, "purge.step", None, detail=done)])


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def purge_persons(engine: Engine, report: PurgeReport, before: date, progress: Callable[[int], None] | None) -> None:
    with engine.connect() as conn:
        ids = closed_persons(conn, before)
    report.add("persons", 0)
    for chunk in _chunks(ids, BATCH):
        with _step(engine, report) as conn:
            for model in PERSON_TABLES:
                table = _table(model)
                where = one_of(conn, table.c.person_id, chunk)
                _apply(conn, report, table.name, delete(table).where(where),
                       select(func.count()).select_from(table).where(where))  # fmt: skip
            persons = _table(Person)
            where = one_of(conn, persons.c.id, chunk)
            _apply(conn, report, "persons", delete(persons).where(where),
                   select(func.count()).select_from(persons).where(where))  # fmt: skip
        if progress:
            progress(len(chunk))


def purge_france_travail(engine: Engine, report: PurgeReport, now: datetime, traces_before: datetime) -> None:
    ids, calls, items, runs = (_table(m) for m in (FtIdentity, FtCall, FtSyncItem, FtSyncRun))
    with _step(engine, report) as conn:
        expired = and_(ids.c.jeton_encrypted.is_not(None), ids.c.jeton_expires_at < now)
        _apply(conn, report, "ft_jetons_expired", update(ids).where(expired).values(jeton_encrypted=None),
               select(func.count()).select_from(ids).where(expired))  # fmt: skip
        old_calls = calls.c.at < traces_before
        _apply(conn, report, "ft_calls_old", delete(calls).where(old_calls),
               select(func.count()).select_from(calls).where(old_calls))  # fmt: skip
        old_runs = select(runs.c.id).where(runs.c.status != "running", runs.c.started_at < traces_before)
        _apply(conn, report, "ft_sync_items_old", delete(items).where(items.c.run_id.in_(old_runs)),
               select(func.count()).select_from(items).where(items.c.run_id.in_(old_runs)))  # fmt: skip
        old = and_(runs.c.status != "running", runs.c.started_at < traces_before)
        _apply(conn, report, "ft_sync_runs_old", delete(runs).where(old),
               select(func.count()).select_from(runs).where(old))  # fmt: skip


def purge_webhook_bodies(engine: Engine, report: PurgeReport, before: datetime) -> None:
    d = _table(WebhookDelivery)
    old = and_(d.c.received_at < before, d.c.body_encrypted != PURGED_BODY)
    with _step(engine, report) as conn:
        _apply(conn, report, "webhook_bodies", update(d).where(old).values(body_encrypted=PURGED_BODY),
               select(func.count()).select_from(d).where(old))  # fmt: skip


def purge_kept_events(engine: Engine, report: PurgeReport, before: datetime) -> None:
    """Events kept aside during a flux file (app.orientation.aside), applied or refused before `before`: the
    event itself is in `orientation_events` (or was refused), the kept copy (its body, its agent) and its
    outcome are raw input like a webhook body. The kept event goes first: an outcome without its event is
    inert, while an event without its outcome would be applied again."""
    q, o = _table(QueuedEvent), _table(QueuedEventOutcome)
    resolved = select(o.c.queued_id).where(o.c.resolved_at < before)
    old = and_(q.c.status == "done", q.c.id.in_(resolved))
    orphan = and_(o.c.resolved_at < before, ~select(q.c.id).where(q.c.id == o.c.queued_id).exists())
    with _step(engine, report) as conn:
        _apply(conn, report, "queued_events", delete(q).where(old), select(func.count()).select_from(q).where(old))
        if report.dry_run:  # the outcomes of the events the step above would delete, and any orphan
            count = select(func.count()).select_from(o).where(o.c.resolved_at < before)
            report.add("queued_event_outcomes", conn.execute(count).scalar() or 0)
        else:
            report.add("queued_event_outcomes", conn.execute(delete(o).where(orphan)).rowcount or 0)


def purge_export_files(engine: Engine, settings: Settings, report: PurgeReport, now: datetime) -> None:
    """Export files none of whose links can still serve them (all expired or revoked), built before the
    links' lifetime: the encrypted file and its copy in the push directory go; the row says `purged`."""
    e, link = _table(Export), _table(ExportLink)
    live = select(link.c.id).where(link.c.export_id == e.c.id, link.c.revoked_at.is_(None), link.c.expires_at >= now)
    built_before = now - timedelta(days=settings.export_link_days)
    with _step(engine, report) as conn:
        rows = conn.execute(
            select(e.c.id, e.c.path, e.c.filename).where(e.c.path != "", e.c.built_at < built_before, ~live.exists())
        ).all()
        report.add("export_files", len(rows))
        if report.dry_run or not rows:
            return
        conn.execute(update(e).where(e.c.id.in_([r.id for r in rows])).values(path=""))
    for row in rows:  # after the commit: a file is never gone while its row still points at it
        Path(row.path).unlink(missing_ok=True)
        if settings.export_push_dir is not None:
            for copy in Path(settings.export_push_dir).glob(f"*{row.filename}"):
                copy.unlink(missing_ok=True)
                report.add("export_push_copies", 1)


def purge_quarantine(engine: Engine, settings: Settings, report: PurgeReport, now_ts: float) -> None:
    """Quarantined files past their retention: their deletion audited before it is done (files have no
    transaction to share with their event)."""
    folder = settings.data_dir / "quarantine"
    report.add("quarantine_files", 0)
    if not folder.is_dir():
        return
    limit = now_ts - settings.quarantine_retention_days * 86400
    old = [path for path in folder.iterdir() if path.is_file() and path.stat().st_mtime < limit]
    report.add("quarantine_files", len(old))
    if report.dry_run or not old:
        return
    with engine.begin() as conn:
        insert_events(conn, [action_row(report.by, "purge.step", None, detail={"quarantine_files": len(old)})])
    for path in old:
        path.unlink(missing_ok=True)


def purge_audit(
    engine: Engine, settings: Settings, report: PurgeReport, before: datetime, by: str = "job:purge"
) -> None:
    """The oldest sealed events, up to the first one that is recent: the chain's base moves past them, and
    an `audit.purge` event written in the same transaction names the new base and the youngest event
    purged (`audit verify` refuses a base that no such event names)."""

    a = _table(AccessRecord)
    if not report.dry_run:
        seal(engine, settings)

    with Session(engine) as session, session.begin():
        chain = session.get(AuditChain, 1) if report.dry_run else lock_chain(session)
        base = chain.base_seq if chain else 0
        first_recent = session.scalar(select(func.min(a.c.seq)).where(a.c.seq > base, a.c.at >= before))
        last_sealed = session.scalar(select(func.max(a.c.seq))) or base
        upto = (first_recent - 1) if first_recent is not None else last_sealed
        if upto <= base:
            report.add("audit_events", 0)
            return
        if report.dry_run:
            report.add("audit_events", session.scalar(select(func.count()).where(a.c.seq > base, a.c.seq <= upto)) or 0)
            return
        mac = session.scalar(select(a.c.mac).where(a.c.seq == upto))
        youngest = session.scalar(select(func.max(a.c.at)).where(a.c.seq > base, a.c.seq <= upto))
        keep_purged_leaves(session, base, upto)  # the signed checkpoints still verify (app.audit.checkpoint)
        done = session.execute(delete(a).where(a.c.seq <= upto))
        session.execute(update(AuditChain).where(AuditChain.id == 1).values(base_seq=upto, base_mac=mac))
        purged: int = done.rowcount or 0  # type: ignore[attr-defined]
        moved = {"base_seq": upto, "base_mac": mac, "events": purged, "retention_days": settings.audit_retention_days,
                 "youngest_at": youngest.isoformat() if youngest else None}  # fmt: skip
        insert_events(session, [action_row(by, AUDIT_PURGE, None, detail=moved)])
        report.add("audit_events", purged)
        report.audit_base = upto


def purge(
    engine: Engine,
    settings: Settings,
    *,
    dry_run: bool = False,
    by: str = "job:purge",
    progress: Callable[[int], None] | None = None,
) -> PurgeReport:
    """Everything past its retention, in order; the report has counts only. Audited (`purge`), with the
    counts, once done (or once it failed)."""
    now = utcnow()
    report = PurgeReport(dry_run=dry_run, by=by)
    persons_before = add_months(today(settings), -settings.person_retention_months)
    traces_before = now - timedelta(days=settings.ft_call_retention_days)
    bodies_before = now - timedelta(days=settings.webhook_body_retention_days)
    audit_before = now - timedelta(days=settings.audit_retention_days)
    report.cutoffs = {
        "persons_closed_before": persons_before.isoformat(),
        "ft_traces_before": traces_before.date().isoformat(),
        "webhook_bodies_before": bodies_before.date().isoformat(),  # and the events kept aside during a file
        "audit_events_before": audit_before.date().isoformat(),
    }
    started = time.monotonic()
    try:
        purge_persons(engine, report, persons_before, progress)
        purge_france_travail(engine, report, now, traces_before)
        purge_webhook_bodies(engine, report, bodies_before)
        purge_kept_events(engine, report, bodies_before)
        purge_export_files(engine, settings, report, now)
        purge_quarantine(engine, settings, report, time.time())
        purge_audit(engine, settings, report, audit_before, by)
    except Exception as exc:
        record_action_now(engine, by, "purge", None, outcome="error",
                          detail={"dry_run": dry_run, "error": type(exc).__name__, **report.counts})  # fmt: skip
        raise
    record_action_now(engine, by, "purge.dry_run" if dry_run else "purge", None, detail=report.counts)
    if not dry_run:  # its events sealed now: the `audit.purge` event a keyless auditor's check needs sealed
        seal(engine, settings)
    log.info("purge_done", dry_run=dry_run, duration_s=round(time.monotonic() - started, 1), **report.counts)
    return report
